"""Files the project wrote (datasets' arrays, checkpoints, ONNX, bundles), with sha256 and size."""
from __future__ import annotations


from store.db import Database, dumps, loads, now, one, rows


def register(db: Database, *, kind: str, path: str, sha256: str, size_bytes: int,
             run_id: int | None = None, meta: dict | None = None) -> int:
    """Insert or refresh the row for ``path`` (a rewritten checkpoint keeps one row)."""
    db.execute(
        """INSERT INTO artifacts (kind, path, sha256, size_bytes, run_id, meta, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT(path) DO UPDATE SET sha256 = excluded.sha256, size_bytes = excluded.size_bytes,
                                           meta = excluded.meta, created_at = excluded.created_at""",
        (kind, path, sha256, size_bytes, run_id, dumps(meta or {}), now()),
    )
    return one(db, "SELECT id FROM artifacts WHERE path = ?", (path,))["id"]


def expect(db: Database, path: str, sha256: str) -> None:
    """Note in an existing row that ``path`` is about to be rewritten with this sha256.

    The next :func:`register` of the path clears it; until then a reader accepts either sha256.
    """
    db.execute("UPDATE artifacts SET meta = json_set(meta, '$.pending_sha256', ?) WHERE path = ?", (sha256, path))


def by_path(db: Database, path: str) -> dict | None:
    """The artifact row registered for ``path`` (meta decoded), or None."""
    row = one(db, "SELECT * FROM artifacts WHERE path = ?", (path,))
    if row:
        row["meta"] = loads(row["meta"], {})
    return row


def for_run(db: Database, run_id: int) -> list[dict]:
    """Every artifact of a run, oldest first (meta decoded)."""
    found = rows(db, "SELECT * FROM artifacts WHERE run_id = ? ORDER BY id", (run_id,))
    for row in found:
        row["meta"] = loads(row["meta"], {})
    return found
