"""Scale: the dashboard and the CLI on a store that has grown for a year, next to a small store.

The large store (``scripts/big_store.py``: 1,000 runs, 2,000,000 metric points, 200 variants,
100 deployments, 10,000 events) and a small one of the same shape (40 runs, a screenful, with
as many points each, so the table and the selected run's curve draw the same) are measured side
by side, alternating:

* time and RSS to the first frame with data (the runs table filled, the selected run's curve
  drawn), fresh processes on a 120x40 pty, as in ``dashboard_startup.py``; targets large/small
  <= 1.2 (time) and <= 1.2 (RSS), medians of the per-pair ratios;
* one poll cycle of each panel (its ``fetch`` on a fresh connection + ``update_view``), in the
  app run headless, median of the cycles; target <= 20 ms on the large store;
* ``pocketops runs list --json`` on the large store, process start to exit; target <= 0.5 s;
* the SQLite file's bytes per metric point;
* drawing a 100,000-point run against a 100-point run (the Training panel's series, then the
  chart's plot at 60x8); target <= 2x.

    python benchmarks/scale.py [--repeats 11] [--short] [--large PATH]

One thread of ours per process (OMP_NUM_THREADS=1); the machine's cores are printed. The last
lines are ``name ratio: X`` figures read by ``benchmarks/check.py``.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

LARGE = {"runs": 1000, "points": 2_000_000, "variants": 200, "deployments": 100, "events": 10_000}
# A screenful of runs (the table at 120x40 shows ~35), each with as many points as a large-store run:
# large and small then differ in what is stored, not in what the first frame draws. (With 4 runs
# the small store's first frame draws 4 table rows instead of ~35, and that, not the store, costs
# the large one ~30% more.)
SMALL = {"runs": 40, "points": 80_000, "variants": 8, "deployments": 4, "events": 400}


def first_frames(dbs: dict[str, str], repeats: int, tmp: Path) -> dict[str, tuple[float, float, float]]:
    """Median (wall s, RSS MB, CPU s) to the first frame with data, per store, alternating fresh processes."""
    from dashboard_startup import measure

    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in dbs}
    for name, db in dbs.items():
        measure("dashboard", db, tmp / "probe.txt")  # warm each file into the OS cache; not counted
    for _ in range(repeats):
        for name, db in dbs.items():
            results[name].append(measure("dashboard", db, tmp / "probe.txt"))
    med = {k: tuple(statistics.median(r[i] for r in v) for i in range(3)) for k, v in results.items()}
    # Medians of the per-pair ratios large/small (back to back, so the machine's load mostly cancels).
    med["pairs"] = tuple(statistics.median(a[i] / b[i] for a, b in zip(results["large"], results["small"])) for i in range(3))
    return med


async def _poll_cycles(db_path: str, cycles: int) -> dict[str, tuple[float, float]]:
    import store
    from tui.app import PANELS, make_app
    from tui.widgets.polling import PollingPanel

    found: dict[str, tuple[float, float]] = {}
    app = make_app(db_path, sample_device=False, poll_interval=3600)  # our cycles only, no timer polls
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 120
        while not app.ready:
            assert time.monotonic() < deadline, "the store setup did not finish"
            await pilot.pause(0.05)
        for info in PANELS:
            await app.action_show_panel(info.name)
            panel = app.current_panel
            if not isinstance(panel, PollingPanel):
                continue
            while panel.polls < 1:
                assert time.monotonic() < deadline, f"{info.name}: no poll finished"
                await pilot.pause(0.05)
            fetch_s, view_s = [], []
            for _ in range(cycles):
                t0 = time.perf_counter()
                db = store.connect(db_path, migrate=False)  # as each poll thread does
                data = panel.fetch(db, panel.poll_args())
                db.close()
                t1 = time.perf_counter()
                panel.update_view(data)
                view_s.append(time.perf_counter() - t1)
                fetch_s.append(t1 - t0)
                await pilot.pause()
            found[info.name] = (statistics.median(fetch_s), statistics.median(view_s))
    return found


def poll_cycles(db_path: str, cycles: int) -> dict[str, tuple[float, float]]:
    """Median (fetch s, update_view s) of one poll cycle for each panel on ``db_path``."""
    return asyncio.run(_poll_cycles(db_path, cycles))


def cli_runs_list(db_path: str, repeats: int) -> float:
    """Median seconds of ``pocketops runs list --json`` from process start to exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POCKETOPS_HOME": str(Path(db_path).parent)}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "tui.cli", "--db", db_path, "runs", "list", "--json"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"runs list failed: {proc.stderr.strip()}")
    return statistics.median(times)


def draw_times(repeats: int) -> dict[int, float]:
    """Median seconds to take a run of N points into the panel's series and plot it at 60x8."""
    import math

    from tui.panels.training import RunSeries
    from tui.widgets.chart import plot

    found = {}
    for n in (100, 100_000):
        points = [{"id": i + 1, "kind": "train", "step": i + 1, "epoch": 1, "loss": 2 * math.exp(-i / (n / 4)) + 0.1,
                   "accuracy": 1 - math.exp(-i / (n / 4))} for i in range(n)]
        series = RunSeries(run_id=1)
        for start in range(0, n, 5000):  # as the polls deliver them
            series.add(points[start:start + 5000])
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            plot(series.loss_series(), 60, 8)
            plot(series.accuracy_series(), 60, 8, y_range=(0.0, 1.0))
            times.append(time.perf_counter() - t0)
        found[n] = statistics.median(times)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--short", action="store_true", help="5 repeats (for make bench-check)")
    parser.add_argument("--large", type=Path, help="an existing large store (else one is built, ~30 s)")
    args = parser.parse_args(argv)
    repeats = 5 if args.short else args.repeats
    from big_store import build

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        small = tmp / "small" / "pocketops.db"
        small.parent.mkdir()
        build(small, **SMALL)
        if args.large:
            large = args.large
        else:
            large = tmp / "large" / "pocketops.db"
            large.parent.mkdir()
            made = build(large, **LARGE)
            print(f"built the large store in {made['seconds']} s", flush=True)
        dbs = {"small": str(small), "large": str(large)}
        print(f"{os.cpu_count()} cores, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {repeats} repeats, "
              f"large store: {LARGE}", flush=True)

        frames = first_frames(dbs, repeats, tmp)
        for name in dbs:
            t, rss, cpu = frames[name]
            print(f"first frame with data, {name:<5}: {t * 1000:6.0f} ms wall  {cpu * 1000:6.0f} ms CPU  {rss:6.1f} MB RSS",
                  flush=True)

        cycles = {name: poll_cycles(db, max(repeats, 5)) for name, db in dbs.items()}
        worst = 0.0
        for panel in cycles["large"]:
            (fs, vs), (fl, vl) = cycles["small"][panel], cycles["large"][panel]
            worst = max(worst, fl + vl)
            print(f"poll cycle {panel:<9}: small {1000 * (fs + vs):5.1f} ms, large {1000 * (fl + vl):5.1f} ms "
                  f"(fetch {1000 * fl:.1f} + view {1000 * vl:.1f}); target <= 20 ms", flush=True)

        cli_s = cli_runs_list(str(large), repeats)
        print(f"runs list --json on the large store: {cli_s * 1000:.0f} ms (median of {repeats}); target <= 500 ms")
        size = Path(large).stat().st_size
        print(f"SQLite file: {size / 1e6:.1f} MB for {LARGE['points']:,} points (all tables and indexes): "
              f"{size / LARGE['points']:.0f} bytes per metric point")

    draws = draw_times(max(repeats, 5))
    print(f"draw a run's curves at 60x8: 100 points {draws[100] * 1000:.2f} ms, 100,000 points {draws[100_000] * 1000:.2f} ms")
    print(f"first frame cpu ratio: {frames['pairs'][2]:.2f}")
    print(f"first frame ratio: {frames['pairs'][0]:.2f}")
    print(f"first frame rss ratio: {frames['pairs'][1]:.2f}")
    print(f"worst poll cycle ms: {worst * 1000:.1f}")
    print(f"runs list s: {cli_s:.2f}")
    print(f"draw ratio: {draws[100_000] / draws[100]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
