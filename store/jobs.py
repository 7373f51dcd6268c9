"""The job queue: enqueue, atomic claim, heartbeat, cancel, finish, release.

A claim is one ``UPDATE ... RETURNING`` statement, atomic in SQLite, so several worker
processes never take the same job. A running job whose heartbeat is older than
``stale_after`` seconds belongs to a dead worker and is claimed again by the next one.
"""
from __future__ import annotations


from store.db import Database, dumps, loads, now, one, rows

ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled")


def _decode(job: dict | None) -> dict | None:
    if job is None:
        return None
    job = dict(job)
    job["payload"] = loads(job["payload"], {})
    job["progress"] = loads(job["progress"], {})
    job["result"] = loads(job["result"])
    return job


def enqueue(db: Database, kind: str, payload: dict | None = None, *, run_id: int | None = None) -> int:
    """Queue a job of ``kind`` with its payload; returns its id. Callers go through core.jobkinds."""
    cur = db.execute(
        "INSERT INTO jobs (kind, payload, run_id, created_at) VALUES (?, ?, ?, ?)",
        (kind, dumps(payload or {}), run_id, now()),
    )
    return cur.lastrowid


def get(db: Database, job_id: int) -> dict | None:
    """The job with this id (payload, progress and result decoded), or None."""
    return _decode(one(db, "SELECT * FROM jobs WHERE id = ?", (job_id,)))


def claim(
    db: Database,
    worker_id: str,
    *,
    kinds: tuple[str, ...] | None = None,
    stale_after: float = 30.0,
    job_id: int | None = None,
) -> dict | None:
    """Take the oldest runnable job (queued, or running with a stale heartbeat); None if none."""
    t = now()
    where = "(status = 'queued' OR (status = 'running' AND heartbeat_at < :stale))"
    params: dict = {"stale": t - stale_after, "worker": worker_id, "t": t}
    if kinds:
        marks = ", ".join(f":k{i}" for i in range(len(kinds)))
        where += f" AND kind IN ({marks})"
        params.update({f"k{i}": k for i, k in enumerate(kinds)})
    if job_id is not None:
        where += " AND id = :job_id"
        params["job_id"] = job_id
    found = rows(
        db,
        f"""
        UPDATE jobs SET status = 'running', worker_id = :worker, claimed_at = :t,
                        heartbeat_at = :t, attempts = attempts + 1
        WHERE id = (SELECT id FROM jobs WHERE {where} ORDER BY id LIMIT 1)
          AND {where}
        RETURNING *
        """,
        params,
    )
    return _decode(found[0]) if found else None


def heartbeat(db: Database, job_id: int, worker_id: str, progress: dict | None = None) -> bool:
    """Refresh the claim; False if this worker no longer holds the job (taken over)."""
    if progress is None:
        cur = db.execute(
            "UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND worker_id = ? AND status = 'running'",
            (now(), job_id, worker_id),
        )
    else:
        cur = db.execute(
            "UPDATE jobs SET heartbeat_at = ?, progress = ? WHERE id = ? AND worker_id = ? AND status = 'running'",
            (now(), dumps(progress), job_id, worker_id),
        )
    return cur.rowcount == 1


def request_cancel(db: Database, job_id: int, *, stale_before: float | None = None) -> str | None:
    """Ask for a cancel. A queued job is cancelled at once; a running one when its worker sees it,
    or at once if its heartbeat is older than ``stale_before`` (its worker is gone: nobody would see it).

    Returns the job's status after the request, or None if there is no such job.
    """
    db.execute(
        """UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished_at = :t, worker_id = NULL
           WHERE id = :id AND (status = 'queued' OR (status = 'running' AND heartbeat_at < :stale))""",
        {"t": now(), "id": job_id, "stale": stale_before if stale_before is not None else float("-inf")},
    )
    db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'", (job_id,))
    found = one(db, "SELECT status FROM jobs WHERE id = ?", (job_id,))
    return found["status"] if found else None


def cancel_requested(db: Database, job_id: int) -> bool:
    """True once someone asked to cancel this running job (the worker polls it)."""
    found = one(db, "SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
    return bool(found and found["cancel_requested"])


def finish(
    db: Database,
    job_id: int,
    worker_id: str,
    status: str,
    *,
    result: dict | None = None,
    error: str | None = None,
) -> bool:
    """Record the end of a job this worker holds. False if another worker took it over."""
    if status not in FINAL:
        raise ValueError(f"finish status must be one of {FINAL}, not {status!r}")
    cur = db.execute(
        """UPDATE jobs SET status = ?, result = ?, error = ?, finished_at = ?, heartbeat_at = ?
           WHERE id = ? AND worker_id = ? AND status = 'running'""",
        (status, dumps(result) if result is not None else None, error, now(), now(), job_id, worker_id),
    )
    return cur.rowcount == 1


def release(db: Database, job_id: int, worker_id: str) -> bool:
    """Give a running job back to the queue (worker shutting down); the next claim resumes it."""
    cur = db.execute(
        "UPDATE jobs SET status = 'queued', worker_id = NULL WHERE id = ? AND worker_id = ? AND status = 'running'",
        (job_id, worker_id),
    )
    return cur.rowcount == 1


def list_jobs(db: Database, *, status: str | None = None, limit: int = 100) -> list[dict]:
    """Up to ``limit`` jobs, newest first, optionally only those with ``status``."""
    if status:
        found = rows(db, "SELECT * FROM jobs WHERE status = ? ORDER BY id DESC LIMIT ?", (status, limit))
    else:
        found = rows(db, "SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
    return [_decode(j) for j in found]


def latest_for_run(db: Database, run_id: int, kind: str | None = None) -> dict | None:
    """A run's newest job, optionally of one ``kind``; None if it has none."""
    if kind:
        return _decode(one(db, "SELECT * FROM jobs WHERE run_id = ? AND kind = ? ORDER BY id DESC LIMIT 1", (run_id, kind)))
    return _decode(one(db, "SELECT * FROM jobs WHERE run_id = ? ORDER BY id DESC LIMIT 1", (run_id,)))


def pending(db: Database) -> int:
    """Jobs queued or running: with no live worker, someone must start one."""
    return db.execute("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0]


def latest_of_kind(db: Database, kind: str) -> dict | None:
    """The newest job of ``kind`` (a periodic kind's scheduler asks when the last one was queued)."""
    return _decode(one(db, "SELECT * FROM jobs WHERE kind = ? ORDER BY id DESC LIMIT 1", (kind,)))


def requeue_finished(db: Database, job_id: int) -> bool:
    """Queue a finished job again as new (a periodic kind reuses one row instead of adding one per pass)."""
    cur = db.execute(
        """UPDATE jobs SET status = 'queued', worker_id = NULL, attempts = 0, cancel_requested = 0, progress = '{}',
                           result = NULL, error = NULL, created_at = ?, claimed_at = NULL, heartbeat_at = NULL,
                           finished_at = NULL
           WHERE id = ? AND status IN ('done', 'failed', 'cancelled')""",
        (now(), job_id),
    )
    return cur.rowcount == 1
