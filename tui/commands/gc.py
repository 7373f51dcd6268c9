"""`pocketops gc [--keep-last N] [--older-than DAYS] [--dry-run] [--yes]`: free old runs' files."""
from __future__ import annotations

from tui.commands._common import add_parser, emit, fmt_bytes


def register(sub) -> None:
    p = add_parser(sub, "gc", "remove old runs' checkpoints and variants (never what a deployment needs)")
    p.add_argument("--keep-last", type=int, metavar="N", help="keep every file of the N newest runs")
    p.add_argument("--older-than", type=float, metavar="DAYS", help="only runs that ended more than DAYS days ago")
    p.add_argument("--dry-run", action="store_true", help="show what would be freed; change nothing")
    p.add_argument("--yes", action="store_true", help="remove without asking")
    p.set_defaults(func=run)


def _summary(chosen, verb: str) -> str:
    counts = chosen.counts()
    parts = [f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in counts.items() if n]
    runs = len(chosen.runs)
    return (f"{verb} {fmt_bytes(chosen.bytes)} in {len(chosen.items)} file(s) of {runs} run(s): "
            + (", ".join(parts) or "nothing"))


def run(args) -> int:
    import store
    from core import gc, paths
    from tui.commands.deployments import confirm

    # store.connect, not open_db: a dry run must not even register the built-in dataset.
    db = store.connect(paths.db_path(getattr(args, "db", None)))
    chosen = gc.plan(db, keep_last=args.keep_last, older_than_days=args.older_than)
    if not chosen.items:
        emit(args, {**chosen.as_dict(), "dry_run": args.dry_run, "removed": False},
             "gc: nothing to remove" + (f" ({len(chosen.kept)} file(s) kept: in use)" if chosen.kept else ""))
        return 0
    if not args.json:
        print(_summary(chosen, "would free" if args.dry_run else "frees"), flush=True)
        for item in chosen.items:
            print(f"  run {item.run_id} {item.kind}: {item.path} ({fmt_bytes(item.size_bytes)})", flush=True)
        for kept in chosen.kept:
            print(f"  keeps {kept['path']}: {kept['why']}", flush=True)
    if args.dry_run:
        if args.json:
            emit(args, {**chosen.as_dict(), "dry_run": True, "removed": False})
        return 0
    confirm(args, f"Remove these {len(chosen.items)} file(s) ({fmt_bytes(chosen.bytes)})?")
    done = gc.apply(db, chosen)
    emit(args, {**done.as_dict(), "dry_run": False, "removed": True}, _summary(done, "freed"))
    return 0
