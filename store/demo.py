"""The demo store's mark: a one-row table that only the demo seed creates.

Its presence is the flag (a real store never has it), so it is no migration and changes no
schema version. The dashboard reads it once after its first frame and shows a "demo" mark.
"""
from __future__ import annotations


from store.db import Database, now, one

TABLE = "demo_store"


def mark(db: Database, note: str) -> None:
    """Flag this store as the demo; ``note`` says where its figures come from."""
    db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (note TEXT NOT NULL, created_at REAL NOT NULL)")
    db.execute(f"DELETE FROM {TABLE}")
    db.execute(f"INSERT INTO {TABLE} (note, created_at) VALUES (?, ?)", (note, now()))


def note(db: Database) -> str | None:
    """The demo note, or None for a real store."""
    if one(db, "SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)) is None:
        return None
    row = one(db, f"SELECT note FROM {TABLE} LIMIT 1")
    return row["note"] if row else None


def is_demo(db: Database) -> bool:
    """True when the demo seed built this store."""
    return note(db) is not None
