"""`pocketops runs list | show ID | cancel ID | resume ID`."""
from __future__ import annotations

import argparse

from tui.commands._common import add_parser, console, emit, fmt_bytes, open_db


DEFAULT_LIMIT = 200  # a screenful many times over; `--limit 0` lists a year of runs


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--limit: expected a whole number >= 0 (0 = all), got {text!r}")
    return value


def register(sub) -> None:
    p = add_parser(sub, "runs", "list, inspect, cancel and resume training runs")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = add_parser(actions, "list", "list runs, newest first")
    listing.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT, metavar="N",
                         help=f"show the newest N runs (default {DEFAULT_LIMIT}; 0 = all)")
    listing.set_defaults(func=list_cmd)
    for name, func, help in (
        ("show", show_cmd, "show a run's status and metrics"),
        ("cancel", cancel_cmd, "cancel a queued or running run"),
        ("resume", resume_cmd, "re-queue a failed or cancelled run from its last checkpoint"),
    ):
        a = add_parser(actions, name, help)
        a.add_argument("run_id", type=int)
        a.set_defaults(func=func)


def list_cmd(args) -> int:
    import store
    from core import paths
    from store import runs

    # Listing needs no built-in dataset: skip open_db's check, which imports numpy (~0.15 s of 0.5).
    db = store.connect(paths.db_path(getattr(args, "db", None)))
    found = [
        {"run_id": r["id"], "dataset": r["dataset_name"], "model": r["model"], "status": r["status"],
         "epochs_done": r["epochs_done"], "epochs_total": r["epochs_total"],
         "val_accuracy": r["metrics"].get("val_accuracy"), "created_at": r["created_at"]}
        for r in runs.list_all(db, limit=args.limit or -1)  # SQLite: LIMIT -1 is no limit
    ]
    if args.json:
        emit(args, {"runs": found})
        return 0
    from rich.table import Table

    table = Table("id", "dataset", "model", "status", "epochs", "val acc", box=None)
    for r in found:
        acc = "–" if r["val_accuracy"] is None else f"{r['val_accuracy']:.3f}"
        table.add_row(str(r["run_id"]), r["dataset"], r["model"], r["status"], f"{r['epochs_done']}/{r['epochs_total']}", acc)
    console().print(table)
    return 0


def _summary(db, run_id: int) -> dict:
    from core.runs import run_summary

    return run_summary(db, run_id)


def show_cmd(args) -> int:
    db, _ = open_db(args)
    summary = _summary(db, args.run_id)
    if args.json:
        emit(args, summary)
        return 0
    out = console()
    out.print(f"[bold]run {summary['run_id']}[/]  {summary['model']} on {summary['dataset']}: {summary['status']}, "
              f"epoch {summary['epochs_done']}/{summary['epochs_total']}")
    if summary.get("params"):
        out.print(f"  {summary['params']:,} parameters, {fmt_bytes(summary.get('size_bytes'))}")
    for key, value in sorted((summary.get("metrics") or {}).items()):
        out.print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
    if summary.get("error"):
        out.print(f"  [red]error:[/] {summary['error']}")
    return 0


def cancel_cmd(args) -> int:
    from core.runs import cancel_run

    db, _ = open_db(args)
    status = cancel_run(db, args.run_id)
    emit(args, {"run_id": args.run_id, "status": status},
         f"run {args.run_id}: {'cancelled' if status == 'cancelled' else 'cancel requested; the worker stops it at the next batch'}")
    return 0


def resume_cmd(args) -> int:
    from core.runs import resume_run

    db, _ = open_db(args)
    job_id = resume_run(db, args.run_id)
    emit(args, {"run_id": args.run_id, "job_id": job_id, "status": "queued"}, f"run {args.run_id} re-queued as job {job_id}")
    return 0
