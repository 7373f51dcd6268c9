"""Connections: WAL, busy timeout, explicit transactions, one connection per thread."""
from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import sqlite_utils

BUSY_TIMEOUT_MS = 30_000
_local = threading.local()


def now() -> float:
    """Wall-clock seconds since the epoch; every timestamp in the store uses it."""
    return time.time()


def connect(path: str | Path, *, migrate: bool = True) -> sqlite_utils.Database:
    """Open (and create or migrate) the database at ``path``.

    The connection is in autocommit mode: each statement commits on its own unless it runs
    inside :func:`transaction`. A connection belongs to the thread that opened it; use
    :func:`thread_db` to get one per thread.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal" and str(path) != ":memory:":
        raise sqlite3.OperationalError(f"{path}: could not switch to WAL journal mode (got {mode})")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    db = sqlite_utils.Database(conn)
    if migrate:
        from store.migrations import migrate as run_migrations

        run_migrations(db)
    return db


def thread_db(path: str | Path) -> sqlite_utils.Database:
    """The calling thread's connection to ``path``, opened on first use."""
    cache: dict[str, sqlite_utils.Database] = getattr(_local, "dbs", None) or {}
    _local.dbs = cache
    key = str(Path(path).resolve())
    if key not in cache:
        cache[key] = connect(path)
    return cache[key]


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database, *, immediate: bool = True) -> Iterator[sqlite_utils.Database]:
    """All statements inside commit together or not at all.

    ``BEGIN IMMEDIATE`` takes the write lock up front, so two writers never deadlock on an
    upgrade from read to write. Nested use joins the outer transaction.
    """
    conn = db.conn
    if conn.in_transaction:
        yield db
        return
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield db
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def loads(text: str | None, default: Any = None) -> Any:
    if text is None or text == "":
        return default
    return json.loads(text)


def rows(db: sqlite_utils.Database, sql: str, params: tuple | dict = ()) -> list[dict]:
    """Run a query and return plain dicts."""
    cur = db.execute(sql, params)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def one(db: sqlite_utils.Database, sql: str, params: tuple | dict = ()) -> dict | None:
    found = rows(db, sql, params)
    return found[0] if found else None
