"""Versioned schema migrations, tracked in ``PRAGMA user_version``.

Append a migration to ``MIGRATIONS``; never edit one that has shipped. Each runs in its own
transaction together with the version bump, so a crash mid-migration leaves the old schema.
"""
from __future__ import annotations

from typing import Callable


from store.db import Database, transaction

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS datasets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,                -- builtin | csv | images | text
    source TEXT,                       -- where it was added from
    fingerprint TEXT NOT NULL,         -- sha256 of the processed arrays
    rows INTEGER NOT NULL,
    n_classes INTEGER NOT NULL,
    classes TEXT NOT NULL,             -- JSON list of class names, index = label id
    class_counts TEXT NOT NULL,        -- JSON list of counts per class
    input_shape TEXT NOT NULL,         -- JSON list, one sample's shape
    artifact_path TEXT NOT NULL,       -- processed arrays (.npz)
    meta TEXT NOT NULL DEFAULT '{}',   -- JSON: feature names, preprocessing, splits
    created_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    dataset_id INTEGER NOT NULL REFERENCES datasets(id),
    model TEXT NOT NULL,               -- mlp | cnn | transformer
    config TEXT NOT NULL,              -- JSON TrainConfig
    status TEXT NOT NULL DEFAULT 'queued',  -- queued | running | done | failed | cancelled
    epochs_done INTEGER NOT NULL DEFAULT 0,
    epochs_total INTEGER NOT NULL,
    params INTEGER,
    size_bytes INTEGER,
    metrics TEXT NOT NULL DEFAULT '{}',     -- JSON summary: val_accuracy, val_loss, ...
    checkpoint_path TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);

CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY,            -- readers poll by this cursor
    run_id INTEGER NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,                -- train | val
    step INTEGER NOT NULL,             -- optimizer steps so far (train) / epoch number (val)
    epoch INTEGER NOT NULL,
    loss REAL,
    accuracy REAL,
    samples_per_s REAL,
    ts REAL NOT NULL,
    UNIQUE (run_id, kind, step)        -- a retried write never duplicates a point
);
CREATE INDEX IF NOT EXISTS metrics_run_id ON metrics(run_id, id);

CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,                -- train | export | bench | deploy | ...
    payload TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'queued',  -- queued | running | done | failed | cancelled
    run_id INTEGER REFERENCES runs(id),
    worker_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    claimed_at REAL,
    heartbeat_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, id);

CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    stopped_at REAL,
    job_id INTEGER
);

CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    source TEXT NOT NULL,              -- worker id or 'dashboard'
    cpu_percent REAL,
    ram_used_mb REAL,
    ram_total_mb REAL,
    battery_percent REAL,
    charging INTEGER,
    temperature_c REAL
);

CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    level TEXT NOT NULL,               -- info | warning | error
    source TEXT NOT NULL,
    message TEXT NOT NULL,
    run_id INTEGER,
    job_id INTEGER
);

CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,                -- dataset | checkpoint | onnx | bundle
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    run_id INTEGER,
    meta TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS variants (
    id INTEGER PRIMARY KEY,
    run_id INTEGER REFERENCES runs(id),   -- NULL for a model registered from elsewhere
    name TEXT NOT NULL,                   -- fp32 | fp16 | int8-dynamic | int8-static | custom
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'built', -- built | benchmarked | failed
    bench TEXT NOT NULL DEFAULT '{}',     -- JSON: load_ms, latency_p50_ms, ... threads
    meta TEXT NOT NULL DEFAULT '{}',      -- JSON: labels, input spec, dataset, source
    created_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY,
    variant_id INTEGER REFERENCES variants(id),
    target TEXT NOT NULL,                 -- local | spaces-static | spaces-docker | gcp
    version INTEGER NOT NULL,
    status TEXT NOT NULL,                 -- planned | deploying | running | sleeping | stopped | failed | superseded | rolled-back
    url TEXT,
    health_latency_ms REAL,
    cold_start_ms REAL,
    error TEXT,
    meta TEXT NOT NULL DEFAULT '{}',      -- target details (never secrets)
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


def _v1(db: Database) -> None:
    for statement in SCHEMA_V1.split(";"):
        if statement.strip():
            db.execute(statement)


def _dashboards(db: Database) -> None:
    """Open dashboards, so a background worker knows when nobody is watching (store/dashboards.py)."""
    db.execute(
        """CREATE TABLE IF NOT EXISTS dashboards (
               id TEXT PRIMARY KEY,
               pid INTEGER NOT NULL,
               host TEXT NOT NULL,
               started_at REAL NOT NULL,
               heartbeat_at REAL NOT NULL
           )"""
    )


def _scale_indexes(db: Database) -> None:
    """Indexes for the queries the dashboard polls, so they stay fast on a store with a year of runs."""
    for statement in (
        # A run's train job (the Training panel's progress line, every poll).
        "CREATE INDEX IF NOT EXISTS jobs_run ON jobs(run_id, kind, id)",
        # A run's variants (Quantize panel, deploy form).
        "CREATE INDEX IF NOT EXISTS variants_run ON variants(run_id, name, id)",
        # A deployment target's releases (Deploy panel history).
        "CREATE INDEX IF NOT EXISTS deployments_target ON deployments(target, id)",
        # A run's events since a cursor.
        "CREATE INDEX IF NOT EXISTS events_run ON events(run_id, id)",
        # Runs of a dataset (deleting a dataset checks there are none).
        "CREATE INDEX IF NOT EXISTS runs_dataset ON runs(dataset_id, id)",
    ):
        db.execute(statement)


def _worker_create_time(db: Database) -> None:
    # A worker's process create time, so a pid the kernel reused is not taken for the worker.
    db.execute("ALTER TABLE workers ADD COLUMN create_time REAL")


def _recommend_prefs(db: Database) -> None:
    """What the recommendation optimises and the accuracy it may give up (store/prefs.py)."""
    db.execute(
        """CREATE TABLE IF NOT EXISTS recommend_prefs (
               run_id INTEGER PRIMARY KEY,     -- 0: the global default; otherwise that run's own
               prefer TEXT NOT NULL,           -- latency | size
               budget_points REAL NOT NULL,    -- allowed accuracy drop vs the fp32 reference, in points
               updated_at REAL NOT NULL
           )"""
    )


# The deploy actions once hidden behind one "deploy" kind's "action" field, and their own kinds
# now (core.jobkinds). Frozen here: a migration must keep meaning what it meant when written.
_DEPLOY_ACTION_KINDS = {"deploy": ("deploy", ("variant_id", "target", "options")),
                        "plan": ("deploy-plan", ("variant_id", "target", "options")),
                        "status": ("deploy-status", ("deployment_id",)),
                        "rollback": ("deploy-rollback", ("deployment_id",)),
                        "stop": ("deploy-stop", ("deployment_id",))}


def _deploy_kinds(db: Database) -> None:
    """Queued (or running: a later worker may take them over) "deploy" jobs with an "action" field
    become jobs of that action's own kind."""
    import json
    import time

    for job_id, payload in db.execute(
            "SELECT id, payload FROM jobs WHERE kind = 'deploy' AND status IN ('queued', 'running')").fetchall():
        try:
            data = json.loads(payload or "{}")
        except ValueError:
            continue  # not ours to judge: the worker fails it with its own message
        if not isinstance(data, dict) or "action" not in data:
            continue
        action = data["action"]
        if action not in _DEPLOY_ACTION_KINDS:
            db.execute("UPDATE jobs SET status = 'failed', finished_at = ?, error = ? WHERE id = ?",
                       (time.time(), f"deploy job {job_id}: unknown action {action!r}; expected one of "
                                     f"{', '.join(_DEPLOY_ACTION_KINDS)}", job_id))
            continue
        kind, keep = _DEPLOY_ACTION_KINDS[action]
        fresh = {k: data[k] for k in keep if k in data}
        db.execute("UPDATE jobs SET kind = ?, payload = ? WHERE id = ?",
                   (kind, json.dumps(fresh, separators=(",", ":"), sort_keys=True), job_id))


def _costs(db: Database) -> None:
    """Budgets, usage samples (one per key and period: a repeated pull never counts twice),
    the cost audit log, and why a deployment was paused by a budget (store/costs.py)."""
    for statement in (
        """CREATE TABLE IF NOT EXISTS budgets (
               scope TEXT PRIMARY KEY,            -- all | local | spaces | gcp
               amount_usd REAL NOT NULL,
               hard INTEGER NOT NULL DEFAULT 0,
               warn TEXT NOT NULL DEFAULT '[]',   -- JSON list of percent levels
               created_at REAL NOT NULL,
               updated_at REAL NOT NULL
           )""",
        """CREATE TABLE IF NOT EXISTS usage_samples (
               id INTEGER PRIMARY KEY,
               key TEXT NOT NULL,                 -- deployment:N | job:N | battery
               platform TEXT NOT NULL,            -- local | spaces | gcp
               deployment_id INTEGER,
               period_start REAL NOT NULL,
               period_end REAL NOT NULL,
               usage TEXT NOT NULL DEFAULT '{}',  -- JSON: requests, instance_s, hours, cpu_s ...
               source TEXT NOT NULL,              -- measured | estimated
               collected_at REAL NOT NULL,
               UNIQUE (key, period_start)
           )""",
        "CREATE INDEX IF NOT EXISTS usage_samples_period ON usage_samples(period_end)",
        """CREATE TABLE IF NOT EXISTS cost_audit (
               id INTEGER PRIMARY KEY,
               ts REAL NOT NULL,
               who TEXT NOT NULL,                 -- dashboard | cli | worker
               action TEXT NOT NULL,              -- budget-set | budget-remove | refused | warning | paused | resumed
               scope TEXT,
               deployment_id INTEGER,
               message TEXT NOT NULL,
               figures TEXT NOT NULL DEFAULT '{}' -- JSON: the figures at that moment
           )""",
        "ALTER TABLE deployments ADD COLUMN paused_reason TEXT",
    ):
        db.execute(statement)


def _sweeps(db: Database) -> None:
    """Sweeps (an Optuna study driven by a ``sweep`` job) and their trials, each an ordinary run.

    Optuna's own state lives in its journal file (``sweeps.storage``), never in these tables.
    """
    db.execute(
        """CREATE TABLE IF NOT EXISTS sweeps (
               id INTEGER PRIMARY KEY,
               dataset_id INTEGER NOT NULL REFERENCES datasets(id),
               model TEXT NOT NULL,
               config TEXT NOT NULL,              -- JSON: trials, parallel, metric, direction, seed, space, ...
               status TEXT NOT NULL DEFAULT 'queued',  -- queued | running | done | failed | cancelled
               storage TEXT,                      -- Optuna journal file of the study
               best TEXT,                         -- JSON {trial, run_id, params, value} or NULL
               importances TEXT,                  -- JSON {param: importance} or NULL
               error TEXT,
               created_at REAL NOT NULL,
               started_at REAL,
               finished_at REAL
           )"""
    )
    db.execute(
        """CREATE TABLE IF NOT EXISTS sweep_trials (
               id INTEGER PRIMARY KEY,            -- readers poll by this cursor
               sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
               trial INTEGER NOT NULL,            -- Optuna's trial number
               run_id INTEGER REFERENCES runs(id),
               status TEXT NOT NULL DEFAULT 'running',  -- running | done | pruned | failed
               params TEXT NOT NULL DEFAULT '{}',
               value REAL,
               pruned_epoch INTEGER,
               error TEXT,
               created_at REAL NOT NULL,
               finished_at REAL,
               UNIQUE (sweep_id, trial)
           )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS sweep_trials_run ON sweep_trials(run_id)")


def _alerts(db: Database) -> None:
    """Alerts from served traffic, health and budgets; what the monitor pulled; mutes; notification attempts."""
    for statement in (
        # One row per alert. ``key`` is the dedupe key (e.g. "event:<deployment>:<server_id>:<event_id>"):
        # a retried pull or a second worker opening the same alert finds the row instead of adding one.
        """CREATE TABLE IF NOT EXISTS alerts (
               id INTEGER PRIMARY KEY,
               key TEXT NOT NULL UNIQUE,
               kind TEXT NOT NULL,                -- drift | confidence | down | budget
               deployment_id INTEGER,
               detector TEXT,
               status TEXT NOT NULL DEFAULT 'open',  -- open | acked | resolved
               request_seq INTEGER,
               value REAL,
               threshold REAL,
               message TEXT NOT NULL,
               evidence TEXT NOT NULL DEFAULT '{}',
               opened_at REAL NOT NULL,
               updated_at REAL NOT NULL,
               acked_at REAL,
               resolved_at REAL
           )""",
        "CREATE INDEX IF NOT EXISTS alerts_status ON alerts(status, id)",
        "CREATE INDEX IF NOT EXISTS alerts_deployment ON alerts(deployment_id, kind, status)",
        # Where the next pull of a deployment starts; a new server_id (the server restarted) resets seq.
        """CREATE TABLE IF NOT EXISTS monitor_cursors (
               deployment_id INTEGER PRIMARY KEY,
               server_id TEXT,
               seq INTEGER NOT NULL DEFAULT 0,
               failures INTEGER NOT NULL DEFAULT 0,   -- health checks failed in a row
               last_error TEXT,
               last_ok_at REAL,
               info TEXT NOT NULL DEFAULT '{}',       -- the served side's detectors and calibration
               updated_at REAL NOT NULL
           )""",
        # Per-request signals as pulled (bounded per deployment by the monitor), for the evidence charts.
        """CREATE TABLE IF NOT EXISTS monitor_signals (
               deployment_id INTEGER NOT NULL,
               server_id TEXT NOT NULL,
               seq INTEGER NOT NULL,
               t REAL,
               pred INTEGER,
               confidence REAL,
               distance REAL,
               PRIMARY KEY (deployment_id, server_id, seq)
           ) WITHOUT ROWID""",
        # Quarantined inputs (as the served side received them) and the labels the user gave them.
        """CREATE TABLE IF NOT EXISTS monitor_quarantine (
               deployment_id INTEGER NOT NULL,
               server_id TEXT NOT NULL,
               seq INTEGER NOT NULL,
               input TEXT NOT NULL,
               pred INTEGER,
               confidence REAL,
               label TEXT,
               labelled_at REAL,
               PRIMARY KEY (deployment_id, server_id, seq)
           )""",
        """CREATE TABLE IF NOT EXISTS alert_mutes (
               deployment_id INTEGER NOT NULL,
               detector TEXT NOT NULL,
               created_at REAL NOT NULL,
               PRIMARY KEY (deployment_id, detector)
           )""",
        # Notification attempts per (alert, channel). ``target`` names the channel by scheme and a
        # short fingerprint, never by its URL (URLs carry tokens).
        """CREATE TABLE IF NOT EXISTS notifications (
               id INTEGER PRIMARY KEY,
               alert_id INTEGER NOT NULL REFERENCES alerts(id),
               channel TEXT NOT NULL,             -- termux | webhook | apprise
               target TEXT NOT NULL,
               status TEXT NOT NULL DEFAULT 'pending',  -- pending | sent | failed (gave up)
               attempts INTEGER NOT NULL DEFAULT 0,
               last_error TEXT,
               next_at REAL NOT NULL,
               created_at REAL NOT NULL,
               sent_at REAL,
               UNIQUE (alert_id, target)
           )""",
        "CREATE INDEX IF NOT EXISTS notifications_due ON notifications(status, next_at)",
        # The periodic monitor's scheduler asks for the newest job of its kind every few seconds.
        "CREATE INDEX IF NOT EXISTS jobs_kind ON jobs(kind, id)",
    ):
        db.execute(statement)


def _clusters(db: Database) -> None:
    """Ray clusters (the name of the token's environment variable, never the token) and the Ray
    job each remote job runs as, with how many of its log lines the store has replayed."""
    db.execute(
        """CREATE TABLE IF NOT EXISTS clusters (
               id INTEGER PRIMARY KEY,
               name TEXT NOT NULL UNIQUE,
               address TEXT NOT NULL,
               token_env TEXT,
               shared_dir TEXT,
               created_at REAL NOT NULL
           )"""
    )
    db.execute(
        """CREATE TABLE IF NOT EXISTS remote_jobs (
               job_id INTEGER PRIMARY KEY REFERENCES jobs(id),
               cluster TEXT NOT NULL,
               submission_id TEXT NOT NULL UNIQUE,
               lines_applied INTEGER NOT NULL DEFAULT 0,
               status TEXT NOT NULL,
               updated_at REAL NOT NULL
           )"""
    )


def _recommend_runtime(db: Database) -> None:
    # The runtime the recommendation may pick: "any", or the one an app ships with (onnxruntime,
    # executorch, litert). Rows stored before keep judging every runtime.
    db.execute("ALTER TABLE recommend_prefs ADD COLUMN runtime TEXT NOT NULL DEFAULT 'any'")


MIGRATIONS: list[Callable[[Database], None]] = [_v1, _dashboards, _scale_indexes, _worker_create_time,
                                                _recommend_prefs, _deploy_kinds, _costs, _sweeps, _alerts,
                                                _clusters, _recommend_runtime]


def version(db: Database) -> int:
    """The schema version stored in the database (SQLite's ``user_version``)."""
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: Database) -> int:
    """Bring the schema to the newest version; return it. Safe to call from many processes."""
    target = len(MIGRATIONS)
    current = version(db)
    if current > target:
        raise RuntimeError(
            f"database schema version {current} is newer than this pocketops ({target}); upgrade pocketops"
        )
    if current == target:
        return current
    with transaction(db):
        # Re-read under the write lock: another process may have migrated meanwhile.
        current = version(db)
        if current > target:
            raise RuntimeError(
                f"database schema version {current} is newer than this pocketops ({target}); upgrade pocketops"
            )
        for number in range(current, target):
            MIGRATIONS[number](db)
        db.execute(f"PRAGMA user_version = {target}")
    return target
