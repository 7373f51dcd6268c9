"""Dashboard startup: time from process start to the first rendered frame, and RSS at that moment.

Our dashboard (``pocketops --no-worker`` on a seeded demo database in a temp dir, exactly what
a user runs) against a minimal Textual app (a Static and a Footer), each in fresh subprocesses
on a real pseudo-terminal, alternating, medians over the repeats. Also the dashboard app
alone (``tui.app.run_dashboard``, without the CLI's store setup) to show where time goes.

    python benchmarks/dashboard_startup.py [--repeats 7]

Prints the medians, then ``time ratio: X`` and ``rss ratio: Y`` (dashboard / baseline).
"""
from __future__ import annotations

import argparse
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


def baseline_app() -> int:
    """The yardstick: the smallest useful Textual app, with the same first-frame probe."""
    from textual.app import App
    from textual.widgets import Footer, Static

    class Minimal(App):
        def compose(self):
            yield Static("hello from a minimal Textual app")
            yield Footer()

        def on_mount(self):
            self.call_after_refresh(_report_first_frame, self)

    Minimal().run()
    return 0


def _report_first_frame(app) -> None:
    """The same probe as ``tui.app.report_first_frame``, copied so the baseline imports nothing of ours."""
    import resource

    elapsed = time.time() - float(os.environ["POCKETOPS_STARTUP_T0"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/self/status") as status:
        rss_mb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
    with open(os.environ["POCKETOPS_STARTUP_PROBE"], "a") as out:
        out.write(f"{elapsed:.4f} {rss_mb:.1f} {usage.ru_utime + usage.ru_stime:.4f}\n")
    app.exit()


def app_only(db: str) -> int:
    from tui.app import run_dashboard

    return run_dashboard(db)


COMMANDS = {
    "baseline": lambda db: [sys.executable, __file__, "--child", "baseline"],
    "dashboard": lambda db: [sys.executable, "-m", "tui", "--db", db, "--no-worker"],
    "app-only": lambda db: [sys.executable, __file__, "--child", "app-only", "--db", db],
}


def measure(kind: str, db: str, probe: Path) -> tuple[float, float, float]:
    """Start ``kind`` in a fresh process on a 120×40 pty; (seconds to first frame, RSS MB, CPU seconds)."""
    probe.unlink(missing_ok=True)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    env = {**os.environ, "POCKETOPS_STARTUP_PROBE": str(probe), "TERM": "xterm-256color",
           "POCKETOPS_HOME": str(probe.parent), "PYTHONPATH": str(ROOT)}
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", choices=("baseline", "app-only"), help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "baseline":
        return baseline_app()
    if args.child == "app-only":
        return app_only(args.db)

    sys.path.insert(0, str(ROOT / "scripts"))
    from demo_db import build

    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "pocketops.db")
        build(db)
        probe = Path(tmp) / "probe.txt"
        results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in COMMANDS}
        measure("dashboard", db, probe)  # warm the OS file cache once; not counted
        for _ in range(args.repeats):
            for kind in COMMANDS:  # alternate, so drift in machine load hits all alike
                results[kind].append(measure(kind, db, probe))
    med = {k: tuple(statistics.median(run[i] for run in v) for i in range(3)) for k, v in results.items()}
    print(f"first frame at {COLS}x{ROWS}, median of {args.repeats} fresh processes each (alternating); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores:")
    for kind, (t, rss, cpu) in med.items():
        spread = ", ".join(f"{run[0]:.2f}" for run in results[kind])
        print(f"  {kind:<10} {t * 1000:6.0f} ms wall  {cpu * 1000:6.0f} ms CPU  {rss:6.1f} MB RSS   (wall runs: {spread} s)")
    # CPU time is the steadier figure on a busy machine; wall time is what the user waits.
    print(f"app-only/baseline: time {med['app-only'][0] / med['baseline'][0]:.2f}, cpu {med['app-only'][2] / med['baseline'][2]:.2f}, "
          f"rss {med['app-only'][1] / med['baseline'][1]:.2f}")
    print(f"cpu ratio: {med['dashboard'][2] / med['baseline'][2]:.2f}")
    print(f"time ratio: {med['dashboard'][0] / med['baseline'][0]:.2f}")
    print(f"rss ratio: {med['dashboard'][1] / med['baseline'][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
