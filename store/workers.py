"""Worker processes: registration and liveness by heartbeat."""
from __future__ import annotations


from store.db import Database, now, rows


def register(db: Database, worker_id: str, pid: int, host: str, create_time: float | None = None) -> None:
    """Record a worker; ``create_time`` (its process's start, psutil's clock) tells a reused pid apart."""
    t = now()
    db.execute(
        "INSERT OR REPLACE INTO workers (id, pid, host, started_at, heartbeat_at, create_time) VALUES (?, ?, ?, ?, ?, ?)",
        (worker_id, pid, host, t, t, create_time),
    )


def beat(db: Database, worker_id: str, job_id: int | None = None) -> None:
    """Record that a worker is alive now, and which job it holds (None when idle)."""
    db.execute("UPDATE workers SET heartbeat_at = ?, job_id = ? WHERE id = ?", (now(), job_id, worker_id))


def stopped(db: Database, worker_id: str) -> None:
    """Mark a worker as stopped; it holds no job any more."""
    db.execute("UPDATE workers SET stopped_at = ?, job_id = NULL WHERE id = ?", (now(), worker_id))


def alive(db: Database, *, within: float = 15.0) -> list[dict]:
    """Workers that have not stopped and beat within the last ``within`` seconds."""
    return rows(
        db,
        "SELECT * FROM workers WHERE stopped_at IS NULL AND heartbeat_at >= ? ORDER BY started_at",
        (now() - within,),
    )
