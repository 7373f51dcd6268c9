"""Training runs and their metric points (polled by cursor)."""
from __future__ import annotations


from store.db import Database, dumps, loads, now, one, rows

STATUSES = ("queued", "running", "done", "failed", "cancelled")
METRIC_FIELDS = ("run_id", "kind", "step", "epoch", "loss", "accuracy", "samples_per_s", "ts")


def _decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    row = dict(row)
    row["config"] = loads(row["config"], {})
    row["metrics"] = loads(row["metrics"], {})
    return row


def create(db: Database, *, dataset_id: int, model: str, config: dict, epochs_total: int,
           params: int | None = None, size_bytes: int | None = None) -> int:
    """Insert a queued run; returns its id."""
    cur = db.execute(
        """INSERT INTO runs (dataset_id, model, config, epochs_total, params, size_bytes, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        (dataset_id, model, dumps(config), epochs_total, params, size_bytes, now()),
    )
    return cur.lastrowid


def get(db: Database, run_id: int) -> dict | None:
    """The run with this id (config and metrics decoded), or None."""
    return _decode(one(db, "SELECT * FROM runs WHERE id = ?", (run_id,)))


NEWEST = 2 ** 63 - 1  # larger than any row id: "before NEWEST" is the first page


def list_all(db: Database, limit: int = 200, *, before: int | None = None) -> list[dict]:
    """Up to ``limit`` runs, newest first; ``before`` (a run id) gives the page after that run.

    Paged by key (``id < before``) so a page costs the same on the thousandth run as on the first.
    """
    return [
        _decode(r)
        for r in rows(
            db,
            """SELECT runs.*, datasets.name AS dataset_name FROM runs
               JOIN datasets ON datasets.id = runs.dataset_id WHERE runs.id < ? ORDER BY runs.id DESC LIMIT ?""",
            (NEWEST if before is None else before, limit),
        )
    ]


def count(db: Database) -> int:
    """How many runs there are (the runs table's "More" says when all are shown)."""
    return one(db, "SELECT COUNT(*) AS n FROM runs")["n"]


def update(db: Database, run_id: int, **fields) -> None:
    """Set columns of a run; ``metrics`` and ``config`` are JSON-encoded."""
    if not fields:
        return
    for key in ("metrics", "config"):
        if key in fields and not isinstance(fields[key], str):
            fields[key] = dumps(fields[key])
    assignments = ", ".join(f"{k} = ?" for k in fields)
    db.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*fields.values(), run_id))


def set_status(db: Database, run_id: int, status: str, *, error: str | None = None) -> None:
    """Set a run's status, stamping started_at on the first start and finished_at at the end."""
    if status not in STATUSES:
        raise ValueError(f"run status must be one of {STATUSES}, not {status!r}")
    t = now()
    if status == "running":
        db.execute("UPDATE runs SET status = ?, started_at = COALESCE(started_at, ?), error = NULL WHERE id = ?", (status, t, run_id))
    elif status in ("done", "failed", "cancelled"):
        db.execute("UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE id = ?", (status, t, error, run_id))
    else:
        db.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))


def add_metrics(db: Database, points: list[dict]) -> int:
    """Write a batch of metric points in one statement; a point already written is skipped.

    Each point has ``run_id``, ``kind`` ('train' or 'val'), ``step``, ``epoch`` and any of
    ``loss``, ``accuracy``, ``samples_per_s``. Returns how many new points were stored.
    """
    if not points:
        return 0
    t = now()
    values = [tuple(p.get(f, t if f == "ts" else None) for f in METRIC_FIELDS) for p in points]
    before = db.conn.total_changes
    db.conn.executemany(
        f"INSERT OR IGNORE INTO metrics ({', '.join(METRIC_FIELDS)}) VALUES ({', '.join('?' * len(METRIC_FIELDS))})",
        values,
    )
    return db.conn.total_changes - before


def metrics_since(db: Database, run_id: int, after_id: int = 0, limit: int = 5000) -> list[dict]:
    """Points of a run newer than the cursor ``after_id`` (the last ``id`` the reader has)."""
    return rows(
        db,
        "SELECT * FROM metrics WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?",
        (run_id, after_id, limit),
    )


def last_step(db: Database, run_id: int, kind: str = "train") -> int:
    """The highest ``step`` recorded for a run's metrics of ``kind`` (0 when none)."""
    found = one(db, "SELECT MAX(step) AS s FROM metrics WHERE run_id = ? AND kind = ?", (run_id, kind))
    return found["s"] or 0 if found else 0


def count_metrics(db: Database, run_id: int, kind: str | None = None) -> int:
    """How many metric points a run has, optionally of one ``kind``."""
    if kind:
        return one(db, "SELECT COUNT(*) AS n FROM metrics WHERE run_id = ? AND kind = ?", (run_id, kind))["n"]
    return one(db, "SELECT COUNT(*) AS n FROM metrics WHERE run_id = ?", (run_id,))["n"]
