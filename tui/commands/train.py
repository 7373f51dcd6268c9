"""`pocketops train --dataset NAME --model FAMILY [...] [--wait]`: queue (and optionally run) a training run."""
from __future__ import annotations

import sys

from tui.commands._common import CliError, add_parser, emit, open_db, wait_for_job


def register(sub) -> None:
    p = add_parser(sub, "train", "queue a training run; with --wait, run it and stream progress")
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True, choices=("mlp", "cnn", "transformer"))
    p.add_argument("--preset", default="small", choices=("tiny", "small", "base"))
    p.add_argument("--epochs", type=_positive, default=10)
    p.add_argument("--batch-size", type=_positive, default=8)
    p.add_argument("--accum", type=_positive, default=1, help="gradient accumulation steps")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: per model family)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=_positive, default=5,
                   help="stop early after this many epochs without a better validation accuracy (default 5)")
    p.add_argument("--min-battery", type=_percent, default=20.0, metavar="PCT",
                   help="pause below this battery %% unless charging (default 20; 0 never pauses)")
    p.add_argument("--wait", action="store_true", help="run now (or wait for a worker) and stream progress")
    p.add_argument("--on", default=None, metavar="CLUSTER", help="train on this Ray cluster (`pocketops cluster add`); "
                   "its curves and checkpoint come back into this store")
    p.set_defaults(func=run)


def _positive(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, found {value}")
    return value


def _percent(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, found {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected 0–100, found {value:g}")
    return value


def run(args) -> int:
    from core.optional import require_installed
    from core.runs import new_run

    on = getattr(args, "on", None)
    if on is None:  # the worker trains in this machine's Python: without torch the job could only fail later
        require_installed("torch", "training")
    db, db_path = open_db(args)
    if on is not None:
        from core import clusters

        clusters.get(db, on)  # an unknown cluster: one line, nothing queued
    run_id, job_id = new_run(
        db, dataset=args.dataset, model=args.model, preset=args.preset, epochs=args.epochs,
        batch_size=args.batch_size, accum=args.accum, lr=args.lr, seed=args.seed, patience=args.patience,
        min_battery=args.min_battery, pause_on_low_battery=args.min_battery > 0, on=on,
    )
    if not args.wait:
        from core.worker import alive_workers

        who = ("a running worker will pick it up" if alive_workers(db_path) else
               "no worker is running: start one with `pocketops worker` (or open the dashboard)")
        emit(args, {"run_id": run_id, "job_id": job_id, "status": "queued"},
             f"run {run_id} queued (job {job_id}); {who} — `pocketops runs show {run_id}`")
        return 0
    return stream(args, db_path, run_id, job_id)


def stream(args, db_path, run_id: int, job_id: int) -> int:
    """Wait for the run's job, printing metric points as they arrive; the last line is the summary."""
    from core.runs import run_summary
    from store import runs

    from store import jobs

    cursor = {"id": 0, "paused": None}
    show_bar = not args.json and sys.stdout.isatty()
    progress = task = None
    if show_bar:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("[bold]run {task.fields[run]}[/]"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.description}"), TimeElapsedColumn())
        progress.start()
        task = progress.add_task("starting", total=None, run=run_id)

    def tick(db) -> None:
        paused = ((jobs.get(db, job_id) or {}).get("progress") or {}).get("paused")
        if paused != cursor["paused"]:  # the battery paused (or resumed) training: say so at once
            cursor["paused"] = paused
            if args.json:
                emit(args, {"event": "paused" if paused else "resumed", "run_id": run_id, "reason": paused})
            else:
                message = f"run {run_id}: paused, {paused}; resumes when charging" if paused else f"run {run_id}: training again"
                (progress.console.print if show_bar else print)(message)
        points = runs.metrics_since(db, run_id, cursor["id"])
        for point in points:
            cursor["id"] = point["id"]
            if args.json:
                emit(args, {"event": "metric", "run_id": run_id, **{k: point[k] for k in
                            ("kind", "step", "epoch", "loss", "accuracy", "samples_per_s")}})
            elif not show_bar and point["kind"] == "val":
                print(f"epoch {point['epoch']}: val_loss {point['loss']:.4f}  val_accuracy {point['accuracy']:.4f}", flush=True)
        if show_bar and points:
            row = runs.get(db, run_id)
            last_val = next((p for p in reversed(points) if p["kind"] == "val"), None)
            last_train = next((p for p in reversed(points) if p["kind"] == "train"), None)
            bits = []
            if last_train and last_train["loss"] is not None:
                bits.append(f"loss {last_train['loss']:.3f}")
            if last_train and last_train["samples_per_s"]:
                bits.append(f"{last_train['samples_per_s']:.0f} samples/s")
            if last_val:
                bits.append(f"val acc {last_val['accuracy']:.3f}")
            progress.update(task, total=row["epochs_total"], completed=row["epochs_done"], description="  ".join(bits))

    try:
        job = wait_for_job(db_path, job_id, tick=tick)
    except KeyboardInterrupt:
        import store

        state = (jobs.get(store.connect(db_path), job_id) or {}).get("status")
        if state == "running":  # a background worker has it: only our watching stopped
            raise CliError(f"stopped watching; run {run_id} goes on in the background worker "
                           f"(`pocketops runs show {run_id}`)", code=130) from None
        raise CliError(f"interrupted: run {run_id} is {state}; `pocketops worker` resumes it from its checkpoint, "
                       f"`pocketops runs cancel {run_id}` drops it", code=130) from None
    finally:
        if progress is not None:
            progress.stop()
    import store

    summary = run_summary(store.connect(db_path), run_id)
    if args.json:
        emit(args, summary)
    else:
        m = summary.get("metrics") or {}
        acc = m.get("val_accuracy")
        print(f"run {run_id}: {summary['status']}" + (f", val_accuracy {acc:.4f}" if acc is not None else ""), flush=True)
    if summary["status"] != "done":
        raise CliError(f"run {run_id} {summary['status']}: {summary.get('error') or job.get('error') or 'no reason recorded'}")
    return 0
