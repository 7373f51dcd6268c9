"""Model variants (fp32, fp16, int8-…, or a model registered from elsewhere) and their benchmarks."""
from __future__ import annotations


from store.db import Database, dumps, loads, now, one, rows

STATUSES = ("built", "benchmarked", "failed")


def _decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    row = dict(row)
    row["bench"] = loads(row["bench"], {})
    row["meta"] = loads(row["meta"], {})
    return row


def insert(db: Database, *, name: str, path: str, sha256: str, size_bytes: int,
           run_id: int | None = None, meta: dict | None = None, status: str = "built", bench: dict | None = None) -> int:
    """Register a model variant (an ONNX file) with its sha256 and size; returns its id."""
    if status not in STATUSES:
        raise ValueError(f"variant status must be one of {STATUSES}, not {status!r}")
    cur = db.execute(
        """INSERT INTO variants (run_id, name, path, sha256, size_bytes, status, bench, meta, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (run_id, name, path, sha256, size_bytes, status, dumps(bench or {}), dumps(meta or {}), now()),
    )
    return cur.lastrowid


def get(db: Database, variant_id: int) -> dict | None:
    """The variant with this id (bench and meta decoded), or None."""
    return _decode(one(db, "SELECT * FROM variants WHERE id = ?", (variant_id,)))


def by_path(db: Database, path: str) -> dict | None:
    """The newest variant registered for ``path``, or None."""
    return _decode(one(db, "SELECT * FROM variants WHERE path = ? ORDER BY id DESC LIMIT 1", (path,)))


def for_run(db: Database, run_id: int) -> list[dict]:
    """Every variant ever built for a run, oldest first."""
    return [_decode(r) for r in rows(db, "SELECT * FROM variants WHERE run_id = ? ORDER BY id", (run_id,))]


def for_job(db: Database, job_id: int) -> list[dict]:
    """The variants an export job registered (``meta.job_id``), oldest first."""
    return [_decode(r) for r in rows(
        db, "SELECT * FROM variants WHERE json_extract(meta, '$.job_id') = ? ORDER BY id", (job_id,))]


def latest_for_run(db: Database, run_id: int) -> list[dict]:
    """The newest variant of each name for a run (what the Quantize panel compares)."""
    return [_decode(r) for r in rows(
        db,
        """SELECT * FROM variants WHERE id IN (SELECT MAX(id) FROM variants WHERE run_id = ? GROUP BY name)
           ORDER BY id""",
        (run_id,),
    )]


def list_all(db: Database, *, run_id: int | None = None, limit: int = 500) -> list[dict]:
    """Up to ``limit`` variants, newest first, optionally of one run only."""
    if run_id is None:
        found = rows(db, "SELECT * FROM variants ORDER BY id DESC LIMIT ?", (limit,))
    else:
        found = rows(db, "SELECT * FROM variants WHERE run_id = ? ORDER BY id DESC LIMIT ?", (run_id, limit))
    return [_decode(r) for r in found]


def runs_with_variants(db: Database) -> list[int]:
    """Ids of the runs that have at least one variant, newest first."""
    return [r["run_id"] for r in rows(db, "SELECT DISTINCT run_id FROM variants WHERE run_id IS NOT NULL ORDER BY run_id DESC")]


def set_bench(db: Database, variant_id: int, bench: dict) -> None:
    """Store a benchmark's figures; the variant becomes 'benchmarked'."""
    db.execute("UPDATE variants SET bench = ?, status = 'benchmarked' WHERE id = ?", (dumps(bench), variant_id))


def set_failed(db: Database, variant_id: int, error: str) -> None:
    """Mark a variant failed; the error goes into its ``bench`` so the panel can show it."""
    db.execute("UPDATE variants SET bench = ?, status = 'failed' WHERE id = ?", (dumps({"error": error}), variant_id))


def update_meta(db: Database, variant_id: int, **values) -> None:
    """Merge ``values`` into a variant's meta; KeyError if there is no such variant."""
    row = get(db, variant_id)
    if row is None:
        raise KeyError(f"no variant {variant_id}")
    meta = {**row["meta"], **values}
    db.execute("UPDATE variants SET meta = ? WHERE id = ?", (dumps(meta), variant_id))
