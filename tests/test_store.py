"""Store: migrations, WAL, atomic claims across processes, idempotent metrics, transactions."""
from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3
import time

import pytest
import sqlite_utils  # a test aid: schema introspection (the store itself is plain sqlite3)

import store
from store import jobs, migrations, runs
from store.db import transaction

pytestmark = pytest.mark.phone  # none of these need torch or onnx (make test-phone)


def _claim_all(db_path: str, worker: str, out, ready, start) -> None:
    db = store.connect(db_path)
    mine = []
    ready.put(worker)
    start.wait(60)
    while True:
        job = jobs.claim(db, worker)
        if job is None:
            break
        mine.append(job["id"])
        time.sleep(0.002)  # a little work, so the others get a turn
        jobs.finish(db, job["id"], worker, "done")
    out.put((worker, mine))


def _dataset_and_run(db) -> int:
    cur = db.execute(
        "INSERT INTO datasets (name, kind, fingerprint, rows, n_classes, classes, class_counts, input_shape, artifact_path, created_at)"
        " VALUES ('d', 'csv', 'f', 2, 2, '[\"a\",\"b\"]', '[1,1]', '[3]', '/x.npz', 0)"
    )
    return runs.create(db, dataset_id=cur.lastrowid, model="mlp", config={}, epochs_total=3)


def test_new_database_is_wal_and_at_latest_schema(tmp_path):
    """A fresh store is in WAL mode with every migration applied and all tables present."""
    db = store.connect(tmp_path / "p.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert migrations.version(db) == len(migrations.MIGRATIONS)
    assert {"datasets", "runs", "metrics", "jobs", "workers", "telemetry", "events", "artifacts", "variants", "deployments",
            "dashboards"} <= set(sqlite_utils.Database(db.conn).table_names())


def test_migrations_run_once_and_keep_data(tmp_path, monkeypatch):
    """Re-opening does not re-run migrations; a new migration applies on top and keeps existing rows."""
    path = tmp_path / "p.db"
    db = store.connect(path)
    shipped = migrations.version(db)
    jobs.enqueue(db, "train", {"run_id": 1})
    applied = []

    def v2(db):
        applied.append(True)
        db.execute("ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")

    shipped = len(migrations.MIGRATIONS)  # the new one is appended after every shipped migration
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, v2])
    db2 = store.connect(path)
    store.connect(path)
    assert applied == [True]
    assert migrations.version(db2) == shipped + 1
    assert db2.execute("SELECT COUNT(*), MAX(priority) FROM jobs").fetchone() == (1, 0)


def test_failed_migration_leaves_old_schema(tmp_path, monkeypatch):
    """A migration that fails half-way rolls back whole: version and tables as before."""
    path = tmp_path / "p.db"
    shipped = migrations.version(store.connect(path))

    def broken(db):
        db.execute("CREATE TABLE half (x INTEGER)")
        raise RuntimeError("boom")

    shipped = len(migrations.MIGRATIONS)
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, broken])
    with pytest.raises(RuntimeError):
        store.connect(path)
    db = store.connect(path, migrate=False)
    assert migrations.version(db) == shipped
    assert "half" not in sqlite_utils.Database(db.conn).table_names()


def test_newer_schema_is_refused(tmp_path):
    """A database written by a newer pocketops is not silently used by an older one."""
    path = tmp_path / "p.db"
    db = store.connect(path)
    db.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="newer"):
        migrations.migrate(store.connect(path, migrate=False))


def test_claims_never_collide_across_processes(tmp_path):
    """Four processes drain 120 jobs: every job is claimed exactly once."""
    path = tmp_path / "p.db"
    db = store.connect(path)
    with transaction(db):
        ids = [jobs.enqueue(db, "noop", {"i": i}) for i in range(120)]
    ctx = mp.get_context("spawn")
    out, ready, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_claim_all, args=(str(path), f"w{i}", out, ready, start)) for i in range(4)]
    for p in procs:
        p.start()
    for _ in procs:  # all four have opened the store: release them together
        ready.get(timeout=60)
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    claimed = [job_id for _, mine in results for job_id in mine]
    assert sorted(claimed) == ids
    assert len(set(claimed)) == len(claimed)
    assert sum(1 for _, mine in results if mine) >= 2, "only one process got work: the test did not exercise concurrency"
    assert db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'done'").fetchone()[0] == 120


def test_stale_claim_is_taken_over_and_old_holder_loses_it(tmp_path):
    """A job whose heartbeat is stale goes to the next worker; the old one can no longer finish it."""
    db = store.connect(tmp_path / "p.db")
    job_id = jobs.enqueue(db, "train")
    assert jobs.claim(db, "old")["id"] == job_id
    assert jobs.claim(db, "new", stale_after=30) is None  # fresh heartbeat: not taken
    db.execute("UPDATE jobs SET heartbeat_at = heartbeat_at - 60 WHERE id = ?", (job_id,))
    taken = jobs.claim(db, "new", stale_after=30)
    assert taken["id"] == job_id and taken["attempts"] == 2 and taken["worker_id"] == "new"
    assert jobs.heartbeat(db, job_id, "old") is False
    assert jobs.finish(db, job_id, "old", "done") is False
    assert jobs.finish(db, job_id, "new", "done", result={"ok": 1}) is True
    assert jobs.get(db, job_id)["result"] == {"ok": 1}


def test_cancel_queued_is_immediate_and_running_is_flagged(tmp_path):
    """Cancelling a queued job ends it; a running one gets a flag its worker reads."""
    db = store.connect(tmp_path / "p.db")
    queued = jobs.enqueue(db, "train")
    running = jobs.enqueue(db, "train")
    jobs.claim(db, "w", job_id=running)
    assert jobs.request_cancel(db, queued) == "cancelled"
    assert jobs.claim(db, "w2") is None  # the cancelled one is not claimable
    assert jobs.request_cancel(db, running) == "running"
    assert jobs.cancel_requested(db, running)
    assert jobs.request_cancel(db, 999) is None


def test_release_requeues_for_the_next_worker(tmp_path):
    """A released job (worker shutting down) is claimed again with its attempt counted."""
    db = store.connect(tmp_path / "p.db")
    job_id = jobs.enqueue(db, "train")
    jobs.claim(db, "a")
    assert jobs.release(db, job_id, "a")
    again = jobs.claim(db, "b")
    assert again["id"] == job_id and again["attempts"] == 2


def test_metric_writes_are_idempotent(tmp_path):
    """Writing the same (run, kind, step) twice stores it once; readers page by cursor."""
    db = store.connect(tmp_path / "p.db")
    run_id = _dataset_and_run(db)
    batch = [{"run_id": run_id, "kind": "train", "step": s, "epoch": 0, "loss": 1.0 / s} for s in range(1, 11)]
    assert runs.add_metrics(db, batch) == 10
    assert runs.add_metrics(db, batch[5:] + [{"run_id": run_id, "kind": "train", "step": 11, "epoch": 1, "loss": 0.05}]) == 1
    assert runs.count_metrics(db, run_id) == 11
    first = runs.metrics_since(db, run_id, 0, limit=4)
    rest = runs.metrics_since(db, run_id, first[-1]["id"])
    assert [p["step"] for p in first + rest] == list(range(1, 12))
    assert runs.metrics_since(db, run_id, rest[-1]["id"]) == []
    assert runs.last_step(db, run_id) == 11


def test_transaction_rolls_back_every_statement(tmp_path):
    """An error inside a transaction leaves no row behind."""
    db = store.connect(tmp_path / "p.db")
    with pytest.raises(ZeroDivisionError):
        with transaction(db):
            jobs.enqueue(db, "a")
            jobs.enqueue(db, "b")
            1 / 0
    assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


def test_reader_sees_writes_of_another_connection(tmp_path):
    """WAL: a second connection (the dashboard) reads what the worker committed, without blocking it."""
    path = tmp_path / "p.db"
    writer, reader = store.connect(path), store.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM jobs").fetchone()
    jobs.enqueue(writer, "train")  # a reader's open snapshot does not block the writer
    reader.execute("COMMIT")
    assert reader.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1


def test_job_payload_round_trips_json(tmp_path):
    """Payloads and results come back as the dicts that went in."""
    db = store.connect(tmp_path / "p.db")
    payload = {"run_id": 3, "variants": ["fp32", "int8-static"], "nested": {"x": 1.5}}
    job_id = jobs.enqueue(db, "export", payload)
    assert jobs.get(db, job_id)["payload"] == payload
    raw = db.execute("SELECT payload FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    assert json.loads(raw) == payload


def test_busy_timeout_is_set(tmp_path):
    """Connections wait for a lock instead of failing at once (several workers share the file)."""
    db = store.connect(tmp_path / "p.db")
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO metrics (run_id, kind, step, epoch, ts) VALUES (12345, 'train', 1, 0, 0)")
