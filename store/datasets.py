"""Registered datasets. The processed arrays live in an artifact file; this is the index."""
from __future__ import annotations


from store.db import Database, dumps, loads, now, one, rows

_JSON = ("classes", "class_counts", "input_shape", "meta")


def _decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    row = dict(row)
    for key in _JSON:
        row[key] = loads(row[key], {} if key == "meta" else [])
    return row


def insert(
    db: Database,
    *,
    name: str,
    kind: str,
    source: str | None,
    fingerprint: str,
    rows_count: int,
    classes: list[str],
    class_counts: list[int],
    input_shape: list[int],
    artifact_path: str,
    meta: dict | None = None,
) -> int:
    """Register a processed dataset; returns its id (``n_classes`` is taken from ``classes``)."""
    cur = db.execute(
        """INSERT INTO datasets (name, kind, source, fingerprint, rows, n_classes, classes, class_counts,
                                 input_shape, artifact_path, meta, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            name, kind, source, fingerprint, rows_count, len(classes), dumps(classes), dumps(class_counts),
            dumps(input_shape), artifact_path, dumps(meta or {}), now(),
        ),
    )
    return cur.lastrowid


def by_name(db: Database, name: str) -> dict | None:
    """The dataset named ``name`` (JSON columns decoded), or None."""
    return _decode(one(db, "SELECT * FROM datasets WHERE name = ?", (name,)))


def get(db: Database, dataset_id: int) -> dict | None:
    """The dataset with this id (JSON columns decoded), or None."""
    return _decode(one(db, "SELECT * FROM datasets WHERE id = ?", (dataset_id,)))


def list_all(db: Database) -> list[dict]:
    """Every registered dataset, oldest first."""
    return [_decode(r) for r in rows(db, "SELECT * FROM datasets ORDER BY id")]


def delete(db: Database, dataset_id: int) -> bool:
    """Remove a dataset's row. Refused (False) while runs refer to it."""
    if one(db, "SELECT 1 AS x FROM runs WHERE dataset_id = ? LIMIT 1", (dataset_id,)):
        return False
    return db.execute("DELETE FROM datasets WHERE id = ?", (dataset_id,)).rowcount == 1
