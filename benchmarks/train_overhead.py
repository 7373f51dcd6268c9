"""What does our worker path cost over a bare PyTorch loop? Prints both throughputs and ``ratio: X``.

Same model (digits cnn/small), same data and split, batch size 8, no accumulation, AdamW at the
same lr, one validation pass per epoch in both. "ours" is the whole train job as a worker
runs it — ``core.train_job.run`` with a claimed job: dataset load, Trainer, per-batch
check(), metric points batched into a real SQLite store in a temp dir, run updates,
checkpoints (atomic, fsynced) registered with sha256 every epoch, final test evaluation.
torch threads fixed to 1. REPEATS runs each, alternating which goes first; the last line is
the median of the per-repeat ratios (each pair ran back to back, so other load on the machine
mostly cancels out); the medians of each side are printed too.

    python benchmarks/train_overhead.py [--epochs 5] [--repeats 5] [--threads 1] [--short]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import store  # noqa: E402
from core import datasets, models, runs, train_job  # noqa: E402
from core.worker import JobContext  # noqa: E402
from store import datasets as store_datasets  # noqa: E402
from store import jobs  # noqa: E402

BATCH = 8
ACCUM = 1
SEED = 0


def bare(arrays, epochs: int) -> tuple[float, float]:
    """A plain loop: shuffle, forward, loss, backward, step; validate each epoch, test at the end.

    Returns samples/s by wall clock and by process CPU time."""
    import torch
    import torch.nn.functional as F

    tr, va, te = datasets.split_indices(arrays.y, seed=SEED)
    X, y = torch.from_numpy(arrays.X), torch.from_numpy(arrays.y)
    X_tr, y_tr, X_va, y_va, X_te, y_te = X[tr], y[tr], X[va], y[va], X[te], y[te]
    torch.manual_seed(SEED)
    t0, c0 = time.perf_counter(), time.process_time()
    model = models.build_model(models.model_args("cnn", arrays.input_shape, len(arrays.classes), "small"))
    opt = torch.optim.AdamW(model.parameters(), lr=models.DEFAULT_LR["cnn"], weight_decay=1e-4)
    n = len(y_tr)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(SEED * 100_003 + epoch))
        for b in range(0, n, BATCH):
            idx = order[b:b + BATCH]
            loss = F.cross_entropy(model(X_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        model.eval()
        with torch.no_grad():
            acc = (model(X_va).argmax(1) == y_va).float().mean().item()
    with torch.no_grad():  # the final figure any training script reports
        test_acc = (model(X_te).argmax(1) == y_te).float().mean().item()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert acc > 0.5 and test_acc > 0.5, f"bare loop did not learn (val {acc:.3f}, test {test_acc:.3f})"
    return epochs * n / elapsed, epochs * n / cpu


def ours(epochs: int, threads: int) -> tuple[float, float]:
    """The worker path on a fresh store: new_run → claim → train_job.run(ctx). Samples/s (wall, CPU)."""
    with tempfile.TemporaryDirectory(prefix="pocketops-bench-") as tmp:
        db_path = Path(tmp) / "bench.db"
        db = store.connect(db_path)
        datasets.ensure_builtin(db, db_path)
        run_id, job_id = runs.new_run(db, dataset="digits", model="cnn", preset="small", epochs=epochs,
                                      batch_size=BATCH, accum=ACCUM, seed=SEED, threads=threads, patience=epochs + 1)
        job = jobs.claim(db, "bench-worker", job_id=job_id)
        ctx = JobContext(db_path=db_path, job=job, worker_id="bench-worker", db=db)
        t0, c0 = time.perf_counter(), time.process_time()
        result = train_job.run(ctx)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        n_train = len(datasets.split_indices(datasets.load_arrays(store_datasets.by_name(db, "digits")).y, seed=SEED)[0])
        assert result["epochs_done"] == epochs and result["val_accuracy"] > 0.5, result
        assert store.db.one(db, "SELECT COUNT(*) AS n FROM metrics WHERE run_id = ?", (run_id,))["n"] > epochs
        db.conn.close()
    return epochs * n_train / elapsed, epochs * n_train / cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--short", action="store_true", help="2 epochs x 3 repeats (for make bench-check)")
    args = parser.parse_args(argv)
    if args.short:
        args.epochs, args.repeats = 2, 3
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "d.db"
        db = store.connect(db_path)
        datasets.ensure_builtin(db, db_path)
        arrays = datasets.load_arrays(store_datasets.by_name(db, "digits"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"digits cnn/small, batch {BATCH}, accum {ACCUM}, {args.epochs} epochs per run, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), {args.repeats} repeats, load average {load:.1f} on {os.cpu_count()} cores",
          flush=True)
    bare(arrays, 1)  # warm-up: first-call costs (allocator, torch._dynamo import by the optimizer)
    ours(1, args.threads)
    pairs: list[float] = []
    wall: dict[str, list[float]] = {"bare": [], "ours": []}
    cpu: dict[str, list[float]] = {"bare": [], "ours": []}
    for r in range(args.repeats):
        order = ("bare", "ours") if r % 2 == 0 else ("ours", "bare")
        for name in order:
            w, c = bare(arrays, args.epochs) if name == "bare" else ours(args.epochs, args.threads)
            torch.set_num_threads(args.threads)  # the trainer sets it too; keep both runs equal
            wall[name].append(w)
            cpu[name].append(c)
            print(f"  repeat {r + 1}/{args.repeats} {name:4s} {w:8.1f} samples/s wall, {c:8.1f} per CPU-second", flush=True)
        pairs.append(wall["ours"][-1] / wall["bare"][-1])  # neighbours in time share the machine's load
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"bare PyTorch loop : {med['bare']:8.1f} samples/s (median; {med_cpu['bare']:.1f} per CPU-second)")
    print(f"pocketops worker  : {med['ours']:8.1f} samples/s (median; {med_cpu['ours']:.1f} per CPU-second)")
    print(f"cpu ratio: {med_cpu['ours'] / med_cpu['bare']:.3f}  (ours/bare; insensitive to other load on the machine)")
    print(f"ratio of medians: {med['ours'] / med['bare']:.3f}; per-repeat ratios: {', '.join(f'{p:.3f}' for p in pairs)}")
    print(f"ratio: {statistics.median(pairs):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
