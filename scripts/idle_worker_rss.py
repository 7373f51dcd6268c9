"""Measure what an idle background worker holds, and that it leaves: the figures in the README.

    python scripts/idle_worker_rss.py [--idle-exit 20] [--epochs 3]

Starts a worker the way the dashboard does (``core.worker.start_background``), with no
dashboard open: its RSS idle before any job, then after one digits/cnn training run (torch
loaded) while it idles, then the seconds until it exits on its own.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb(pid: int, samples: int = 5) -> float:
    """Median resident set size of ``pid`` over a few readings 0.2 s apart."""
    import psutil

    proc = psutil.Process(pid)
    readings = []
    for _ in range(samples):
        readings.append(proc.memory_info().rss / 2**20)
        time.sleep(0.2)
    return statistics.median(readings)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle-exit", type=float, default=20.0)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    import store
    from core.datasets import ensure_builtin
    from core.runs import new_run
    from core.worker import live_workers, start_background
    from store import jobs

    with tempfile.TemporaryDirectory(prefix="pocketops-rss-") as tmp:
        db_path = Path(tmp) / "pocketops.db"
        db = store.connect(db_path)
        ensure_builtin(db, db_path)
        proc = start_background(db_path, idle_exit=args.idle_exit)
        while not live_workers(db):
            time.sleep(0.05)
        before = rss_mb(proc.pid)
        _run_id, job_id = new_run(db, dataset="digits", model="cnn", preset="small", epochs=args.epochs,
                                  pause_on_low_battery=False)
        while jobs.get(db, job_id)["status"] not in jobs.FINAL:
            time.sleep(0.1)
        done_at = time.monotonic()
        status = jobs.get(db, job_id)["status"]
        after = rss_mb(proc.pid)
        try:
            proc.wait(timeout=args.idle_exit + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            print("the worker did not leave", file=sys.stderr)
            return 1
        left = time.monotonic() - done_at
        print(f"idle worker before any job: {before:.0f} MB RSS")
        print(f"idle worker after one digits/cnn small training run ({args.epochs} epochs, {status}): {after:.0f} MB RSS")
        print(f"with --idle-exit {args.idle_exit:g} and no dashboard open it exited {left:.1f} s after the job ended "
              f"(code {proc.returncode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
