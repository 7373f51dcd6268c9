"""Ray clusters the phone can send jobs to, and the Ray job each remote job runs as.

A cluster row names the environment variable that holds its token (``token_env``), never
the token itself: secrets stay out of SQLite.
"""
from __future__ import annotations

from store.db import Database, now, one, rows


def add(db: Database, *, name: str, address: str, token_env: str | None = None, shared_dir: str | None = None) -> int:
    """Insert a cluster; its id (a second cluster of the same name is an IntegrityError)."""
    cur = db.execute(
        "INSERT INTO clusters (name, address, token_env, shared_dir, created_at) VALUES (?, ?, ?, ?, ?)",
        (name, address, token_env, shared_dir, now()),
    )
    return cur.lastrowid


def get(db: Database, name: str) -> dict | None:
    """The cluster called ``name``, or None."""
    return one(db, "SELECT * FROM clusters WHERE name = ?", (name,))


def list_all(db: Database) -> list[dict]:
    """Every cluster, by name."""
    return rows(db, "SELECT * FROM clusters ORDER BY name")


def remove(db: Database, name: str) -> bool:
    """Forget a cluster; False if there was none of that name."""
    return db.execute("DELETE FROM clusters WHERE name = ?", (name,)).rowcount == 1


def remote_job(db: Database, job_id: int) -> dict | None:
    """The Ray job that our job ``job_id`` runs as, or None if it was never submitted."""
    return one(db, "SELECT * FROM remote_jobs WHERE job_id = ?", (job_id,))


def start_remote_job(db: Database, job_id: int, cluster: str, submission_id: str) -> None:
    """Record the Ray submission id before submitting, so a worker killed mid-submit finds it."""
    db.execute(
        """INSERT INTO remote_jobs (job_id, cluster, submission_id, lines_applied, status, updated_at)
           VALUES (?, ?, ?, 0, 'submitting', ?)""",
        (job_id, cluster, submission_id, now()),
    )


def update_remote_job(db: Database, job_id: int, **fields) -> None:
    """Set columns of a remote job (``lines_applied``, ``status``)."""
    if fields:
        fields["updated_at"] = now()
        assignments = ", ".join(f"{k} = ?" for k in fields)
        db.execute(f"UPDATE remote_jobs SET {assignments} WHERE job_id = ?", (*fields.values(), job_id))
