"""The recommendation's stored preferences: a global default (row 0) and per-run overrides.

Values are checked by ``core.recommend.save_prefs``; this module only reads and writes rows.
"""
from __future__ import annotations

from store.db import Database, now, rows

GLOBAL = 0  # the run_id of the global default row (run ids start at 1)


def lookup(db: Database, run_id: int | None = None) -> tuple[dict | None, dict | None]:
    """``(the run's own row, the global row)`` in one query; either may be None."""
    found = {r["run_id"]: r for r in rows(
        db, "SELECT run_id, prefer, budget_points, runtime, updated_at FROM recommend_prefs WHERE run_id IN (?, ?)",
        (GLOBAL, int(run_id or GLOBAL)))}
    return (found.get(int(run_id)) if run_id else None), found.get(GLOBAL)


def put(db: Database, run_id: int, prefer: str, budget_points: float, runtime: str = "any") -> None:
    """Store ``prefer``, ``budget_points`` and ``runtime`` for ``run_id`` (0: the global default), replacing any row."""
    db.execute(
        """INSERT INTO recommend_prefs (run_id, prefer, budget_points, runtime, updated_at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT(run_id) DO UPDATE SET prefer = excluded.prefer, budget_points = excluded.budget_points,
                                             runtime = excluded.runtime, updated_at = excluded.updated_at""",
        (int(run_id), prefer, float(budget_points), runtime, now()),
    )
