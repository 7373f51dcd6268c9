"""A log of what happened, for the dashboard and for post-mortems. Never holds secrets."""
from __future__ import annotations


from store.db import Database, now, rows


def log(db: Database, level: str, source: str, message: str, *, run_id: int | None = None, job_id: int | None = None) -> int:
    """Append an event (level, where it came from, what happened); returns its id."""
    cur = db.execute(
        "INSERT INTO events (ts, level, source, message, run_id, job_id) VALUES (?, ?, ?, ?, ?, ?)",
        (now(), level, source, message, run_id, job_id),
    )
    return cur.lastrowid


def since(db: Database, after_id: int = 0, *, run_id: int | None = None, limit: int = 200) -> list[dict]:
    """Events newer than the cursor ``after_id``, oldest first, optionally of one run only."""
    if run_id is None:
        return rows(db, "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
    return rows(db, "SELECT * FROM events WHERE id > ? AND run_id = ? ORDER BY id LIMIT ?", (after_id, run_id, limit))
