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


MIGRATIONS: list[Callable[[Database], None]] = [_v1, _dashboards, _scale_indexes, _worker_create_time, _clusters]


def version(db: Database) -> int:
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
