"""Deployment rows: one per release of a variant to a target (never holds secrets).

A release belongs to a *line*: the same target and name (``meta.name``: "local", a Space id, a
function name). Versions count up per line; rollback and supersede stay inside a line.
"""
from __future__ import annotations


from store.db import Database, dumps, loads, now, one, rows

LIVE = ("deploying", "running", "sleeping")
# Statuses of a release that once served and could serve again (rollback candidates), with
# meta.served set when its deploy went through: "deploying" is a Space still building it.
SERVED = ("running", "sleeping", "deploying", "superseded", "rolled-back", "stopped")
_UPDATABLE = {"status", "url", "health_latency_ms", "cold_start_ms", "error", "variant_id"}


def _decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    row = dict(row)
    row["meta"] = loads(row["meta"], {})
    row["name"] = row["meta"].get("name") or row["target"]
    return row


def create(db: Database, *, variant_id: int | None, target: str, name: str, status: str = "deploying",
           meta: dict | None = None) -> dict:
    """Insert the next release of the line (target, name); returns the row."""
    t = now()
    version = next_version(db, target, name)
    cur = db.execute(
        """INSERT INTO deployments (variant_id, target, version, status, meta, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        (variant_id, target, version, status, dumps({**(meta or {}), "name": name}), t, t),
    )
    return get(db, cur.lastrowid)


def next_version(db: Database, target: str, name: str) -> int:
    """The version number the next release of ``name`` on ``target`` gets (1 for the first)."""
    row = one(db, """SELECT MAX(version) AS v FROM deployments
                     WHERE target = ? AND COALESCE(json_extract(meta, '$.name'), target) = ?""", (target, name))
    return int(row["v"] or 0) + 1


def get(db: Database, deployment_id: int) -> dict | None:
    """The deployment with this id (meta decoded), or None."""
    return _decode(one(db, "SELECT * FROM deployments WHERE id = ?", (deployment_id,)))


def update(db: Database, deployment_id: int, *, meta: dict | None = None, **fields) -> dict:
    """Set columns (status, url, latencies, error, variant_id) and merge ``meta``; bumps updated_at."""
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"deployments.update: unknown field(s) {sorted(unknown)}")
    sets, params = ["updated_at = ?"], [now()]
    for key, value in fields.items():
        sets.append(f"{key} = ?")
        params.append(value)
    if meta:
        current = get(db, deployment_id)
        merged = {**(current["meta"] if current else {}), **meta}
        sets.append("meta = ?")
        params.append(dumps(merged))
    db.execute(f"UPDATE deployments SET {', '.join(sets)} WHERE id = ?", (*params, deployment_id))
    return get(db, deployment_id)


def list_all(db: Database, *, target: str | None = None, limit: int = 200, before: int | None = None) -> list[dict]:
    """Newest first; ``before`` (a deployment id) gives the page after it (paged by key, never by offset)."""
    before = 2 ** 63 - 1 if before is None else before
    if target:
        found = rows(db, "SELECT * FROM deployments WHERE target = ? AND id < ? ORDER BY id DESC LIMIT ?",
                     (target, before, limit))
    else:
        found = rows(db, "SELECT * FROM deployments WHERE id < ? ORDER BY id DESC LIMIT ?", (before, limit))
    return [_decode(r) for r in found]


def live(db: Database, target: str, name: str, *, exclude_id: int | None = None) -> dict | None:
    """The release currently serving the line (running or sleeping), if any."""
    return _decode(one(
        db,
        """SELECT * FROM deployments WHERE target = ? AND COALESCE(json_extract(meta, '$.name'), target) = ?
           AND status IN ('running', 'sleeping') AND id != ? ORDER BY id DESC LIMIT 1""",
        (target, name, exclude_id or -1),
    ))


def current(db: Database, target: str, name: str, *, exclude_id: int | None = None) -> list[dict]:
    """Every release of the line still marked deploying, running or sleeping (a new release supersedes them all)."""
    marks = ", ".join("?" for _ in LIVE)
    found = rows(
        db,
        f"""SELECT * FROM deployments WHERE target = ? AND COALESCE(json_extract(meta, '$.name'), target) = ?
            AND status IN ({marks}) AND id != ? ORDER BY id DESC""",
        (target, name, *LIVE, exclude_id or -1),
    )
    return [_decode(r) for r in found]


def previous_served(db: Database, target: str, name: str, before_id: int) -> dict | None:
    """The newest release of the line older than ``before_id`` that once served successfully."""
    marks = ", ".join("?" for _ in SERVED)
    return _decode(one(
        db,
        f"""SELECT * FROM deployments WHERE target = ? AND COALESCE(json_extract(meta, '$.name'), target) = ?
            AND id < ? AND status IN ({marks}) AND json_extract(meta, '$.served') = 1
            ORDER BY id DESC LIMIT 1""",
        (target, name, before_id, *SERVED),
    ))


def latest_per_line(db: Database) -> list[dict]:
    """One release per line, ordered by target then id (the Deploy panel's rows): the one serving
    (running or sleeping) if any, else the newest. A failed attempt after it does not hide what serves."""
    found = rows(
        db,
        """SELECT d.* FROM deployments d JOIN (
               SELECT COALESCE(MAX(CASE WHEN status IN ('running', 'sleeping') THEN id END), MAX(id)) AS id
               FROM deployments
               GROUP BY target, COALESCE(json_extract(meta, '$.name'), target)) pick ON pick.id = d.id
           ORDER BY d.target, d.id""",
    )
    return [_decode(r) for r in found]


def variant(db: Database, variant_id: int) -> dict | None:
    """The variant row to deploy (meta and bench decoded)."""
    row = one(db, "SELECT * FROM variants WHERE id = ?", (variant_id,))
    if row is None:
        return None
    row = dict(row)
    row["meta"] = loads(row["meta"], {})
    row["bench"] = loads(row["bench"], {})
    return row


def variants(db: Database, limit: int = 100) -> list[dict]:
    """Variants to offer in the deploy form, newest first."""
    found = rows(db, "SELECT id, run_id, name, size_bytes, status, meta FROM variants ORDER BY id DESC LIMIT ?", (limit,))
    for row in found:
        row["meta"] = loads(row["meta"], {})
    return found
