"""Sweeps and their trials (rows only; the study itself is Optuna's, in its journal file)."""
from __future__ import annotations

from store.db import Database, dumps, loads, now, one, rows

STATUSES = ("queued", "running", "done", "failed", "cancelled")
TRIAL_STATUSES = ("running", "done", "pruned", "failed")


def _decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    row = dict(row)
    row["config"] = loads(row["config"], {})
    row["best"] = loads(row["best"])
    row["importances"] = loads(row["importances"])
    return row


def _decode_trial(row: dict) -> dict:
    row = dict(row)
    row["params"] = loads(row["params"], {})
    return row


def create(db: Database, *, dataset_id: int, model: str, config: dict) -> int:
    """A new queued sweep; its id."""
    cur = db.execute("INSERT INTO sweeps (dataset_id, model, config, created_at) VALUES (?, ?, ?, ?)",
                     (dataset_id, model, dumps(config), now()))
    return cur.lastrowid


def get(db: Database, sweep_id: int) -> dict | None:
    """One sweep with its dataset's name, or None."""
    return _decode(one(db, """SELECT sweeps.*, datasets.name AS dataset_name FROM sweeps
                              JOIN datasets ON datasets.id = sweeps.dataset_id WHERE sweeps.id = ?""", (sweep_id,)))


def job_of(db: Database, sweep_id: int) -> dict | None:
    """The newest ``sweep`` job of sweep ``sweep_id`` (its id and status), or None."""
    return one(db, """SELECT id, status FROM jobs WHERE kind = 'sweep' AND json_extract(payload, '$.sweep_id') = ?
                      ORDER BY id DESC LIMIT 1""", (sweep_id,))


def latest(db: Database) -> dict | None:
    """The newest sweep, or None."""
    found = one(db, "SELECT id FROM sweeps ORDER BY id DESC LIMIT 1")
    return get(db, found["id"]) if found else None


def update(db: Database, sweep_id: int, **fields) -> None:
    """Set columns of a sweep; ``config``, ``best`` and ``importances`` are JSON-encoded."""
    if not fields:
        return
    for key in ("config", "best", "importances"):
        if key in fields and fields[key] is not None and not isinstance(fields[key], str):
            fields[key] = dumps(fields[key])
    assignments = ", ".join(f"{k} = ?" for k in fields)
    db.execute(f"UPDATE sweeps SET {assignments} WHERE id = ?", (*fields.values(), sweep_id))


def set_status(db: Database, sweep_id: int, status: str, *, error: str | None = None) -> None:
    """Move a sweep to ``status`` (stamping when it started or ended)."""
    if status not in STATUSES:
        raise ValueError(f"sweep status must be one of {STATUSES}, not {status!r}")
    t = now()
    if status == "running":
        db.execute("UPDATE sweeps SET status = ?, started_at = COALESCE(started_at, ?), error = NULL WHERE id = ?",
                   (status, t, sweep_id))
    elif status in ("done", "failed", "cancelled"):
        db.execute("UPDATE sweeps SET status = ?, finished_at = ?, error = ? WHERE id = ?", (status, t, error, sweep_id))
    else:
        db.execute("UPDATE sweeps SET status = ? WHERE id = ?", (status, sweep_id))


def add_trial(db: Database, sweep_id: int, trial: int, run_id: int, params: dict) -> int:
    """Record trial ``trial`` of a sweep as running its run ``run_id``."""
    cur = db.execute("INSERT INTO sweep_trials (sweep_id, trial, run_id, params, created_at) VALUES (?, ?, ?, ?, ?)",
                     (sweep_id, trial, run_id, dumps(params), now()))
    return cur.lastrowid


def finish_trial(db: Database, sweep_id: int, trial: int, status: str, *, value: float | None = None,
                 pruned_epoch: int | None = None, error: str | None = None) -> bool:
    """Close a running trial (done | pruned | failed); False if it was already closed."""
    if status not in TRIAL_STATUSES[1:]:
        raise ValueError(f"trial status must be one of {TRIAL_STATUSES[1:]}, not {status!r}")
    cur = db.execute(
        """UPDATE sweep_trials SET status = ?, value = ?, pruned_epoch = ?, error = ?, finished_at = ?
           WHERE sweep_id = ? AND trial = ? AND status = 'running'""",
        (status, value, pruned_epoch, error, now(), sweep_id, trial))
    return cur.rowcount == 1


def trials(db: Database, sweep_id: int) -> list[dict]:
    """A sweep's trials in trial order."""
    return [_decode_trial(r) for r in rows(db, "SELECT * FROM sweep_trials WHERE sweep_id = ? ORDER BY trial", (sweep_id,))]


def next_trial_job(db: Database, sweep_id: int, stale_before: float) -> int | None:
    """The oldest train job of this sweep's trials that a worker may claim (queued, or running with a stale heartbeat)."""
    found = one(db, """SELECT jobs.id FROM sweep_trials JOIN jobs ON jobs.run_id = sweep_trials.run_id AND jobs.kind = 'train'
                       WHERE sweep_trials.sweep_id = ?
                         AND (jobs.status = 'queued' OR (jobs.status = 'running' AND jobs.heartbeat_at < ?))
                       ORDER BY jobs.id LIMIT 1""", (sweep_id, stale_before))
    return found["id"] if found else None


def val_points(db: Database, run_id: int) -> list[dict]:
    """A run's per-epoch validation points (epoch, loss, accuracy), in epoch order."""
    return rows(db, "SELECT epoch, loss, accuracy FROM metrics WHERE run_id = ? AND kind = 'val' ORDER BY epoch", (run_id,))
