"""Budgets, usage samples, the cost audit log and budget pauses (rows only; arithmetic is core/costs.py).

A usage sample covers ``[period_start, period_end)`` of one key (``deployment:N``, ``job:N``,
``battery``). The pair (key, period_start) is UNIQUE and a collector starts each pull where the
key's last sample ended, inside one write transaction: a pull repeated after a crash, or two
pulls overlapping, never counts a period twice.
"""
from __future__ import annotations

from store.db import Database, dumps, loads, now, one, rows, transaction

SCOPES = ("all", "local", "spaces", "gcp")
WHO = ("dashboard", "cli", "worker")


# -- budgets -------------------------------------------------------------------------------

def _budget(row: dict | None) -> dict | None:
    if row is None:
        return None
    row = dict(row)
    row["hard"] = bool(row["hard"])
    row["warn"] = loads(row["warn"], [])
    return row


def budgets(db: Database) -> list[dict]:
    """Every budget, in scope order (all, local, spaces, gcp)."""
    found = [_budget(r) for r in rows(db, "SELECT * FROM budgets")]
    return sorted(found, key=lambda b: SCOPES.index(b["scope"]) if b["scope"] in SCOPES else 99)


def get_budget(db: Database, scope: str) -> dict | None:
    """The budget of ``scope``, or None."""
    return _budget(one(db, "SELECT * FROM budgets WHERE scope = ?", (scope,)))


def set_budget(db: Database, scope: str, amount_usd: float, *, hard: bool, warn: list[float], who: str,
               figures: dict | None = None) -> dict:
    """Create or replace the budget of ``scope`` and audit it, in one transaction (values already checked)."""
    t = now()
    with transaction(db):
        db.execute(
            """INSERT INTO budgets (scope, amount_usd, hard, warn, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(scope) DO UPDATE SET amount_usd = excluded.amount_usd, hard = excluded.hard,
                                                warn = excluded.warn, updated_at = excluded.updated_at""",
            (scope, float(amount_usd), int(bool(hard)), dumps(list(warn)), t, t))
        kind = "hard" if hard else "soft"
        levels = ", ".join(f"{w:g}%" for w in warn) or "none"
        audit(db, who, "budget-set", f"{scope} budget ${amount_usd:.2f}/month ({kind}, warn at {levels})",
              scope=scope, figures={**(figures or {}), "amount_usd": float(amount_usd), "hard": bool(hard),
                                    "warn": list(warn)})
    return get_budget(db, scope)


def remove_budget(db: Database, scope: str, *, who: str, figures: dict | None = None) -> bool:
    """Delete the budget of ``scope`` (audited); False when there was none."""
    with transaction(db):
        old = get_budget(db, scope)
        if old is None:
            return False
        db.execute("DELETE FROM budgets WHERE scope = ?", (scope,))
        audit(db, who, "budget-remove", f"{scope} budget ${old['amount_usd']:.2f}/month removed", scope=scope,
              figures={**(figures or {}), "amount_usd": old["amount_usd"], "hard": old["hard"]})
    return True


# -- audit log -----------------------------------------------------------------------------

def audit(db: Database, who: str, action: str, message: str, *, scope: str | None = None,
          deployment_id: int | None = None, figures: dict | None = None) -> int:
    """Append one audit entry (who, what, the figures at that moment); its id."""
    if who not in WHO:
        raise ValueError(f"audit: who must be one of {', '.join(WHO)}, not {who!r}")
    cur = db.execute(
        "INSERT INTO cost_audit (ts, who, action, scope, deployment_id, message, figures) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (now(), who, action, scope, deployment_id, message, dumps(figures or {})))
    return cur.lastrowid


def audit_log(db: Database, *, limit: int = 100, action: str | None = None, since: float | None = None) -> list[dict]:
    """Newest audit entries first (optionally one action, or since a time)."""
    sql, params = "SELECT * FROM cost_audit WHERE 1 = 1", []
    if action:
        sql += " AND action = ?"
        params.append(action)
    if since is not None:
        sql += " AND ts >= ?"
        params.append(since)
    found = rows(db, sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
    for row in found:
        row["figures"] = loads(row["figures"], {})
    return found


def warned(db: Database, scope: str, level: float, month_start: float) -> bool:
    """True when warn ``level`` of ``scope``'s budget was already raised this month."""
    for row in audit_log(db, action="warning", since=month_start, limit=1000):
        if row["scope"] == scope and row["figures"].get("level") == level:
            return True
    return False


# -- usage samples -------------------------------------------------------------------------

def _sample(row: dict) -> dict:
    row = dict(row)
    row["usage"] = loads(row["usage"], {})
    return row


def last_end(db: Database, key: str) -> float | None:
    """Where ``key``'s newest sample ends (the next pull starts there), or None."""
    row = one(db, "SELECT MAX(period_end) AS e FROM usage_samples WHERE key = ?", (key,))
    return None if row is None or row["e"] is None else float(row["e"])


def last_sample(db: Database, key: str) -> dict | None:
    """``key``'s newest sample, or None."""
    row = one(db, "SELECT * FROM usage_samples WHERE key = ? ORDER BY period_end DESC LIMIT 1", (key,))
    return None if row is None else _sample(row)


def add_sample(db: Database, *, key: str, platform: str, deployment_id: int | None, period_start: float,
               period_end: float, usage: dict, source: str = "measured") -> bool:
    """Insert one sample unless (key, period_start) exists already; True when it was new."""
    if period_end < period_start:
        raise ValueError(f"usage sample {key}: period ends ({period_end}) before it starts ({period_start})")
    cur = db.execute(
        """INSERT OR IGNORE INTO usage_samples (key, platform, deployment_id, period_start, period_end, usage,
                                                source, collected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        (key, platform, deployment_id, float(period_start), float(period_end), dumps(usage), source, now()))
    return cur.rowcount == 1


def samples(db: Database, start: float, end: float) -> list[dict]:
    """Samples overlapping ``[start, end)``, oldest first."""
    return [_sample(r) for r in rows(
        db, "SELECT * FROM usage_samples WHERE period_end > ? AND period_start < ? ORDER BY period_end, id",
        (start, end))]


def record_job_cpu(db: Database, job: dict, cpu_s: float, started: float, ended: float) -> None:
    """The worker's own CPU seconds spent on one job (a phone cost), once per job."""
    add_sample(db, key=f"job:{job['id']}", platform="local", deployment_id=None, period_start=started,
               period_end=max(started, ended), usage={"cpu_s": round(max(0.0, cpu_s), 3), "kind": job.get("kind")})


# -- budget pauses ---------------------------------------------------------------------------

def paused(db: Database) -> list[dict]:
    """Deployments a hard budget stopped (newest first): id, target, status, paused_reason, meta."""
    found = rows(db, "SELECT id, target, version, status, paused_reason, meta FROM deployments "
                     "WHERE paused_reason IS NOT NULL ORDER BY id DESC")
    for row in found:
        row["meta"] = loads(row["meta"], {})
        row["name"] = row["meta"].get("name") or row["target"]
    return found


def set_paused(db: Database, deployment_id: int, reason: str | None, *, status: str | None = None,
               meta: dict | None = None) -> None:
    """Record (or clear, with None) why a budget stopped a deployment; optionally its status and meta keys."""
    with transaction(db):
        row = one(db, "SELECT meta FROM deployments WHERE id = ?", (deployment_id,))
        if row is None:
            raise ValueError(f"deployment {deployment_id} does not exist")
        merged = {**loads(row["meta"], {}), **(meta or {})}
        sets, params = ["paused_reason = ?", "meta = ?", "updated_at = ?"], [reason, dumps(merged), now()]
        if status is not None:
            sets.append("status = ?")
            params.append(status)
        db.execute(f"UPDATE deployments SET {', '.join(sets)} WHERE id = ?", (*params, deployment_id))


def paused_reason(db: Database, deployment_id: int) -> str | None:
    """Why a budget stopped ``deployment_id``, or None."""
    row = one(db, "SELECT paused_reason FROM deployments WHERE id = ?", (deployment_id,))
    return None if row is None else row["paused_reason"]


# -- the periodic job ------------------------------------------------------------------------

def queue_if_due(db: Database, every_s: float, since: float) -> int | None:
    """Queue a ``costs`` job when none is queued or running and the last one was queued ``every_s``
    ago (or, with none yet, ``since`` is that long ago); the new job's id, else None.

    Checked and inserted under one write lock, so idle workers never pile up duplicates.
    """
    if every_s <= 0:
        return None
    t = now()
    last = one(db, "SELECT MAX(created_at) AS t FROM jobs WHERE kind = 'costs'")
    if t - (last["t"] if last and last["t"] is not None else since) < every_s:
        return None   # not due: decided without taking the write lock
    with transaction(db):
        busy = one(db, "SELECT id FROM jobs WHERE kind = 'costs' AND status IN ('queued', 'running') LIMIT 1")
        if busy is not None:
            return None
        anything = one(db, """SELECT (SELECT COUNT(*) FROM budgets) + (SELECT COUNT(*) FROM deployments
                                WHERE status IN ('running', 'sleeping', 'deploying')) AS n""")
        if not anything["n"]:
            return None   # nothing to collect or enforce: let an idle worker stay idle
        last = one(db, "SELECT MAX(created_at) AS t FROM jobs WHERE kind = 'costs'")
        reference = last["t"] if last and last["t"] is not None else since
        if t - reference < every_s:
            return None
        from store import jobs

        return jobs.enqueue(db, "costs", {"refresh": True, "who": "worker"})
