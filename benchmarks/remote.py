"""What does `--on CLUSTER` cost over training here? A 3-epoch digits run, local vs a local Ray head.

Both sides are the same user path: a phone-side worker process is started and registered first,
then a run is queued (``core.runs.new_run``, as `pocketops train` does) and the store is polled
for (a) the run's first metric point — submission to first metric on the phone — and (b) the job's
end — total. "local" trains in that worker; "cluster" submits to a real Ray head on 127.0.0.1
(started here with token auth and 1 CPU, tests/_ray_head.py) and replays the job's log lines.
The cluster figure includes packaging (our code + the dataset's arrays), upload, Ray's
runtime-env setup and the cluster's own worker start (torch import there), which is the
overhead a user waits for. Torch threads: the trainer's default on both sides; the head has
1 CPU. Repeats alternate which side goes first; medians and their ratio are printed.

    python benchmarks/remote.py [--repeats 3] [--epochs 3] [--short]
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import store  # noqa: E402
from core import clusters, runs as core_runs  # noqa: E402
from core.datasets import ensure_builtin  # noqa: E402
from core.worker import alive_workers  # noqa: E402
from store import jobs, runs  # noqa: E402
from tests._ray_head import start_head  # noqa: E402

POLL_S = 0.02


def one(db_path: Path, on: str | None, epochs: int, env: dict) -> tuple[float, float]:
    """(seconds to the first metric in the store, seconds to the job's end) for one queued run."""
    db = store.connect(db_path)
    worker = subprocess.Popen([sys.executable, "-m", "core.worker", "--db", str(db_path)], env=env, cwd=ROOT,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not alive_workers(db_path):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("the phone-side worker did not start")
            time.sleep(POLL_S)
        t0 = time.monotonic()
        run_id, job_id = core_runs.new_run(db, dataset="digits", model="mlp", epochs=epochs, seed=0, on=on)
        first = None
        while True:
            if first is None and runs.count_metrics(db, run_id) > 0:
                first = time.monotonic() - t0
            job = jobs.get(db, job_id)
            if job["status"] in jobs.FINAL:
                break
            if time.monotonic() - t0 > 600:
                raise SystemExit(f"run {run_id} did not end within 600 s")
            time.sleep(POLL_S)
        total = time.monotonic() - t0
        if job["status"] != "done":
            raise SystemExit(f"run {run_id} ({on or 'local'}) {job['status']}: {job['error']}")
        return first, total
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--short", action="store_true", help="one repeat each (the CI's bench-check)")
    args = parser.parse_args()
    repeats = 1 if args.short else args.repeats
    head = start_head()
    print(f"ray head: started in {head.start_s:.1f} s (1 CPU, token auth, 127.0.0.1)", flush=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db_path = Path(tmp) / "phone.db"
            db = store.connect(db_path)
            ensure_builtin(db, db_path)
            clusters.add(db, "bench", head.address, "BENCH_RAY_TOKEN")
            env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_RAY_TOKEN": head.token}
            figures: dict[str, list[tuple[float, float]]] = {"local": [], "cluster": []}
            for i in range(repeats):
                order = ("local", "cluster") if i % 2 == 0 else ("cluster", "local")
                for side in order:
                    first, total = one(db_path, "bench" if side == "cluster" else None, args.epochs, env)
                    figures[side].append((first, total))
                    print(f"repeat {i + 1} {side}: first metric {first:.2f} s, total {total:.2f} s", flush=True)
    finally:
        print(f"ray head: stopped in {head.stop():.1f} s", flush=True)
    med = {side: (statistics.median(f for f, _ in v), statistics.median(t for _, t in v)) for side, v in figures.items()}
    print(f"digits mlp, {args.epochs} epochs, {repeats} repeat(s) each, medians:")
    for side in ("local", "cluster"):
        print(f"{side}_first_metric_s: {med[side][0]:.2f}")
        print(f"{side}_total_s: {med[side][1]:.2f}")
    print(f"overhead_first_metric_s: {med['cluster'][0] - med['local'][0]:.2f}")
    print(f"overhead_total_s: {med['cluster'][1] - med['local'][1]:.2f}")
    print(f"ratio_total: {med['cluster'][1] / med['local'][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
