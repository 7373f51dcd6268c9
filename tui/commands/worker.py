"""`pocketops worker [--once]`: run queued jobs in this process."""
from __future__ import annotations

from tui.commands._common import add_parser, emit, open_db


def register(sub) -> None:
    p = add_parser(sub, "worker", "run queued jobs (training, export, deploy) until stopped")
    p.add_argument("--once", action="store_true", help="run what is queued now, then exit")
    p.set_defaults(func=run)


def run(args) -> int:
    from core.worker import Worker

    _db, db_path = open_db(args)
    worker = Worker(db_path)
    worker.install_signal_handlers()

    def report(job: dict) -> None:
        if args.json:
            emit(args, {"event": "job", "job_id": job["id"], "kind": job["kind"], "status": job["status"], "error": job["error"]})
        else:
            line = f"job {job['id']} ({job['kind']}): {job['status']}"
            print(line + (f" — {job['error']}" if job["error"] else ""), flush=True)

    count = worker.run(once=args.once, on_job=report)
    emit(args, {"worker_id": worker.id, "jobs_run": count}, f"worker {worker.id} stopped after {count} job(s)")
    return 0
