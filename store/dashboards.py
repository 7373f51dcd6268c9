"""Open dashboards: a row per dashboard process, touched by its heartbeat, deleted when it closes.

A background worker started by a dashboard stays while one is attached and leaves when idle
otherwise (``core.worker``); a dashboard killed with signal 9 leaves a row whose heartbeat goes stale.
"""
from __future__ import annotations

from store.db import Database, now, rows

PRUNE_AFTER_S = 24 * 3600.0  # rows of dashboards that were killed, not closed


def attach(db: Database, dashboard_id: str, pid: int, host: str) -> None:
    """Record that this dashboard is open (and drop day-old rows of killed ones)."""
    db.execute("DELETE FROM dashboards WHERE heartbeat_at < ?", (now() - PRUNE_AFTER_S,))
    beat(db, dashboard_id, pid, host)


def beat(db: Database, dashboard_id: str, pid: int, host: str) -> None:
    """Refresh this dashboard's heartbeat (its row is written again if something removed it)."""
    t = now()
    db.execute(
        """INSERT INTO dashboards (id, pid, host, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT(id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at""",
        (dashboard_id, pid, host, t, t),
    )


def detach(db: Database, dashboard_id: str) -> None:
    """The dashboard closed."""
    db.execute("DELETE FROM dashboards WHERE id = ?", (dashboard_id,))


def recent(db: Database, *, within: float) -> list[dict]:
    """Dashboards whose heartbeat is younger than ``within`` seconds."""
    return rows(db, "SELECT * FROM dashboards WHERE heartbeat_at >= ? ORDER BY started_at", (now() - within,))
