"""Alerts and what the monitor pulled: cursors, signals, quarantined inputs, mutes, notification attempts.

Every alert has a dedupe ``key``; opening an alert whose key exists returns the existing row, so
a retried pull (or two workers racing) never duplicates one. Never holds secrets: notification
channels are named by scheme and fingerprint, not by URL.
"""
from __future__ import annotations

from store.db import Database, dumps, loads, now, one, rows

KINDS = ("drift", "confidence", "down", "budget")
STATUSES = ("open", "acked", "resolved")
PUBLIC = ("alert_id", "kind", "deployment_id", "detector", "status", "opened_at", "request_seq", "value",
          "threshold", "message")


def _decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    row = dict(row)
    row["alert_id"] = row["id"]
    row["evidence"] = loads(row["evidence"], {})
    return row


def public(row: dict) -> dict:
    """The fields ``alerts list --json`` prints (scripts rely on exactly these)."""
    return {k: row[k] for k in PUBLIC}


def open_alert(db: Database, *, kind: str, deployment_id: int | None, detector: str | None, value: float | None,
               threshold: float | None, message: str, key: str, request_seq: int | None = None,
               evidence: dict | None = None) -> tuple[int, bool]:
    """Open an alert unless one with ``key`` exists; ``(alert_id, created)``."""
    if kind not in KINDS:
        raise ValueError(f"alert kind must be one of {', '.join(KINDS)}, not {kind!r}")
    t = now()
    cur = db.execute(
        """INSERT INTO alerts (key, kind, deployment_id, detector, request_seq, value, threshold, message,
                               evidence, opened_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING""",
        (key, kind, deployment_id, detector, request_seq, value, threshold, message, dumps(evidence or {}), t, t),
    )
    if cur.rowcount == 1:
        return cur.lastrowid, True
    return one(db, "SELECT id FROM alerts WHERE key = ?", (key,))["id"], False


def extend_quarantine(db: Database, alert_id: int, seqs: list[int]) -> bool:
    """Add quarantined seqs (the inputs after an alarm, sent in a later pull) to an alert's evidence; True if any were new."""
    found = one(db, "SELECT evidence FROM alerts WHERE id = ?", (alert_id,))
    if found is None:
        return False
    evidence = loads(found["evidence"], {})
    have = [int(s) for s in evidence.get("quarantine") or []]
    fresh = [int(s) for s in seqs if int(s) not in have]
    if not fresh:
        return False
    evidence["quarantine"] = sorted(have + fresh)
    db.execute("UPDATE alerts SET evidence = ?, updated_at = ? WHERE id = ?", (dumps(evidence), now(), alert_id))
    return True


def get(db: Database, alert_id: int) -> dict | None:
    """One alert with its evidence decoded; None if there is no such alert."""
    return _decode(one(db, "SELECT * FROM alerts WHERE id = ?", (alert_id,)))


def list_alerts(db: Database, *, include_resolved: bool = False, limit: int = 500) -> list[dict]:
    """Newest first; without ``include_resolved`` only open and acked alerts."""
    where = "" if include_resolved else "WHERE status IN ('open', 'acked')"
    found = rows(db, f"SELECT * FROM alerts {where} ORDER BY id DESC LIMIT ?", (limit,))
    return [_decode(r) for r in found]


def set_status(db: Database, alert_id: int, status: str) -> dict | None:
    """Ack or resolve (or reopen) an alert; the row after, or None if there is no such alert."""
    if status not in STATUSES:
        raise ValueError(f"alert status must be one of {', '.join(STATUSES)}, not {status!r}")
    t = now()
    stamp = {"acked": ", acked_at = :t", "resolved": ", resolved_at = :t"}.get(status, "")
    db.execute(f"UPDATE alerts SET status = :s, updated_at = :t{stamp} WHERE id = :id",
               {"s": status, "t": t, "id": alert_id})
    return get(db, alert_id)


def open_of(db: Database, deployment_id: int, kind: str) -> dict | None:
    """The newest open or acked alert of ``kind`` for a deployment."""
    return _decode(one(db, """SELECT * FROM alerts WHERE deployment_id = ? AND kind = ? AND status IN ('open', 'acked')
                              ORDER BY id DESC LIMIT 1""", (deployment_id, kind)))


def counts(db: Database) -> dict:
    """``{"open": n, "acked": n, "resolved": n}``."""
    found = {r["status"]: r["n"] for r in rows(db, "SELECT status, COUNT(*) AS n FROM alerts GROUP BY status")}
    return {s: int(found.get(s, 0)) for s in STATUSES}


# -- mutes ------------------------------------------------------------------------------------

def mute(db: Database, deployment_id: int, detector: str) -> bool:
    """Mute ``detector`` for a deployment; False if it was muted already."""
    cur = db.execute("INSERT INTO alert_mutes (deployment_id, detector, created_at) VALUES (?, ?, ?) "
                     "ON CONFLICT DO NOTHING", (deployment_id, detector, now()))
    return cur.rowcount == 1


def unmute(db: Database, deployment_id: int, detector: str) -> bool:
    """Lift a mute; False if there was none."""
    return db.execute("DELETE FROM alert_mutes WHERE deployment_id = ? AND detector = ?",
                      (deployment_id, detector)).rowcount == 1


def muted(db: Database, deployment_id: int) -> set[str]:
    """The detectors muted for a deployment."""
    return {r["detector"] for r in rows(db, "SELECT detector FROM alert_mutes WHERE deployment_id = ?", (deployment_id,))}


# -- the pull cursor and health streak ---------------------------------------------------------

def cursor(db: Database, deployment_id: int) -> dict:
    """Where the next pull starts: ``{"server_id", "seq", "failures", "last_error", "last_ok_at", "info"}``."""
    row = one(db, "SELECT * FROM monitor_cursors WHERE deployment_id = ?", (deployment_id,))
    if row is None:
        return {"deployment_id": deployment_id, "server_id": None, "seq": 0, "failures": 0, "last_error": None,
                "last_ok_at": None, "info": {}}
    row["info"] = loads(row["info"], {})
    return row


def save_cursor(db: Database, deployment_id: int, *, server_id: str, seq: int, info: dict | None = None) -> None:
    """Record a successful pull: the served side's id and last seq; clears the failure streak."""
    t = now()
    db.execute(
        """INSERT INTO monitor_cursors (deployment_id, server_id, seq, failures, last_error, last_ok_at, info, updated_at)
           VALUES (?, ?, ?, 0, NULL, ?, ?, ?)
           ON CONFLICT(deployment_id) DO UPDATE SET server_id = excluded.server_id, seq = excluded.seq,
               failures = 0, last_error = NULL, last_ok_at = excluded.last_ok_at, info = excluded.info,
               updated_at = excluded.updated_at""",
        (deployment_id, server_id, int(seq), t, dumps(info or {}), t),
    )


def record_failure(db: Database, deployment_id: int, error: str) -> int:
    """Count one more failed check in a row for a deployment; the streak length after."""
    t = now()
    db.execute(
        """INSERT INTO monitor_cursors (deployment_id, failures, last_error, updated_at) VALUES (?, 1, ?, ?)
           ON CONFLICT(deployment_id) DO UPDATE SET failures = failures + 1, last_error = excluded.last_error,
               updated_at = excluded.updated_at""",
        (deployment_id, error, t),
    )
    return int(one(db, "SELECT failures FROM monitor_cursors WHERE deployment_id = ?", (deployment_id,))["failures"])


def note(db: Database, deployment_id: int, message: str) -> bool:
    """Record why a deployment is not monitored (e.g. no /v1/monitor route) without counting a failure;
    False if that was the note already."""
    t = now()
    cur = db.execute(
        """INSERT INTO monitor_cursors (deployment_id, failures, last_error, updated_at) VALUES (?, 0, ?, ?)
           ON CONFLICT(deployment_id) DO UPDATE SET failures = 0, last_error = excluded.last_error,
               updated_at = excluded.updated_at WHERE monitor_cursors.last_error IS NOT excluded.last_error""",
        (deployment_id, message, t),
    )
    return cur.rowcount == 1


# -- signals and quarantine ---------------------------------------------------------------------

def add_signals(db: Database, deployment_id: int, server_id: str, signals: list[dict], *, keep: int = 5000) -> int:
    """Store pulled per-request signals (a seq seen before is ignored) and keep the newest ``keep``."""
    cur = db.conn.executemany(
        """INSERT INTO monitor_signals (deployment_id, server_id, seq, t, pred, confidence, distance)
           VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
        [(deployment_id, server_id, int(s["seq"]), s.get("t"), s.get("pred"), s.get("confidence"), s.get("distance"))
         for s in signals],
    )
    # Bounded whatever the traffic: the evidence charts need a window, not the history.
    db.execute("""DELETE FROM monitor_signals WHERE deployment_id = ? AND (server_id, seq) NOT IN (
                      SELECT server_id, seq FROM monitor_signals WHERE deployment_id = ?
                      ORDER BY t DESC, seq DESC LIMIT ?)""", (deployment_id, deployment_id, keep))
    return cur.rowcount


def signals(db: Database, deployment_id: int, server_id: str, *, lo: int, hi: int) -> list[dict]:
    """Signals of one server with ``lo <= seq <= hi``, in order."""
    return rows(db, """SELECT seq, t, pred, confidence, distance FROM monitor_signals
                       WHERE deployment_id = ? AND server_id = ? AND seq BETWEEN ? AND ? ORDER BY seq""",
                (deployment_id, server_id, lo, hi))


def add_quarantine(db: Database, deployment_id: int, server_id: str, items: list[dict]) -> None:
    """Store quarantined inputs (a seq seen before keeps its row and its label)."""
    db.conn.executemany(
        """INSERT INTO monitor_quarantine (deployment_id, server_id, seq, input, pred, confidence)
           VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
        [(deployment_id, server_id, int(q["seq"]), dumps(q.get("input")), q.get("pred"), q.get("confidence"))
         for q in items],
    )


def quarantine(db: Database, deployment_id: int, server_id: str, seqs: list[int]) -> list[dict]:
    """The stored quarantined inputs among ``seqs``, in seq order (index K in the CLI is the position here)."""
    if not seqs:
        return []
    marks = ", ".join("?" for _ in seqs)
    found = rows(db, f"""SELECT seq, input, pred, confidence, label FROM monitor_quarantine
                         WHERE deployment_id = ? AND server_id = ? AND seq IN ({marks}) ORDER BY seq""",
                 (deployment_id, server_id, *[int(s) for s in seqs]))
    for row in found:
        row["input"] = loads(row["input"])
    return found


def set_label(db: Database, deployment_id: int, server_id: str, seq: int, label: str | None) -> bool:
    """Label (or with None unlabel) one quarantined input; False if it is not stored."""
    return db.execute("""UPDATE monitor_quarantine SET label = ?, labelled_at = ?
                         WHERE deployment_id = ? AND server_id = ? AND seq = ?""",
                      (label, now() if label is not None else None, deployment_id, server_id, seq)).rowcount == 1


# -- notifications --------------------------------------------------------------------------------

def queue_notification(db: Database, alert_id: int, channel: str, target: str) -> bool:
    """Queue one alert for one channel (once: a second call for the same pair changes nothing)."""
    t = now()
    cur = db.execute("""INSERT INTO notifications (alert_id, channel, target, next_at, created_at)
                        VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""", (alert_id, channel, target, t, t))
    return cur.rowcount == 1


def due_notifications(db: Database, at: float | None = None, limit: int = 50) -> list[dict]:
    """Pending notifications whose next attempt is due at ``at`` (default now), oldest first."""
    return rows(db, """SELECT n.*, a.kind, a.deployment_id, a.detector, a.message, a.value, a.threshold,
                              a.request_seq, a.status AS alert_status
                       FROM notifications n JOIN alerts a ON a.id = n.alert_id
                       WHERE n.status = 'pending' AND n.next_at <= ? ORDER BY n.id LIMIT ?""",
                (now() if at is None else at, limit))


def pending_notifications(db: Database) -> int:
    """Notifications still to send (now or at a later retry)."""
    return db.execute("SELECT COUNT(*) FROM notifications WHERE status = 'pending'").fetchone()[0]


def record_attempt(db: Database, notification_id: int, *, ok: bool, error: str | None = None,
                   next_at: float | None = None) -> None:
    """One delivery attempt: sent, failed with a retry at ``next_at``, or (no ``next_at``) given up."""
    t = now()
    if ok:
        db.execute("""UPDATE notifications SET status = 'sent', attempts = attempts + 1, sent_at = ?, last_error = NULL
                      WHERE id = ?""", (t, notification_id))
    else:
        db.execute("""UPDATE notifications SET status = ?, attempts = attempts + 1, last_error = ?, next_at = ?
                      WHERE id = ?""", ("pending" if next_at is not None else "failed", error,
                                         next_at if next_at is not None else t, notification_id))


def notifications(db: Database, alert_id: int | None = None, limit: int = 100) -> list[dict]:
    """Notification rows, newest first (of one alert with ``alert_id``)."""
    if alert_id is None:
        return rows(db, "SELECT * FROM notifications ORDER BY id DESC LIMIT ?", (limit,))
    return rows(db, "SELECT * FROM notifications WHERE alert_id = ? ORDER BY id", (alert_id,))

