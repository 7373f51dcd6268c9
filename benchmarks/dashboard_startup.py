"""Dashboard start-up: time from process start to the first frame that shows the user's data.

Our dashboard (``pocketops --no-worker`` with ``POCKETOPS_PANEL=training`` on a seeded demo
store in a temp dir) is timed until the runs table is filled and the selected run's curves are
drawn. The baseline is the honest yardstick for "a dashboard over this store": a minimal
Textual app that opens the same SQLite file with ``sqlite3``, reads the same runs and shows them
in a ``DataTable``. Each runs in fresh subprocesses on a real 120x40 pseudo-terminal,
alternating, medians over the repeats (one thread of ours each; Textual's own threads as-is).
Our packages are byte-compiled once first, as an installed pocketops is (``compile_bytecode``).

    python benchmarks/dashboard_startup.py [--repeats 11] [--short] [--db PATH]

Prints the medians, then ``time ratio: X`` and ``rss ratio: Y`` (dashboard / baseline: the
medians of the per-pair ratios, as in ``train_overhead.py``). Targets: time <= 1.3, rss <= 1.3.
"""
from __future__ import annotations

import argparse
import json
import fcntl
import os
import pty
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLS, ROWS = 120, 40
TIMEOUT_S = 60


def baseline_app(db: str) -> int:
    """The yardstick: a minimal Textual app that reads the same runs with sqlite3 into a DataTable."""
    import sqlite3

    from textual.app import App
    from textual.widgets import DataTable, Footer

    class Minimal(App):
        def compose(self):
            yield DataTable(cursor_type="row")
            yield Footer()

        def on_mount(self):
            conn = sqlite3.connect(db)
            found = conn.execute(RUNS_SQL).fetchall()
            conn.close()
            table = self.query_one(DataTable)
            table.add_columns("#", "Status", "Ep", "Acc", "Run")
            for run_id, status, done, total, metrics, dataset, model in found:
                acc = json.loads(metrics).get("val_accuracy")
                table.add_row(str(run_id), status, f"{done}/{total}", "–" if acc is None else f"{100 * acc:.0f}%",
                              f"{dataset} {model}", key=str(run_id))
            self.call_after_refresh(_report_first_frame, self)

    Minimal().run()
    return 0


# The same rows the Training panel shows (newest 100 runs with their dataset's name).
RUNS_SQL = """SELECT runs.id, runs.status, runs.epochs_done, runs.epochs_total, runs.metrics, datasets.name, runs.model
              FROM runs JOIN datasets ON datasets.id = runs.dataset_id ORDER BY runs.id DESC LIMIT 100"""


def _report_first_frame(app) -> None:
    """The same probe as ``tui.app.report_first_frame``, copied so the baseline imports nothing of ours."""
    import resource

    import psutil

    elapsed = time.time() - float(os.environ["POCKETOPS_STARTUP_T0"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss_mb = psutil.Process().memory_info().rss / 2**20
    with open(os.environ["POCKETOPS_STARTUP_PROBE"], "a") as out:
        out.write(f"{elapsed:.4f} {rss_mb:.1f} {usage.ru_utime + usage.ru_stime:.4f}\n")
    app.exit()


COMMANDS = {
    "baseline": lambda db: [sys.executable, __file__, "--child", "baseline", "--db", db],
    "dashboard": lambda db: [sys.executable, "-m", "tui", "--db", db, "--no-worker"],
}


def measure(kind: str, db: str, probe: Path) -> tuple[float, float, float]:
    """Start ``kind`` in a fresh process on a 120×40 pty; (seconds to first frame, RSS MB, CPU seconds)."""
    probe.unlink(missing_ok=True)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    env = {**os.environ, "POCKETOPS_STARTUP_PROBE": str(probe), "TERM": "xterm-256color",
           "POCKETOPS_HOME": str(probe.parent), "PYTHONPATH": str(ROOT), "POCKETOPS_PANEL": "training",
           "OMP_NUM_THREADS": "1"}
    drained = threading.Thread(target=_drain, args=(master,), daemon=True)
    drained.start()
    env["POCKETOPS_STARTUP_T0"] = repr(time.time())
    proc = subprocess.Popen(COMMANDS[kind](db), cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    try:
        proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit(f"{kind}: no first frame within {TIMEOUT_S} s")
    finally:
        drained.join(timeout=5)
        os.close(master)
    if not probe.exists():
        raise SystemExit(f"{kind}: exited with {proc.returncode} before reporting a first frame")
    elapsed, rss, cpu = probe.read_text().split()
    return float(elapsed), float(rss), float(cpu)


def _drain(fd: int) -> None:
    """Read the child's terminal output so it never blocks on a full pty buffer."""
    while True:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


def compile_bytecode() -> None:
    """Write our packages' bytecode once, as ``pip install`` does for an installed pocketops.

    With ``PYTHONDONTWRITEBYTECODE`` set (this project's CI and dev shells) Python reads
    ``__pycache__`` but never writes it, so every timed dashboard compiled ~20 of our modules
    from source (~20 ms) while Textual, installed, loads bytecode. Nothing else changes.
    """
    import compileall

    for package in ("tui", "core", "store", "deployers"):
        compileall.compile_dir(str(ROOT / package), quiet=2)


def run(db: str, repeats: int, probe: Path) -> tuple[dict[str, tuple[float, float, float]], tuple[float, float, float]]:
    """Alternate baseline and dashboard ``repeats`` times on ``db``.

    Returns the medians (wall s, RSS MB, CPU s) per kind and the medians of the per-pair ratios
    dashboard/baseline (each pair ran back to back, so a change in the machine's load mostly cancels).
    """
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in COMMANDS}
    compile_bytecode()
    measure("dashboard", db, probe)  # warm the OS file cache once; not counted
    for _ in range(repeats):
        for kind in COMMANDS:  # alternate, so drift in machine load hits both alike
            results[kind].append(measure(kind, db, probe))
    med = {k: tuple(statistics.median(run[i] for run in v) for i in range(3)) for k, v in results.items()}
    for kind, (t, rss, cpu) in med.items():
        spread = ", ".join(f"{r[0]:.2f}" for r in results[kind])
        print(f"  {kind:<10} {t * 1000:6.0f} ms wall  {cpu * 1000:6.0f} ms CPU  {rss:6.1f} MB RSS   (wall runs: {spread} s)",
              flush=True)
    pairs = tuple(statistics.median(d[i] / b[i] for d, b in zip(results["dashboard"], results["baseline"])) for i in range(3))
    return med, pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--short", action="store_true", help="5 repeats (for make bench-check)")
    parser.add_argument("--child", choices=("baseline",), help=argparse.SUPPRESS)
    parser.add_argument("--db", help="time on this existing store instead of a fresh demo store")
    args = parser.parse_args(argv)
    if args.child == "baseline":
        return baseline_app(args.db)
    repeats = 5 if args.short else args.repeats

    sys.path.insert(0, str(ROOT / "scripts"))
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db
        if db is None:
            from demo_db import build

            db = str(Path(tmp) / "pocketops.db")
            build(db)
        print(f"first frame with data (runs table filled, selected run's curve drawn) at {COLS}x{ROWS}, "
              f"median of {repeats} fresh processes each (alternating); {os.cpu_count()} cores, OMP_NUM_THREADS=1:")
        med, pairs = run(db, repeats, Path(tmp) / "probe.txt")
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(f"ratios of the medians: time {med['dashboard'][0] / med['baseline'][0]:.2f}, "
          f"cpu {med['dashboard'][2] / med['baseline'][2]:.2f}, rss {med['dashboard'][1] / med['baseline'][1]:.2f}")
    # Medians of the per-pair ratios. CPU time is the steadier figure on a busy machine; wall
    # time is what the user waits.
    print(f"cpu ratio: {pairs[2]:.2f}")
    print(f"time ratio: {pairs[0]:.2f}")
    print(f"rss ratio: {pairs[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
