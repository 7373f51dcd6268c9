"""Queries for retention (``pocketops gc``) and the panels' disk-use line.

Reading what an old run left behind and deleting its rows; which files to unlink, and when,
is decided in ``core.gc``.
"""
from __future__ import annotations


from store.db import Database, loads, rows

FINISHED = ("done", "failed", "cancelled")
# artifacts.kind -> the word the disk-use line shows
DISK_KINDS = {"dataset": "datasets", "checkpoint": "checkpoints", "onnx": "variants", "bundle": "bundles"}


def runs_by_age(db: Database) -> list[dict]:
    """Every run, newest first: id, status and when it ended (or was created, if it never ran)."""
    return rows(db, "SELECT id, status, created_at, COALESCE(finished_at, created_at) AS ended_at, checkpoint_path "
                    "FROM runs ORDER BY id DESC")


def checkpoints(db: Database, run_ids: list[int]) -> list[dict]:
    """Checkpoint artifact rows of these runs."""
    if not run_ids:
        return []
    marks = ", ".join("?" for _ in run_ids)
    return rows(db, f"SELECT id, run_id, path, size_bytes FROM artifacts WHERE kind = 'checkpoint' "
                    f"AND run_id IN ({marks}) ORDER BY id", tuple(run_ids))


def variants(db: Database, run_ids: list[int]) -> list[dict]:
    """Variant rows of these runs (meta decoded: it names the checkpoint a variant was built from)."""
    if not run_ids:
        return []
    marks = ", ".join("?" for _ in run_ids)
    found = rows(db, f"SELECT id, run_id, name, path, size_bytes, meta FROM variants WHERE run_id IN ({marks}) "
                     "ORDER BY id", tuple(run_ids))
    for row in found:
        row["meta"] = loads(row["meta"], {})
    return found


def bundles(db: Database, variant_ids: list[int]) -> list[dict]:
    """Bundle artifact rows built from these variants (``meta.variant_id``)."""
    if not variant_ids:
        return []
    marks = ", ".join("?" for _ in variant_ids)
    return rows(db, f"SELECT id, run_id, path, size_bytes, json_extract(meta, '$.variant_id') AS variant_id "
                    f"FROM artifacts WHERE kind = 'bundle' AND json_extract(meta, '$.variant_id') IN ({marks}) "
                    "ORDER BY id", tuple(variant_ids))


def deployed_variant_ids(db: Database) -> set[int]:
    """Variants any deployment row refers to, whatever its status (a rollback may need any of them)."""
    return {r["variant_id"] for r in rows(db, "SELECT DISTINCT variant_id FROM deployments WHERE variant_id IS NOT NULL")}


def busy_run_ids(db: Database) -> set[int]:
    """Runs a queued or running job works on (an export reading the checkpoint, a bench, a resume)."""
    return {r["run_id"] for r in rows(db, "SELECT DISTINCT run_id FROM jobs WHERE status IN ('queued', 'running') "
                                          "AND run_id IS NOT NULL")}


def variants_in_active_jobs(db: Database) -> set[int]:
    """Variants a queued or running job names (``payload.variant_id``: a deploy or plan not yet recorded)."""
    return {int(r["v"]) for r in rows(db, "SELECT DISTINCT json_extract(payload, '$.variant_id') AS v FROM jobs "
                                          "WHERE status IN ('queued', 'running') "
                                          "AND json_extract(payload, '$.variant_id') IS NOT NULL")}


def checkpoints_in_use(db: Database) -> set[str]:
    """Checkpoint paths that a variant row records as its source (``meta.checkpoint``)."""
    return {r["p"] for r in rows(db, "SELECT DISTINCT json_extract(meta, '$.checkpoint') AS p FROM variants "
                                     "WHERE json_extract(meta, '$.checkpoint') IS NOT NULL")}


def delete_rows(db: Database, *, artifact_ids: list[int], variant_ids: list[int], variant_paths: list[str]) -> None:
    """Delete these artifact and variant rows (and the onnx artifact rows of the variants' files).

    Call inside a transaction together with the checks that chose them.
    """
    for vid in variant_ids:
        db.execute("DELETE FROM variants WHERE id = ?", (vid,))
    for path in variant_paths:
        db.execute("DELETE FROM artifacts WHERE kind = 'onnx' AND path = ? "
                   "AND NOT EXISTS (SELECT 1 FROM variants WHERE variants.path = artifacts.path)", (path,))
    for aid in artifact_ids:
        db.execute("DELETE FROM artifacts WHERE id = ?", (aid,))


def path_referenced(db: Database, path: str) -> bool:
    """True when any variant or artifact row still names ``path``."""
    return bool(rows(db, "SELECT 1 FROM variants WHERE path = ? UNION ALL SELECT 1 FROM artifacts WHERE path = ? LIMIT 1",
                     (path, path)))


def set_checkpoint_path(db: Database, run_id: int, path: str | None) -> None:
    """Point a run at the checkpoint it keeps (None: it keeps none)."""
    db.execute("UPDATE runs SET checkpoint_path = ? WHERE id = ?", (path, run_id))


def disk_use(db: Database) -> dict[str, int]:
    """Bytes of registered files by kind (datasets, checkpoints, variants, bundles); every kind present."""
    found = {word: 0 for word in DISK_KINDS.values()}
    for r in rows(db, "SELECT kind, SUM(size_bytes) AS n FROM artifacts GROUP BY kind"):
        word = DISK_KINDS.get(r["kind"])
        if word:
            found[word] += int(r["n"] or 0)
    return found
