"""Connections: WAL, busy timeout, explicit transactions, one connection per thread.

``connect`` returns a thin :class:`Database` over the standard library's ``sqlite3``: the
store's queries are hand-written (their plans are pinned by tests/test_query_plans.py), and a
wrapper library would add an import (sqlite-utils pulls in numpy: ~0.35 s and ~23 MB here) that
the dashboard must not pay before its first frame. sqlite-utils is a test aid only (dev extra).
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

BUSY_TIMEOUT_MS = 30_000
_local = threading.local()


def now() -> float:
    """Wall-clock seconds since the epoch; every timestamp in the store uses it."""
    return time.time()


class Database:
    """A connection in autocommit mode plus the few helpers the store needs."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        """Run one statement on this connection (autocommit unless inside :func:`transaction`)."""
        return self.conn.execute(sql, params)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 10, 11, 13, 26
LOW_SPACE = 1 << 20  # below this many free bytes an I/O error is taken for a full disk
RESTORE_HINT = ("restore it from a backup: stop the workers, then copy a file made with "
                "`pocketops backup PATH` over it (or move it aside to start with an empty store)")


class CorruptDatabase(sqlite3.DatabaseError):
    """The database file is damaged or not SQLite at all; the message names it and how to restore."""

    def __init__(self, path: str | Path, detail: str):
        self.path, self.detail = str(path), detail
        super().__init__(f"{path} is damaged or not a pocketops database ({detail}); {RESTORE_HINT}")


def is_corruption(exc: BaseException) -> bool:
    """True for SQLite's "malformed" / "not a database" errors (not for locks, full disks, ...)."""
    if isinstance(exc, CorruptDatabase):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def as_corruption(exc: BaseException, path: str | Path) -> CorruptDatabase | None:
    """``exc`` as a CorruptDatabase about ``path`` if it is one, else None."""
    if isinstance(exc, CorruptDatabase):
        return exc
    return CorruptDatabase(path, str(exc)) if is_corruption(exc) else None


def full_disk_message(exc: BaseException, path: str | Path) -> str | None:
    """One line for a full disk under the database at ``path`` (SQLite says "database or disk
    is full", or "disk I/O error" when even its -shm file cannot grow), else None."""
    if not isinstance(exc, sqlite3.OperationalError):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else None
    full = primary == SQLITE_FULL or "disk is full" in str(exc)
    if not full and primary != SQLITE_IOERR:
        return None
    import shutil

    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = None
    if not full and (free is None or free >= LOW_SPACE):
        return None
    have = f"{free:,} bytes free" if free is not None else "its disk is full"
    return f"{path}: cannot write the database ({exc}; {have}); free some space and try again"


def connect(path: str | Path, *, migrate: bool = True) -> Database:
    """Open (and create or migrate) the database at ``path``.

    The connection is in autocommit mode: each statement commits on its own unless it runs
    inside :func:`transaction`. A connection belongs to the thread that opened it; use
    :func:`thread_db` to get one per thread.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal" and str(path) != ":memory:":
            raise sqlite3.OperationalError(f"{path}: could not switch to WAL journal mode (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        db = Database(conn)
        if migrate:
            from store.migrations import migrate as run_migrations

            run_migrations(db)
    except sqlite3.DatabaseError as exc:
        conn.close()
        corrupt = as_corruption(exc, path)
        if corrupt is not None:
            raise corrupt from None
        raise
    return db


def backup(db: Database, dest: str | Path) -> dict:
    """Copy the store to ``dest`` with SQLite's online backup API; ``{"path", "size_bytes", "integrity"}``.

    Safe while workers write: the copy is one consistent snapshot (in WAL mode a reader does not
    block writers). Written atomically: a temp file beside ``dest``, checked with
    ``PRAGMA integrity_check``, then renamed; a failed or damaged copy leaves no file behind.
    """
    dest = Path(dest)
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.tmp"
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
        leftover.unlink(missing_ok=True)
    try:
        target = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            db.conn.backup(target)  # all pages in one step: one snapshot, however busy the writers
            result = target.execute("PRAGMA integrity_check").fetchall()
            # A self-contained file: no -wal beside it to copy along when restoring.
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()
        if [r[0] for r in result] != ["ok"]:
            raise sqlite3.DatabaseError(f"the copy failed its integrity check: {'; '.join(str(r[0]) for r in result[:3])}")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except BaseException:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            leftover.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where directories can be synced
        fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return {"path": str(dest), "size_bytes": dest.stat().st_size, "integrity": "ok"}


def thread_db(path: str | Path) -> Database:
    """The calling thread's connection to ``path``, opened on first use."""
    cache: dict[str, Database] = getattr(_local, "dbs", None) or {}
    _local.dbs = cache
    key = str(Path(path).resolve())
    if key not in cache:
        cache[key] = connect(path)
    return cache[key]


@contextlib.contextmanager
def transaction(db: Database, *, immediate: bool = True) -> Iterator[Database]:
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
    """Compact JSON with sorted keys, as every JSON column is written."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def loads(text: str | None, default: Any = None) -> Any:
    """Decode a JSON column; ``default`` for NULL or an empty string."""
    if text is None or text == "":
        return default
    return json.loads(text)


def rows(db: Database, sql: str, params: tuple | dict = ()) -> list[dict]:
    """Run a query and return plain dicts."""
    cur = db.execute(sql, params)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def one(db: Database, sql: str, params: tuple | dict = ()) -> dict | None:
    """The first row of a query as a dict, or None."""
    found = rows(db, sql, params)
    return found[0] if found else None
