"""`pocketops worker [--once] [--idle-exit SECONDS]`: run queued jobs in this process."""
from __future__ import annotations

from core.cliargs import seconds_arg
from tui.commands._common import add_parser, emit, open_db


def register(sub) -> None:
    p = add_parser(sub, "worker", "run queued jobs (training, export, deploy) until stopped")
    p.add_argument("--once", action="store_true", help="run what is queued now, then exit")
    p.add_argument("--idle-exit", type=seconds_arg, default=None, metavar="SECONDS",
                   help="exit after this many seconds without a job while no dashboard is open "
                        "(default: keep running; the dashboard's own worker uses $POCKETOPS_IDLE_EXIT_S, default 300)")
    p.set_defaults(func=run)


def run(args) -> int:
    from core.worker import Worker

    _db, db_path = open_db(args)
    worker = Worker(db_path, idle_exit=args.idle_exit)
    worker.install_signal_handlers()

    def report(job: dict) -> None:
        if args.json:
            emit(args, {"event": "job", "job_id": job["id"], "kind": job["kind"], "status": job["status"], "error": job["error"]})
        else:
            line = f"job {job['id']} ({job['kind']}): {job['status']}"
            print(line + (f" — {job['error']}" if job["error"] else ""), flush=True)

    count = worker.run(once=args.once, on_job=report)
    why = f" (idle for {args.idle_exit:g} s with no dashboard open)" if worker.left_idle else ""
    emit(args, {"worker_id": worker.id, "jobs_run": count, "left_idle": worker.left_idle},
         f"worker {worker.id} stopped after {count} job(s){why}")
    return 0
