"""The job loop: claim a job, run its handler, heartbeat, record the end.

Several workers may run at once; claims never collide (one atomic UPDATE in the store).
SIGTERM/SIGINT ask the running job to checkpoint and stop; the job goes back to the queue and
the next worker resumes it. After SIGKILL nothing runs here: the job's heartbeat goes stale
(or its worker's pid is gone on this host) and the next worker takes it over.

Handlers are imported lazily by name, so the worker starts without torch and only the jobs
that need torch load it. While it loops (not with ``--once``) it also queues the periodic kinds
when they are due (``core.periodic``: a ``monitor`` pass every 30 s while a deployment is watched).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from core import jobkinds, paths, periodic, telemetry
from core.cliargs import seconds_arg
from core.errors import ConfigError, JobCancelled, JobStopped, PocketopsError
from core.optional import MissingDependency
from store import dashboards, events, jobs, workers
from store import db as storedb
from store import telemetry as store_telemetry

HEARTBEAT_S = float(os.environ.get("POCKETOPS_HEARTBEAT_S", "1.0"))
STALE_AFTER_S = float(os.environ.get("POCKETOPS_STALE_AFTER_S", "30"))
WORKER_ALIVE_S = 15.0
# A dashboard beats every 2 s (tui.app); one silent for this long is closed or was killed.
DASHBOARD_ALIVE_S = float(os.environ.get("POCKETOPS_DASHBOARD_ALIVE_S", "15"))
# A worker the dashboard starts leaves after this long idle with no dashboard open, so an idle
# worker (torch loaded after a training run: 326 MB RSS here, scripts/idle_worker_rss.py) does not
# stay on the phone for good.
DEFAULT_IDLE_EXIT_S = 300.0

# kind -> "module:function", from the one registry (core.jobkinds). Each handler takes a
# JobContext and returns a JSON-able result. Tests add their own kinds to this dict.
HANDLERS: dict[str, str] = {name: jobkinds.handler_path(name) for name in jobkinds.names()}
# Kinds the worker queues by itself on a timer (core.periodic); how often it looks whether one is due.
PERIODIC_KINDS = ("monitor", "costs")
SCHEDULE_CHECK_S = 5.0
# A job whose payload names a cluster (``on``) runs there; this executor follows it from here.
REMOTE_HANDLER = "core.remote_job:run"


@dataclass
class JobContext:
    """What a handler gets: the job, a store connection of its own thread, and the stop signals."""

    db_path: Path
    job: dict
    worker_id: str
    db: Any = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _progress: dict = field(default_factory=dict)
    # Secrets for this one job, in memory only (never in its row): the CLI's --api-key when it
    # runs the job itself. A job a worker claims from the queue has none.
    secrets: dict = field(default_factory=dict)

    @property
    def payload(self) -> dict:
        """The job's payload as stored; handlers read it typed with ``jobkinds.payload_of(ctx.job)``."""
        return self.job["payload"]

    @property
    def job_id(self) -> int:
        """The id of the job being run."""
        return self.job["id"]

    def files(self, *parts: str | int) -> Path:
        """A directory for this job's artifacts under the database's files directory."""
        return paths.artifact_dir(self.db_path, *parts)

    def progress(self, **values: Any) -> None:
        """Update the job's progress; the heartbeat thread writes it (latest value wins)."""
        self._progress.update(values)

    @property
    def stopping(self) -> bool:
        """True once the worker is shutting down or lost the job; the job is requeued, not failed."""
        return self._stopping.is_set()

    @property
    def cancelled(self) -> bool:
        """True once a cancel was requested for this job (seen on the next heartbeat)."""
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raise JobCancelled / JobStopped at a safe point if the job should end now."""
        if self._cancelled.is_set():
            raise JobCancelled()
        if self._stopping.is_set():
            raise JobStopped()

    def log(self, level: str, message: str, run_id: int | None = None) -> None:
        """Write an event tagged with this job (and its run unless ``run_id`` says another)."""
        events.log(self.db, level, f"job:{self.job['kind']}", message, run_id=run_id or self.job.get("run_id"), job_id=self.job_id)


def _load_handler(kind: str, *, remote: bool = False) -> Callable[[JobContext], dict]:
    target = REMOTE_HANDLER if remote and kind in HANDLERS else HANDLERS.get(kind)
    if target is None:
        raise PocketopsError(f"no handler for job kind {kind!r}; known kinds: {', '.join(sorted(HANDLERS))}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


CREATE_TIME_SLACK_S = 0.5  # psutil's create time is exact per boot; slack only for float rounding


def process_create_time(pid: int | None = None) -> float | None:
    """When process ``pid`` (default: this one) started, on psutil's clock; None if unknown."""
    import psutil

    try:
        return psutil.Process(pid or os.getpid()).create_time()
    except (psutil.Error, OSError):
        return None


def pid_alive(pid: int, create_time: float | None = None) -> bool:
    """True if ``pid`` runs and is not a zombie and, with ``create_time``, is that same process
    (not another one that got the pid after the worker died)."""
    import psutil

    try:
        proc = psutil.Process(int(pid))
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False  # dead but not reaped by its parent: it runs nothing any more
        if create_time is not None and abs(proc.create_time() - float(create_time)) > CREATE_TIME_SLACK_S:
            return False  # the kernel gave the dead worker's pid to a newer process
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # exists, owned by someone else; only the heartbeat can tell more
    return True


def reap_dead(db, host: str) -> int:
    """Requeue running jobs whose worker on this host is gone (killed with signal 9)."""
    released = 0
    for row in storedb.rows(
        db,
        """SELECT jobs.id, jobs.worker_id, workers.pid, workers.host, workers.create_time FROM jobs
           JOIN workers ON workers.id = jobs.worker_id WHERE jobs.status = 'running'""",
    ):
        if row["host"] == host and row["pid"] != os.getpid() and not pid_alive(row["pid"], row["create_time"]):
            if jobs.release(db, row["id"], row["worker_id"]):
                events.log(db, "warning", "worker", f"job {row['id']} was held by dead worker pid {row['pid']}; requeued", job_id=row["id"])
                released += 1
            workers.stopped(db, row["worker_id"])
    return released


class Worker:
    """Claims queued jobs of its ``kinds`` one at a time and runs their handlers, with a heartbeat thread."""

    def __init__(self, db_path: str | Path, *, worker_id: str | None = None, kinds: tuple[str, ...] | None = None,
                 idle_exit: float | None = None):
        self.db_path = Path(db_path)
        self.idle_exit = idle_exit  # seconds idle with no dashboard open before leaving; None: stay
        self.left_idle = False  # run() ended because of idle_exit
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.host = socket.gethostname()
        self.kinds = kinds or tuple(HANDLERS)
        self.stopping = threading.Event()
        storedb.connect(self.db_path)  # create or migrate now, so errors surface at start
        self._current: JobContext | None = None
        self._beat_stop = threading.Event()
        self._started_at = time.time()
        self._next_periodic = 0.0
        self._next_schedule = 0.0

    @property
    def db(self):
        """This thread's connection (a worker may be built in one thread and run in another)."""
        return storedb.thread_db(self.db_path)

    # -- signals -------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT stop the worker after the current job reaches a safe point."""
        def handler(signum, _frame):
            self.request_stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- heartbeat thread ----------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        db = storedb.connect(self.db_path, migrate=False)
        next_telemetry = 0.0
        while not self._beat_stop.wait(HEARTBEAT_S):
            ctx = self._current
            try:
                workers.beat(db, self.id, ctx.job_id if ctx else None)
                if ctx is not None:
                    held = jobs.heartbeat(db, ctx.job_id, self.id, dict(ctx._progress))
                    if not held:
                        ctx._stopping.set()  # another worker took it over: stop quietly
                    elif jobs.cancel_requested(db, ctx.job_id):
                        ctx._cancelled.set()
                if time.monotonic() >= next_telemetry:
                    store_telemetry.record(db, self.id, telemetry.sample())
                    next_telemetry = time.monotonic() + 5.0
            except storedb.sqlite3.DatabaseError as exc:  # locked for longer than busy_timeout, or damaged
                print(f"pocketops worker: heartbeat skipped: {exc}", file=sys.stderr)

    # -- the loop ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _registered(self):
        """Registered in the store with a heartbeat thread for as long as the block runs."""
        workers.register(self.db, self.id, os.getpid(), self.host, process_create_time())
        self._beat_stop.clear()
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        try:
            yield
        finally:
            self._beat_stop.set()
            beat.join(timeout=5)
            workers.stopped(self.db, self.id)

    def run(self, *, once: bool = False, idle_sleep: float = 0.5, on_job: Callable[[dict], None] | None = None) -> int:
        """Run jobs until stopped (or, with ``once``, until the queue is empty). Returns jobs run.

        With ``idle_exit`` it also ends after that many seconds without a job while no dashboard
        is open (the idle clock restarts after each job and whenever a dashboard is seen).
        """
        done = 0
        with self._registered():
            idle_since = time.monotonic()
            while not self.stopping.is_set():
                reap_dead(self.db, self.host)
                if not once:
                    self._schedule_periodic()
                job = jobs.claim(self.db, self.id, kinds=self.kinds, stale_after=STALE_AFTER_S)
                if job is None and once:
                    break
                if job is None and self.idle_exit is not None:
                    if attached_dashboards(self.db):
                        idle_since = time.monotonic()
                    elif time.monotonic() - idle_since >= self.idle_exit:
                        job = self._last_claim()
                        if job is None:
                            self.left_idle = True
                            events.log(self.db, "info", "worker", f"worker {self.id} left after {self.idle_exit:g} s "
                                       "idle with no dashboard open; the dashboard starts one when a job is queued")
                            break
                if job is None:
                    if self._queue_periodic():
                        continue
                    self.stopping.wait(idle_sleep if self.idle_exit is None else min(idle_sleep, self.idle_exit))
                    continue
                self.run_job(job)
                done += 1
                if job["kind"] not in PERIODIC_KINDS:
                    # A periodic pass is not a user's job: it does not keep an unwatched worker on the phone.
                    idle_since = time.monotonic()
                if on_job:
                    on_job(jobs.get(self.db, job["id"]))
        return done

    def _queue_periodic(self) -> bool:
        """When idle, queue the periodic ``costs`` job if it is due (store.costs.queue_if_due); True if queued."""
        if "costs" not in self.kinds or time.monotonic() < self._next_periodic:
            return False
        self._next_periodic = time.monotonic() + 10.0   # an idle loop turns every 0.5 s; asking every 10 s is plenty
        from store import costs as store_costs

        try:
            every = float(os.environ.get("POCKETOPS_COSTS_EVERY_S") or 900)   # 0 turns it off
        except ValueError:
            every = 900.0
        return store_costs.queue_if_due(self.db, every, self._started_at) is not None


    def _schedule_periodic(self) -> None:
        """Queue the periodic kinds this worker runs when they are due (checked every few seconds)."""
        if "monitor" not in self.kinds or time.monotonic() < self._next_schedule:
            return
        self._next_schedule = time.monotonic() + SCHEDULE_CHECK_S
        try:
            periodic.schedule_monitor(self.db)
        except ConfigError as exc:  # a bad $POCKETOPS_MONITOR_S: say so once a minute, run the other jobs
            self._next_schedule = time.monotonic() + 60
            print(f"pocketops worker: monitor not scheduled: {exc}", file=sys.stderr)

    def _last_claim(self) -> dict | None:
        """Leave the live list first, then look once more: a job queued meanwhile is either seen
        here or queued while this worker already counted as gone (so its queuer starts another)."""
        workers.stopped(self.db, self.id)
        job = jobs.claim(self.db, self.id, kinds=self.kinds, stale_after=STALE_AFTER_S)
        if job is not None:
            workers.register(self.db, self.id, os.getpid(), self.host)
        return job

    def run_one(self, job_id: int) -> bool:
        """Claim and run the one job ``job_id`` (for ``--wait`` with no worker alive); False if not claimable."""
        with self._registered():
            reap_dead(self.db, self.host)
            job = jobs.claim(self.db, self.id, stale_after=STALE_AFTER_S, job_id=job_id)
            if job is None:
                return False
            self.run_job(job)
        return True

    def queue_and_run(self, kind: str, payload: dict, *, secrets: dict | None = None,
                      on_queued: Callable[[int], None] | None = None) -> int:
        """Queue a ``kind`` job already claimed by this worker (no other worker can take it) and run it here.

        For the CLI when no worker is alive, or when the job needs ``secrets`` that only this
        process holds. ``on_queued(job_id)`` is called once the row exists. Returns the job id.
        """
        with self._registered():
            reap_dead(self.db, self.host)
            with storedb.transaction(self.db):
                job_id = jobkinds.queue(self.db, kind, payload)
                job = jobs.claim(self.db, self.id, stale_after=STALE_AFTER_S, job_id=job_id)
            if on_queued is not None:
                on_queued(job_id)
            self.run_job(job, secrets=secrets)
        return job_id

    def request_stop(self) -> None:
        """Ask the worker (and its running job) to stop at the next safe point."""
        self.stopping.set()
        if self._current is not None:
            self._current._stopping.set()

    def run_job(self, job: dict, *, secrets: dict | None = None) -> None:
        """Run one claimed job to its end and record how it ended (done, failed, cancelled, released)."""
        ctx = JobContext(db_path=self.db_path, job=job, worker_id=self.id, db=self.db, secrets=dict(secrets or {}))
        if self.stopping.is_set():
            ctx._stopping.set()
        self._current = ctx
        cpu0, started = time.process_time(), time.time()
        if job["attempts"] > 1:
            events.log(self.db, "info", "worker", f"job {job['id']} resumed (attempt {job['attempts']})", job_id=job["id"], run_id=job["run_id"])
        try:
            result = _load_handler(job["kind"], remote=bool((job.get("payload") or {}).get("on")))(ctx)
        except JobStopped:
            jobs.release(self.db, job["id"], self.id)
            events.log(self.db, "info", "worker", f"job {job['id']} released for a later worker", job_id=job["id"], run_id=job["run_id"])
        except JobCancelled:
            jobs.finish(self.db, job["id"], self.id, "cancelled", error="cancelled by the user")
        except (PocketopsError, MissingDependency) as exc:
            jobs.finish(self.db, job["id"], self.id, "failed", error=str(exc))
            events.log(self.db, "error", "worker", f"job {job['id']} failed: {exc}", job_id=job["id"], run_id=job["run_id"])
        except Exception as exc:  # a bug in a handler must not kill the worker: record it whole
            jobs.finish(self.db, job["id"], self.id, "failed", error=f"{type(exc).__name__}: {exc}")
            events.log(self.db, "error", "worker", traceback.format_exc(), job_id=job["id"], run_id=job["run_id"])
        else:
            jobs.finish(self.db, job["id"], self.id, "done", result=result or {})
        finally:
            self._current = None
            _record_cpu(self.db, job, time.process_time() - cpu0, started)


def _record_cpu(db, job: dict, cpu_s: float, started: float) -> None:
    """The worker's CPU seconds on one job: the phone's own cost (Costs panel). Never fails the job."""
    try:
        from store import costs as store_costs

        store_costs.record_job_cpu(db, job, cpu_s, started, time.time())
    except Exception:  # e.g. a store from before the costs migration, or a full disk: the job's outcome stands
        pass


def live_workers(db) -> list[dict]:
    """Workers with a recent heartbeat, less those on this host whose process is gone (signal 9)."""
    host = socket.gethostname()
    found = workers.alive(db, within=WORKER_ALIVE_S)
    return [w for w in found if w["host"] != host or w["pid"] == os.getpid()
            or pid_alive(w["pid"], w.get("create_time"))]


def attached_dashboards(db) -> list[dict]:
    """Dashboards with a recent heartbeat, less those on this host whose process is gone (signal 9)."""
    host = socket.gethostname()
    found = dashboards.recent(db, within=DASHBOARD_ALIVE_S)
    return [d for d in found if d["host"] != host or d["pid"] == os.getpid() or pid_alive(d["pid"])]


def idle_exit_setting() -> float:
    """Seconds a background worker idles before leaving: ``$POCKETOPS_IDLE_EXIT_S``, else 300."""
    raw = os.environ.get("POCKETOPS_IDLE_EXIT_S", "").strip()
    if not raw:
        return DEFAULT_IDLE_EXIT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"POCKETOPS_IDLE_EXIT_S={raw!r}: expected seconds (0 or more), e.g. 300; unset it for the default")
    return value


def alive_workers(db_path: str | Path) -> list[dict]:
    """:func:`live_workers` of the database at ``db_path``."""
    return live_workers(storedb.connect(db_path))


def start_background(db_path: str | Path, log_path: str | Path | None = None, *,
                     idle_exit: float | None = None) -> subprocess.Popen:
    """Start a detached worker process that survives the dashboard closing and leaves after
    ``idle_exit`` seconds idle with no dashboard open (default :func:`idle_exit_setting`)."""
    idle_exit = idle_exit_setting() if idle_exit is None else idle_exit
    log_path = Path(log_path or paths.files_dir(db_path) / "worker.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "core.worker", "--db", str(db_path), "--idle-exit", f"{idle_exit:g}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            cwd=str(Path(__file__).resolve().parent.parent),
        )


def spawn_background(db_path: str | Path, log_path: str | Path | None = None) -> int:
    """:func:`start_background`; its pid."""
    return start_background(db_path, log_path).pid


def ensure_worker(db_path: str | Path) -> int | None:
    """Start a background worker unless one is alive; the new pid, or None if one was running."""
    if alive_workers(db_path):
        return None
    return spawn_background(db_path)


def main(argv: list[str] | None = None) -> int:
    """``python -m core.worker``: run a worker on the database; a corrupt or full database is one line, exit 1."""
    parser = argparse.ArgumentParser(prog="python -m core.worker")
    parser.add_argument("--db", default=None)
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--idle-exit", type=seconds_arg, default=None, metavar="SECONDS")
    args = parser.parse_args(argv)
    db_path = paths.db_path(args.db)
    try:
        worker = Worker(db_path, idle_exit=args.idle_exit)
        worker.install_signal_handlers()
        worker.run(once=args.once)
    except storedb.sqlite3.DatabaseError as exc:
        problem = storedb.as_corruption(exc, db_path) or storedb.full_disk_message(exc, db_path)
        if problem is None:
            raise
        print(f"pocketops worker: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
