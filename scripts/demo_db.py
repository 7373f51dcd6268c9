"""Build a seeded demo database: the digits dataset and a few training runs with real curves.

The curves are replayed from real training runs on digits recorded once with
``python scripts/demo_db.py --record`` (which trains with the real worker, needs torch and
onnx, and writes ``scripts/demo_metrics.json``). The same recording keeps the device load the
worker sampled while it trained (``telemetry``) and the cold start and /health latency of two
real local deployments of the trained cnn (``deploy``). Building the demo needs neither torch
nor a worker:

    python scripts/demo_db.py /tmp/demo/pocketops.db

The last run is left "running" halfway, as a live run looks while the worker trains it. The
database is marked as the demo (``store.demo``): the dashboard shows a "demo" mark on it. A
figure the recording lacks falls back to a typed value, and the mark's note says which.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METRICS_FILE = Path(__file__).with_name("demo_metrics.json")
# (model, preset, epochs) of the recorded runs; the demo shows them in this order.
RECORDED = [("mlp", "small", 10), ("cnn", "tiny", 8), ("cnn", "small", 12)]
DEMO_WORKER = "demo-worker"
# Used only when demo_metrics.json has no recorded telemetry (a recording older than this field).
TYPED_TELEMETRY = {"cpu_percent": 87.0, "ram_used_mb": 2710.0, "ram_total_mb": 5650.0,
                   "battery_percent": 64.0, "charging": 0, "temperature_c": 38.5}


def record(out: Path = METRICS_FILE) -> None:
    """Train each RECORDED config on digits with the real worker and save the metric points."""
    import tempfile

    import store
    from core.datasets import ensure_builtin
    from core.runs import new_run
    from core.worker import Worker
    from store import runs as store_runs

    recorded = []
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "record.db"
        db = store.connect(db_path)
        ensure_builtin(db, db_path)
        for model, preset, epochs in RECORDED:
            run_id, _ = new_run(db, dataset="digits", model=model, preset=preset, epochs=epochs)
            t0 = time.monotonic()
            Worker(db_path).run(once=True)
            run = store_runs.get(db, run_id)
            points = store_runs.metrics_since(db, run_id, 0, limit=100_000)
            t_first = points[0]["ts"] if points else 0.0
            recorded.append({
                "model": model, "preset": preset, "epochs": epochs, "status": run["status"],
                "params": run["params"], "size_bytes": run["size_bytes"], "metrics": run["metrics"],
                "config": run["config"], "epochs_done": run["epochs_done"], "seconds": round(time.monotonic() - t0, 1),
                "points": [{k: p[k] for k in ("kind", "step", "epoch", "loss", "accuracy", "samples_per_s")}
                           | {"t": round(p["ts"] - t_first, 3)} for p in points],
            })
            print(f"{model}/{preset}: {run['status']}, {len(points)} points, {recorded[-1]['seconds']} s, "
                  f"val accuracy {run['metrics'].get('val_accuracy')}", flush=True)
        telemetry = _recorded_telemetry(db)
        deploy = _recorded_deploys(db, db_path, run_id)
    out.write_text(json.dumps({"dataset": "digits", "runs": recorded, "telemetry": telemetry, "deploy": deploy},
                              indent=1) + "\n")


def _recorded_telemetry(db) -> dict | None:
    """The busiest device-load sample the worker recorded while training (None if it took none)."""
    import os
    import platform

    from store import telemetry as store_telemetry

    samples = [s for s in store_telemetry.since(db, 0, limit=100_000) if s.get("cpu_percent") is not None]
    if not samples:
        return None
    busiest = max(samples, key=lambda s: s["cpu_percent"])
    return {**{k: busiest[k] for k in store_telemetry.FIELDS},
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores", "samples": len(samples)}


def _recorded_deploys(db, db_path: Path, run_id: int) -> list[dict]:
    """Export ``run_id`` (fp32) and deploy it locally twice (the second supersedes the first); their figures."""
    from core.export_job import queue_export
    from core.worker import Worker
    from deployers import service
    from store import variants as store_variants

    queue_export(db, run_id, variants=["fp32"])
    Worker(db_path).run(once=True)
    [variant] = store_variants.latest_for_run(db, run_id)
    releases = []
    for _ in range(2):
        row = service.deploy(db, db_path, variant["id"], "local", {"port": 0})
        releases.append({"health_latency_ms": row["health_latency_ms"], "cold_start_ms": row["cold_start_ms"]})
        print(f"local deploy: cold start {row['cold_start_ms']:.0f} ms, /health {row['health_latency_ms']:.1f} ms",
              flush=True)
    service.stop(db, row["id"])
    return releases


def build(db_path: str | Path, *, live_fraction: float = 0.5) -> dict:
    """Create the demo database at ``db_path`` (which must not exist); returns the run ids by role."""
    import store
    from core.datasets import ensure_builtin
    from store import datasets as store_datasets
    from store import jobs, runs as store_runs, telemetry
    from store.db import now, transaction

    db_path = Path(db_path)
    if db_path.exists():
        raise SystemExit(f"{db_path} exists; the demo builder only creates new databases")
    recording = json.loads(METRICS_FILE.read_text())
    recorded = recording["runs"]
    db = store.connect(db_path)
    ensure_builtin(db, db_path)
    digits = store_datasets.by_name(db, "digits")
    t_now = now()
    ids: dict[str, int] = {}
    # done mlp, a cnn/tiny cancelled at epoch 4, done cnn/small, then cnn/small live (running).
    plan = [("done", recorded[0], None), ("cancelled", recorded[1], 4), ("done", recorded[2], None),
            ("running", recorded[2], None)]
    with transaction(db):
        for index, (status, rec, stop_epoch) in enumerate(plan):
            points = rec["points"]
            if status == "cancelled":
                points = [p for p in points if p["epoch"] <= stop_epoch]
            elif status == "running":
                points = points[: int(len(points) * live_fraction)]
            epochs_done = max((p["epoch"] for p in points if p["kind"] == "val"), default=0)
            val = [p for p in points if p["kind"] == "val"]
            best = max(val, key=lambda p: p["accuracy"]) if val else None
            metrics = {"val_accuracy": best["accuracy"], "val_loss": best["loss"], "best_epoch": best["epoch"]} if best else {}
            if status == "done":
                metrics = rec["metrics"]
            start = t_now - 3600 * (len(plan) - index) if status != "running" else t_now - (points[-1]["t"] if points else 0)
            run_id = store_runs.create(db, dataset_id=digits["id"], model=rec["model"], config=rec["config"],
                                       epochs_total=rec["epochs"], params=rec["params"], size_bytes=rec["size_bytes"])
            store_runs.update(db, run_id, created_at=start - 2, started_at=start, status=status, metrics=metrics,
                              epochs_done=epochs_done if status != "done" else rec["epochs_done"],
                              finished_at=None if status == "running" else start + (points[-1]["t"] if points else 0),
                              error="cancelled by the user" if status == "cancelled" else None)
            store_runs.add_metrics(db, [dict({k: v for k, v in p.items() if k != "t"}, run_id=run_id, ts=start + p["t"])
                                        for p in points])
            job_id = jobs.enqueue(db, "train", {"run_id": run_id}, run_id=run_id)
            if status == "running":
                # Held by a demo worker that beat just now; a real worker would take it over when stale.
                jobs.claim(db, DEMO_WORKER, job_id=job_id, stale_after=0)
                last = points[-1]
                jobs.heartbeat(db, job_id, DEMO_WORKER, {"epoch": last["epoch"] - 1, "epochs": rec["epochs"],
                                                          "step": last["step"], "samples_per_s": last["samples_per_s"]})
            else:
                _finish_job(db, job_id, status, t_now)
            ids[f"{status}-{rec['model']}-{rec['preset']}"] = run_id
        # Quantize and Deploy panels: the finished cnn's variants (figures recorded by
        # benchmarks/quantization.py) and a few releases of its int8 variant.
        from demo_deployments import seed as seed_deployments
        from demo_variants import seed as seed_variants

        variant_ids = seed_variants(db, db_path, ids["done-cnn-small"])
        from store import variants as store_variants

        shipped = next((v["id"] for v in map(lambda i: store_variants.get(db, i), variant_ids) if v["name"] == "int8-static"), None)
        deployment_ids = seed_deployments(db, shipped, recording.get("deploy") or None)
        from demo_costs import seed as seed_costs   # the Costs panel's month (typed demo values)
        from demo_alerts import seed as seed_alerts  # Alerts panel: what a monitor pass stored

        seed_costs(db, shipped)
        seed_alerts(db, deployment_ids)
        # The live run's worker: this process stands in for it, so it reads as alive while the
        # screenshot script (which builds the demo in-process) shoots.
        import os
        import socket

        from store import workers

        workers.register(db, DEMO_WORKER, os.getpid(), socket.gethostname())
        workers.beat(db, DEMO_WORKER, ids.get("running-cnn-small") and jobs.latest_for_run(db, ids["running-cnn-small"])["id"])
        sample = recording.get("telemetry")
        telemetry.record(db, DEMO_WORKER, sample or TYPED_TELEMETRY)
        from store import demo

        demo.mark(db, demo_note(recording))
    db.conn.close()
    return ids


def demo_note(recording: dict) -> str:
    """Where the demo's figures come from: recorded by this script or typed demo values."""
    parts = ["curves: recorded training runs on digits", "variants: recorded by benchmarks/quantization.py"]
    sample = recording.get("telemetry")
    parts.append(f"device load: recorded while training ({sample['machine']})" if sample
                 else "device load: typed demo values")
    parts.append("local cold start and health: recorded local deployments" if recording.get("deploy")
                 else "local cold start and health: typed demo values")
    return "; ".join(parts)


def _finish_job(db, job_id: int, status: str, t: float) -> None:
    """Mark a finished demo run's job as its worker would have (claim, then finish)."""
    from store import jobs

    jobs.claim(db, DEMO_WORKER, job_id=job_id)
    jobs.finish(db, job_id, DEMO_WORKER, "done" if status == "done" else "cancelled",
                error="cancelled by the user" if status == "cancelled" else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", nargs="?", help="database file to create")
    parser.add_argument("--record", action="store_true", help="train the recorded configs for real (needs torch)")
    args = parser.parse_args(argv)
    if args.record:
        record()
        return 0
    if not args.db:
        parser.error("give the database file to create (or --record)")
    print(json.dumps(build(args.db)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
