"""Shared plumbing for headless commands: the store, output, errors."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from core.fmt import fmt_bytes  # noqa: F401  (re-exported for the commands)


class CliError(Exception):
    """A failure to report as one line on stderr with a non-zero exit code."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def add_global_options(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """``--db`` and ``--json``, accepted before or after the command name."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--db", metavar="PATH", default=default, help="database file (default: $POCKETOPS_HOME/pocketops.db)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False, help="machine-readable output")


def add_parser(sub, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A sub-parser that also accepts ``--db`` and ``--json`` after the command name."""
    parser = sub.add_parser(name, help=help, description=help, **kwargs)
    add_global_options(parser, suppress=True)
    return parser


def open_db(args: argparse.Namespace):
    """The store for ``--db`` / ``$POCKETOPS_HOME``, migrated, with the built-in datasets."""
    import store
    from core import paths

    db_path = paths.db_path(getattr(args, "db", None))
    db = store.connect(db_path)
    try:
        from core.datasets import ensure_builtin
    except ImportError:  # datasets module not installed in this build
        return db, db_path
    ensure_builtin(db, db_path)
    return db, db_path


def emit(args: argparse.Namespace, data: Any, text: str | None = None) -> None:
    """Print ``data`` as one JSON line with ``--json``, else ``text`` (or a readable dump)."""
    if getattr(args, "json", False):
        print(json.dumps(data, default=str), flush=True)
    elif text is not None:
        print(text, flush=True)
    else:
        print(json.dumps(data, indent=2, default=str), flush=True)


def console():
    """A rich console on stdout (rich only, never Textual)."""
    from rich.console import Console

    return Console(highlight=False)


def path_arg(value: str) -> Path:
    return Path(value).expanduser()


def run_job(db_path: Path, kind: str, payload: dict, *, secrets: dict | None = None, here: bool = False,
            tick=None, interval: float = 0.25) -> dict:
    """Queue a ``kind`` job and block until it ends, the one way a command runs work; its final row.

    The payload is validated first (a one-line error, no row). A live worker runs the job and we
    watch; with none alive, or when the job needs ``secrets`` that only this process holds (an
    ``--api-key``), or with ``here`` (the job reads this process's environment), a worker of
    our own runs it in a thread here, claiming it as it is queued so no other worker can take
    it. Either way the rows are those a dashboard's job leaves.
    """
    import threading

    from core import jobkinds
    from core import worker as core_worker

    jobkinds.validate(kind, payload)
    if not (secrets or here) and core_worker.alive_workers(db_path):
        import store

        return wait_for_job(db_path, jobkinds.queue(store.connect(db_path), kind, payload), tick=tick,
                            interval=interval)
    queued = threading.Event()
    ids: list[int] = []
    runner: list[core_worker.Worker] = []
    failure: list[BaseException] = []

    def run_here() -> None:
        try:
            runner.append(core_worker.Worker(db_path))  # its connection belongs to this thread
            runner[0].queue_and_run(kind, payload, secrets=secrets, on_queued=lambda job_id: (ids.append(job_id), queued.set()))
        except BaseException as exc:  # surfaced in the calling thread below
            failure.append(exc)
        finally:
            queued.set()

    thread = threading.Thread(target=run_here, name=f"job-{kind}", daemon=True)
    thread.start()
    queued.wait()
    if not ids:
        thread.join()
        raise failure[0] if failure else CliError(f"{kind} job was not queued")
    return _watch(db_path, ids[0], thread, lambda: runner[0] if runner else None, failure, tick, interval)


def wait_for_job(db_path: Path, job_id: int, *, tick=None, interval: float = 0.25) -> dict:
    """Block until the queued job ``job_id`` ends; return its final row.

    If a worker process is alive it runs the job and we only watch. Otherwise the job runs in
    a thread of this process (a worker of our own), so ``--wait`` works with no daemon.
    ``tick(db)`` is called on every poll from this thread (for progress output). Ctrl-C asks
    the job to checkpoint and stop; it goes back to the queue for a later worker.
    """
    import threading

    from core import worker as core_worker

    runner: core_worker.Worker | None = None
    thread: threading.Thread | None = None
    failure: list[BaseException] = []
    if not core_worker.alive_workers(db_path):
        def run_inline() -> None:
            nonlocal runner
            try:
                runner = core_worker.Worker(db_path)  # its connection belongs to this thread
                runner.run_one(job_id)
            except BaseException as exc:  # surfaced in the calling thread below
                failure.append(exc)

        thread = threading.Thread(target=run_inline, name=f"job-{job_id}", daemon=True)
        thread.start()
    return _watch(db_path, job_id, thread, lambda: runner, failure, tick, interval)


def _watch(db_path: Path, job_id: int, thread, runner, failure: list, tick, interval: float) -> dict:
    """Poll job ``job_id`` until it ends (``runner()``: the worker of ours running it, if any)."""
    import signal
    import threading
    import time

    import store
    from store import jobs

    db = store.connect(db_path)

    def terminate(_signum, _frame):  # `kill PID` (or the phone closing the session): stop as Ctrl-C does
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        while True:
            if tick:
                tick(db)
            job = jobs.get(db, job_id)
            if job is None:
                raise CliError(f"job {job_id} does not exist")
            if job["status"] in jobs.FINAL:
                if thread:
                    thread.join(timeout=30)
                if tick:
                    tick(db)
                return job
            if failure:
                raise failure[0]
            if thread is not None and not thread.is_alive() and job["status"] == "queued":
                raise CliError(f"job {job_id} was released before it finished; run `pocketops worker` to resume it")
            time.sleep(interval)
    except KeyboardInterrupt:
        ours = runner()
        if ours is not None:
            ours.request_stop()  # checkpoint at the next batch and give the job back to the queue
            if thread:
                thread.join(timeout=60)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
