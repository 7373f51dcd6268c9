"""Which variant wins on this device? Digits MLP, CNN and transformer: fp32, fp16, int8 vs torch eager.

    python benchmarks/quantization.py [--threads 1] [--record scripts/demo_variants.json] [--short]

Trains the three models in-process with the real Trainer, runs the real export job (the same code as
the worker, the CLI and the Quantize panel: variants measured by ``core.bench.measure``, each in a
fresh process against the fp32 reference, then all with torch eager in turns; the pick is
``core.recommend.pick`` with the store's preferences, here the defaults: fastest within 1 point)
and prints, for each variant, its size ratio to fp32, its p50 latency ratio to torch eager
(batch 1, fixed threads, medians over repeats) and its accuracy delta, then one line per model:
``recommended cnn: <variant> <N.N>x faster than torch eager``.

Targets (issue 3, digits CNN): the recommended variant ≥ 4× faster than torch eager at batch 1;
an int8 variant ≤ 0.30× the fp32 size with an accuracy drop ≤ 0.5 point. The last lines give
these as ``cnn speedup ratio``, ``cnn int8 size ratio`` and ``cnn int8 drop pt`` for
``benchmarks/check.py``; ``--short`` measures the CNN alone.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {
    # family: (preset, epochs, variants) — int8-dynamic-conv shows what ConvInteger costs on this CPU.
    "mlp": ("small", 8, ["fp32", "fp16", "int8-dynamic", "int8-static"]),
    "cnn": ("small", 12, ["fp32", "fp16", "int8-dynamic", "int8-static", "int8-dynamic-conv"]),
    "transformer": ("tiny", 10, ["fp32", "fp16", "int8-dynamic", "int8-static"]),
}


def train(db, db_path: Path, family: str, preset: str, epochs: int) -> int:
    from core import datasets, paths
    from core.trainer import TrainConfig, Trainer
    from store import datasets as store_datasets
    from store import runs

    row = store_datasets.by_name(db, "digits")
    cfg = TrainConfig(dataset="digits", model=family, preset=preset, epochs=epochs, batch_size=32, threads=2,
                      pause_on_low_battery=False, patience=epochs)
    run_id = runs.create(db, dataset_id=row["id"], model=family, config=cfg.to_dict(), epochs_total=epochs)
    t0 = time.perf_counter()
    summary = Trainer(cfg, datasets.load_arrays(row), paths.artifact_dir(db_path, "runs", run_id)).fit()
    runs.update(db, run_id, checkpoint_path=summary["checkpoint"], status="done", epochs_done=summary["epochs_done"],
                metrics={"val_accuracy": summary["val_accuracy"], "test_accuracy": summary["test_accuracy"]},
                params=summary["params"], size_bytes=summary["size_bytes"])
    print(f"trained {family}/{preset}: {epochs} epochs in {time.perf_counter() - t0:.1f} s, "
          f"{summary['params']:,} params, test accuracy {summary['test_accuracy']:.4f}", flush=True)
    return run_id


def export(db, db_path: Path, run_id: int, variants: list[str], threads: int) -> dict:
    from core.export_job import queue_export
    from core.worker import Worker
    from store import jobs

    job_id = queue_export(db, run_id, variants=variants, threads=threads)
    t0 = time.perf_counter()
    Worker(db_path).run_one(job_id)
    job = jobs.get(db, job_id)
    if job["status"] != "done":
        raise SystemExit(f"export of run {run_id} {job['status']}: {job['error']}")
    print(f"exported, quantized and benchmarked in {time.perf_counter() - t0:.1f} s", flush=True)
    return {**job["result"], "job_id": job_id}


def record(db, result: dict, path: Path) -> None:
    """Keep the CNN's measured rows (figures, ops, build choices; no local paths) as demo data."""
    from store import variants as store_variants

    rows = [{"name": v["name"], "size_bytes": v["size_bytes"], "sha256": v["sha256"], "bench": v["bench"],
             "build": v["meta"].get("build", {}), "op_types": v["meta"].get("op_types", {})}
            for v in store_variants.for_job(db, result["job_id"])]
    out = {"model": "cnn", "preset": MODELS["cnn"][0], "baseline": result["baseline"], "variants": rows,
           "recommended": result["recommended"]}
    path.write_text(json.dumps(out, indent=1) + "\n")


def table(family: str, result: dict) -> dict:
    """Print the comparison; return the figures the targets are judged on."""
    rows = {v["name"]: v for v in result["variants"]}
    fp32 = rows["fp32"]
    torch_ms = result["baseline"]["torch_latency_p50_ms"]
    print(f"\n{family}: torch eager p50 {torch_ms * 1000:.1f} µs at batch 1, {fp32['threads']} thread(s)")
    print(f"  {'variant':<18} {'size':>9} {'size/fp32':>9} {'p50 µs':>8} {'p50/torch':>9} {'acc':>7} {'Δacc pt':>8} "
          f"{'agree':>6} {'max|Δ|':>8}")
    for v in result["variants"]:
        print(f"  {v['name']:<18} {v['size_bytes'] / 1024:>7.1f}KB {v['size_bytes'] / fp32['size_bytes']:>9.2f} "
              f"{v['latency_p50_ms'] * 1000:>8.1f} {v['latency_p50_ms'] / torch_ms:>9.2f} {v['accuracy']:>7.4f} "
              f"{(v['accuracy'] - fp32['accuracy']) * 100:>+8.1f} {v['agreement']:>6.3f} {v['max_abs_logit_diff']:>8.3f}")
    rec = result["recommended"]
    chosen = rows[rec["name"]]
    speedup = torch_ms / chosen["latency_p50_ms"]
    print(f"  why: {rec['reason']}")
    return {"recommended": rec["name"], "speedup_vs_torch": speedup,
            "int8": [(n, v["size_bytes"] / fp32["size_bytes"], (fp32["accuracy"] - v["accuracy"]) * 100)
                     for n, v in rows.items() if n.startswith("int8")]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--record", type=Path, default=None, help="write the CNN's export result here (demo data)")
    parser.add_argument("--short", action="store_true", help="the CNN only (for make bench-check)")
    args = parser.parse_args(argv)
    # Short: the CNN alone, 5 epochs (~10 s idle): the targets compare its variants with each other and with torch.
    models = {"cnn": (MODELS["cnn"][0], 5, MODELS["cnn"][2])} if args.short else MODELS

    import store
    from core.datasets import ensure_builtin

    with tempfile.TemporaryDirectory(prefix="pocketops-bench-") as tmp:
        db_path = Path(tmp) / "pocketops.db"
        db = store.connect(db_path)
        ensure_builtin(db, db_path)
        summaries, results = {}, {}
        for family, (preset, epochs, variants) in models.items():
            run_id = train(db, db_path, family, preset, epochs)
            results[family] = export(db, db_path, run_id, variants, args.threads)
            summaries[family] = table(family, results[family])
        print()
        for family, s in summaries.items():
            print(f"recommended {family}: {s['recommended']} {s['speedup_vs_torch']:.1f}x faster than torch eager")
        cnn = summaries["cnn"]
        small = [(n, r, d) for n, r, d in cnn["int8"] if r <= 0.30 and d <= 0.5]
        print(f"target cnn ≥ 4x faster than torch eager: {'met' if cnn['speedup_vs_torch'] >= 4 else 'MISSED'} "
              f"({cnn['speedup_vs_torch']:.1f}x)")
        best = min(cnn["int8"], key=lambda t: t[1])
        print(f"target cnn int8 ≤ 0.30x fp32 size with ≤ 0.5 pt drop: {'met' if small else 'MISSED'} "
              f"({', '.join(f'{n} {r:.2f}x {d:+.1f} pt' for n, r, d in (small or [best]))})")
        # The smallest int8 that keeps accuracy (else the smallest int8): what the size target judges.
        size_pick = min(small or cnn["int8"], key=lambda t: t[1])
        print(f"cnn speedup ratio: {cnn['speedup_vs_torch']:.2f}")
        print(f"cnn int8 size ratio: {size_pick[1]:.3f}")
        print(f"cnn int8 drop pt: {size_pick[2]:.2f}")
        if args.record:
            record(db, results["cnn"], args.record)
            print(f"recorded the cnn result in {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
