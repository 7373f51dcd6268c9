"""Device load samples (CPU, RAM, battery, temperature); unknown values stay NULL."""
from __future__ import annotations


from store.db import Database, now, one, rows

FIELDS = ("cpu_percent", "ram_used_mb", "ram_total_mb", "battery_percent", "charging", "temperature_c")


def record(db: Database, source: str, sample: dict) -> int:
    """Store one device sample from ``source`` and drop samples older than a day; returns its id."""
    values = [sample.get(f) for f in FIELDS]
    cur = db.execute(
        f"INSERT INTO telemetry (ts, source, {', '.join(FIELDS)}) VALUES (?, ?, {', '.join('?' * len(FIELDS))})",
        (now(), source, *values),
    )
    # Keep the table small on a phone: a day of 2-second samples is plenty.
    db.execute("DELETE FROM telemetry WHERE ts < ?", (now() - 86_400,))
    return cur.lastrowid


def latest(db: Database) -> dict | None:
    """The newest device sample, or None."""
    return one(db, "SELECT * FROM telemetry ORDER BY id DESC LIMIT 1")


def since(db: Database, after_id: int = 0, limit: int = 500) -> list[dict]:
    """Device samples newer than the cursor ``after_id``, oldest first."""
    return rows(db, "SELECT * FROM telemetry WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
