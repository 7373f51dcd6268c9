"""Build a store that has grown for a year: runs, metric points, variants, deployments, events.

    python scripts/big_store.py /tmp/big/pocketops.db                 # 1,000 runs, 2,000,000 points
    python scripts/big_store.py /tmp/small.db --runs 4 --points 8000  # the same shape, small

Defaults: 1,000 runs (the newest one running), 2,000,000 metric points spread evenly over them,
200 variants (the four builds of 50 finished runs, with the figures recorded in
``scripts/demo_variants.json``), 100 deployments (releases of a few targets, one of each running),
10,000 events and a day of telemetry. Rows only: there are no model files. Building needs no
torch and no worker; it writes through the same tables (and migrations) as pocketops does.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS_FILE = Path(__file__).with_name("demo_variants.json")
EPOCHS = 10


def _points(run_id: int, n: int, t0: float, rng: random.Random):
    """``n`` metric rows of one run: train points every step and one val point per epoch."""
    val_every = max(2, n // EPOCHS)
    step = 0
    for i in range(n):
        epoch = min(EPOCHS, 1 + i * EPOCHS // n)
        progress = i / max(1, n - 1)
        loss = 2.3 * math.exp(-4 * progress) + 0.05 + 0.03 * rng.random()
        acc = min(1.0, 0.1 + 0.88 * (1 - math.exp(-5 * progress)) + 0.01 * rng.random())
        if (i + 1) % val_every == 0:
            yield (run_id, "val", epoch, epoch, loss * 1.1, acc - 0.01, None, t0 + i)
        else:
            step += 1
            yield (run_id, "train", step, epoch, loss, acc, 900.0 + 50 * rng.random(), t0 + i)


def build(db_path: str | Path, *, runs: int = 1000, points: int = 2_000_000, variants: int = 200,
          deployments: int = 100, events: int = 10_000, seed: int = 0) -> dict:
    """Create the store at ``db_path`` (which must not exist); returns what it holds and how long it took."""
    import store
    from store import deployments as store_deployments
    from store import variants as store_variants
    from store.db import dumps, now, transaction

    db_path = Path(db_path)
    if db_path.exists():
        raise SystemExit(f"{db_path} exists; big_store only creates new databases")
    rng = random.Random(seed)
    started = time.perf_counter()
    db = store.connect(db_path)
    t_now = now()
    per_run = points // runs
    with transaction(db):
        db.execute(
            "INSERT INTO datasets (name, kind, source, fingerprint, rows, n_classes, classes, class_counts, input_shape,"
            " artifact_path, created_at) VALUES ('digits', 'builtin', 'core/data/digits.npz', 'big-store', 1797, 10,"
            " ?, ?, '[1, 8, 8]', 'digits.npz', ?)",
            (json.dumps([str(i) for i in range(10)]), json.dumps([180] * 10), t_now - 400 * 86_400))
        models = [("mlp", "small"), ("cnn", "tiny"), ("cnn", "small")]
        for index in range(runs):
            model, preset = models[index % len(models)]
            t0 = t_now - (runs - index) * 30_000  # a run every ~8 hours, for a year
            status = "running" if index == runs - 1 else ("failed" if index % 37 == 5 else "done")
            acc = round(0.9 + 0.09 * rng.random(), 4)
            cur = db.execute(
                """INSERT INTO runs (dataset_id, model, config, status, epochs_done, epochs_total, params, size_bytes,
                   metrics, checkpoint_path, error, created_at, started_at, finished_at)
                   VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (model, dumps({"preset": preset, "epochs": EPOCHS, "batch_size": 64}), status,
                 EPOCHS // 2 if status == "running" else EPOCHS, EPOCHS, 20_000 + index, 80_000 + index,
                 dumps({} if status == "failed" else {"val_accuracy": acc, "val_loss": round(0.05 + 0.1 * rng.random(), 4)}),
                 f"runs/{index + 1}/best.pt", "out of memory" if status == "failed" else None,
                 t0, t0 + 5, None if status == "running" else t0 + per_run))
            run_id = cur.lastrowid
            db.conn.executemany(
                "INSERT INTO metrics (run_id, kind, step, epoch, loss, accuracy, samples_per_s, ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _points(run_id, per_run, t0, rng))
            job_status = {"running": "running", "failed": "failed"}.get(status, "done")
            db.execute(
                """INSERT INTO jobs (kind, payload, status, run_id, attempts, progress, created_at, claimed_at, finished_at)
                   VALUES ('train', ?, ?, ?, 1, ?, ?, ?, ?)""",
                (dumps({"run_id": run_id}), job_status, run_id,
                 dumps({"epoch": EPOCHS // 2, "epochs": EPOCHS}), t0, t0 + 1, None if status == "running" else t0 + per_run))
        recorded = json.loads(VARIANTS_FILE.read_text())["variants"]
        done = [r for (r,) in db.execute("SELECT id FROM runs WHERE status = 'done' ORDER BY id DESC")]
        variant_ids = []
        for index in range(variants):
            template = recorded[index % len(recorded)]
            run_id = done[(index // len(recorded)) % len(done)]
            filename = f"{template['name']}{template.get('suffix', '.onnx')}"   # .pte / .tflite rows keep theirs
            variant_ids.append(store_variants.insert(
                db, name=template["name"], path=f"runs/{run_id}/onnx/{filename}", sha256=template["sha256"],
                size_bytes=template["size_bytes"], run_id=run_id, status="benchmarked", bench=template["bench"],
                meta={"run_id": run_id, "dataset": "digits", "source": "big_store",
                      "runtime": template.get("runtime", "onnxruntime")}))
        targets = [("local", "local"), ("spaces-static", "you/digits"), ("spaces-docker", "you/digits-api"),
                   ("gcp", "pocketops-predict")]
        for index in range(deployments):
            target, name = targets[index % len(targets)]
            last = index >= deployments - len(targets)
            row = store_deployments.create(db, variant_id=variant_ids[index % len(variant_ids)] if variant_ids else None,
                                           target=target, name=name)
            store_deployments.update(db, row["id"], status="running" if last else "superseded",
                                     url=f"http://127.0.0.1:{8700 + index}", health_latency_ms=3.0, cold_start_ms=600.0,
                                     meta={"served": True})
        levels = ("info", "info", "info", "warning", "error")
        db.conn.executemany(
            "INSERT INTO events (ts, level, source, message, run_id, job_id) VALUES (?, ?, ?, ?, ?, ?)",
            ((t_now - (events - i) * 3000, levels[i % len(levels)], "worker", f"event {i}: run {1 + i % runs} checkpoint",
              1 + i % runs, 1 + i % runs) for i in range(events)))
        db.conn.executemany(
            "INSERT INTO telemetry (ts, source, cpu_percent, ram_used_mb, ram_total_mb, battery_percent, charging,"
            " temperature_c) VALUES (?, 'big-store', ?, 2700, 5650, 64, 0, 38)",
            ((t_now - 86_000 + 5 * i, 50 + 40 * rng.random()) for i in range(17_000)))
    db.execute("ANALYZE")  # what a long-lived store's planner statistics look like after `PRAGMA optimize`
    db.close()
    return {"runs": runs, "points": per_run * runs, "variants": variants, "deployments": deployments,
            "events": events, "seconds": round(time.perf_counter() - started, 1), "bytes": db_path.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path, help="path of the new database")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=2_000_000, help="metric points in all")
    parser.add_argument("--variants", type=int, default=200)
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args(argv)
    made = build(args.db, runs=args.runs, points=args.points, variants=args.variants,
                 deployments=args.deployments, events=args.events)
    print(json.dumps(made))
    return 0


if __name__ == "__main__":
    sys.exit(main())
