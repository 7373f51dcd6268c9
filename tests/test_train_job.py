"""The train job through real workers: metrics reach the store, a SIGKILLed worker's run is
finished by the next one from its checkpoint, SIGTERM checkpoints and requeues, cancel stops."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import runs, worker as core_worker
from core.atomic import sha256_file
from core.datasets import load_arrays, split_indices
from core.errors import ConfigError, DatasetError
from core.trainer import read_checkpoint
from store import artifacts, events, jobs
from store import datasets as store_datasets
from store import runs as store_runs
from store.db import one, rows
from tests._pace import Pace

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parent.parent


def start_worker(db_path: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "POCKETOPS_HOME": str(db_path.parent / "home"), "PYTHONWARNINGS": "ignore", **(env or {})}
    log = open(db_path.parent / f"worker-{time.monotonic_ns()}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "core.worker", "--db", str(db_path), *extra],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def no_duplicates(db, run_id) -> list[tuple]:
    keys = [(r["kind"], r["step"]) for r in rows(db, "SELECT kind, step FROM metrics WHERE run_id = ?", (run_id,))]
    assert len(keys) == len(set(keys))
    return keys


def val_steps(db, run_id) -> list[int]:
    return [r["step"] for r in rows(db, "SELECT step FROM metrics WHERE run_id = ? AND kind = 'val' ORDER BY step", (run_id,))]


# -- in process ------------------------------------------------------------------------

def test_worker_trains_a_run_and_records_everything(digits_db, monkeypatch):
    db, db_path = digits_db
    monkeypatch.setattr(core_worker, "HEARTBEAT_S", 0.05)
    run_id, job_id = runs.new_run(db, dataset="digits", model="cnn", preset="tiny", epochs=2, threads=1)
    assert runs.run_summary(db, run_id)["status"] == "queued"
    assert core_worker.Worker(db_path, kinds=("train",)).run(once=True) == 1
    s = runs.run_summary(db, run_id)
    assert s["status"] == "done" and s["epochs_done"] == 2 == s["epochs_total"] and s["error"] is None
    assert s["metrics"]["val_accuracy"] > 0.5 and s["metrics"]["best_epoch"] in (1, 2)
    assert s["params"] == 3658 and s["size_bytes"] == 4 * 3658 and s["checkpoint_path"].endswith("best.pt")
    train = rows(db, "SELECT * FROM metrics WHERE run_id = ? AND kind = 'train' ORDER BY step", (run_id,))
    assert [r["step"] for r in train] == list(range(10, 10 * len(train) + 1, 10)) and len(train) == 31
    assert all(r["loss"] > 0 and 0 <= r["accuracy"] <= 1 and r["samples_per_s"] > 0 for r in train)
    assert val_steps(db, run_id) == [1, 2]
    for name in ("best.pt", "last.pt"):
        path = Path(s["checkpoint_path"]).parent / name
        art = artifacts.by_path(db, str(path))
        assert art["kind"] == "checkpoint" and art["run_id"] == run_id
        assert art["sha256"] == sha256_file(path) and art["size_bytes"] == path.stat().st_size
    job = jobs.get(db, job_id)
    assert job["status"] == "done" and job["result"]["val_accuracy"] == s["metrics"]["val_accuracy"]


def test_a_run_whose_data_vanished_fails_with_the_reason(digits_db):
    db, db_path = digits_db
    run_id, job_id = runs.new_run(db, dataset="digits", model="mlp", epochs=1)
    Path(one(db, "SELECT artifact_path FROM datasets WHERE name = 'digits'")["artifact_path"]).unlink()
    core_worker.Worker(db_path, kinds=("train",)).run(once=True)
    s = runs.run_summary(db, run_id)
    assert s["status"] == "failed" and "processed arrays file is missing" in s["error"]
    assert jobs.get(db, job_id)["status"] == "failed"


def test_new_run_validates_before_writing(digits_db, tmp_path):
    db, db_path = digits_db
    (tmp_path / "t.csv").write_text("f,label\n1,a\n2,a\n3,b\n4,b\n")
    from core.datasets import add_dataset

    add_dataset(db, db_path, tmp_path / "t.csv", name="table")
    with pytest.raises(DatasetError, match="known datasets: digits, table"):
        runs.new_run(db, dataset="mnist", model="cnn")
    with pytest.raises(ConfigError, match="cnn family needs image data"):
        runs.new_run(db, dataset="table", model="cnn")
    with pytest.raises(ConfigError, match="unknown training setting.*colour"):
        runs.new_run(db, dataset="digits", model="cnn", colour="red")
    with pytest.raises(ConfigError, match="epochs must be"):
        runs.new_run(db, dataset="digits", model="cnn", epochs=0)
    assert one(db, "SELECT COUNT(*) AS n FROM runs")["n"] == 0 and one(db, "SELECT COUNT(*) AS n FROM jobs")["n"] == 0


def test_cancel_and_resume_of_a_queued_run(digits_db):
    db, _ = digits_db
    run_id, job_id = runs.new_run(db, dataset="digits", model="cnn", epochs=1)
    assert runs.cancel_run(db, run_id) == "cancelled"
    assert runs.run_summary(db, run_id)["status"] == "cancelled" and jobs.get(db, job_id)["status"] == "cancelled"
    with pytest.raises(runs.RunError, match="already cancelled"):
        runs.cancel_run(db, run_id)
    new_job = runs.resume_run(db, run_id)
    assert new_job != job_id and jobs.get(db, new_job)["status"] == "queued"
    assert runs.run_summary(db, run_id)["status"] == "queued"
    with pytest.raises(runs.RunError, match="only failed or cancelled"):
        runs.resume_run(db, run_id)
    with pytest.raises(runs.RunError, match="no run with id 99"):
        runs.run_summary(db, 99)


# -- real worker processes -------------------------------------------------------------

def test_sigterm_then_sigkill_each_next_worker_resumes_from_the_checkpoint(digits_db):
    """SIGTERM: checkpoint mid-epoch, job back to the queue, clean exit. SIGKILL (Android's
    phantom process killer): the next worker reaps the dead claim and resumes from last.pt.
    In the end every batch was trained exactly once and no metric point is duplicated.
    Each worker is held (core/pace.py) at a train point of the epoch the test stops it in, so the
    moment exists however fast or slow the machine trains."""
    db, db_path = digits_db
    epochs = 4
    run_id, job_id = runs.new_run(db, dataset="digits", model="cnn", preset="small", epochs=epochs, batch_size=4,
                                  patience=50, threads=1)
    n_batches = -(-len(split_indices(load_arrays(store_datasets.by_name(db, "digits")).y)[0]) // 4)

    def mid(epoch: int) -> int:  # a train point's step (log_every 10) halfway through ``epoch``
        return ((epoch - 1) * n_batches + n_batches // 2) // 10 * 10

    pace = Pace(db_path.parent, train_step=mid(2))

    def mid_epoch():  # a train point of an epoch whose val point is not there yet
        r = one(db, "SELECT MAX(epoch) AS e FROM metrics WHERE run_id = ? AND kind = 'train'", (run_id,))
        return r["e"] is not None and r["e"] >= 2 and r["e"] > len(val_steps(db, run_id))

    # 1. SIGTERM in the middle of epoch 2
    first = start_worker(db_path, env=pace.env)
    try:
        pace.wait_held("train:step", pid=first.pid, proc=first)
        wait_for(mid_epoch, 90, "a train point in epoch 2", first)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert jobs.get(db, job_id)["status"] == "queued" and store_runs.get(db, run_id)["status"] == "queued"
    last_pt = Path(store_runs.get(db, run_id)["checkpoint_path"]).parent / "last.pt"
    stopped = read_checkpoint(last_pt)
    assert stopped["epoch"] == 1 and stopped["batch_in_epoch"] > 0  # saved at the batch it stopped on
    assert artifacts.by_path(db, str(last_pt))["sha256"] == sha256_file(last_pt)

    # 2. the next worker resumes; SIGKILL it once it has finished two more epochs
    pace.set(train_step=mid(4))
    second = start_worker(db_path, env=pace.env)
    try:
        pace.wait_held("train:step", pid=second.pid, proc=second)
        wait_for(lambda: len(val_steps(db, run_id)) >= 3, 90, "val point of epoch 3", second)
    finally:
        second.kill()
        second.wait()
    killed_at = time.time()
    done_before = store_runs.get(db, run_id)["epochs_done"]
    assert store_runs.get(db, run_id)["status"] == "running" and 3 <= done_before < epochs

    # 3. a third worker reaps the dead claim and finishes from the epoch-end checkpoint
    pace.set()  # no more holds
    third = start_worker(db_path, "--once", env=pace.env)
    assert third.wait(timeout=120) == 0
    s = runs.run_summary(db, run_id)
    assert s["status"] == "done" and s["epochs_done"] == s["epochs_total"] == epochs
    no_duplicates(db, run_id)
    assert val_steps(db, run_id) == list(range(1, epochs + 1))
    job = jobs.get(db, job_id)
    assert job["attempts"] == 3 and job["status"] == "done"
    final = read_checkpoint(last_pt)
    first_resume, second_resume = final["resumes"]
    assert (first_resume["step"], first_resume["batch_in_epoch"]) == (stopped["step"], stopped["batch_in_epoch"])
    # not started over: from the last epoch-end checkpoint (its file may trail epochs_done by
    # the one epoch whose background write the kill interrupted)
    assert second_resume["epoch"] >= max(2, done_before - 1) and second_resume["ts"] > killed_at
    msgs = [e["message"] for e in events.since(db, run_id=run_id)]
    assert sum(m.startswith("resumed from checkpoint after epoch") for m in msgs) == 2, msgs
    # the epochs finished before the kill were not trained again: their val points predate it
    early = rows(db, "SELECT ts FROM metrics WHERE run_id = ? AND kind = 'val' AND step <= ?", (run_id, done_before))
    assert len(early) == done_before and all(r["ts"] < killed_at for r in early)
    assert final["step"] == epochs * n_batches  # one optimizer step per batch, none lost or doubled


def test_cancel_stops_a_running_job_within_seconds(digits_db):
    db, db_path = digits_db
    run_id, job_id = runs.new_run(db, dataset="digits", model="cnn", preset="tiny", epochs=50, patience=50, threads=1)
    pace = Pace(db_path.parent, train_step=10)  # held at its first train point until the cancel lands
    proc = start_worker(db_path, env=pace.env)
    try:
        pace.wait_held("train:step", pid=proc.pid, proc=proc)
        wait_for(lambda: store_runs.count_metrics(db, run_id, "train") > 0, 90, "a train point", proc)
        asked = time.monotonic()
        assert runs.cancel_run(db, run_id) == "cancelling"
        wait_for(lambda: store_runs.get(db, run_id)["status"] == "cancelled", 10, "the run to be cancelled", proc)
        assert time.monotonic() - asked < 5
        wait_for(lambda: jobs.get(db, job_id)["status"] == "cancelled", 5, "the job to be cancelled", proc)
        assert store_runs.get(db, run_id)["epochs_done"] < 50
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_cancel_of_a_run_whose_worker_was_killed_ends_it_at_once(digits_db):
    """Signal 9 left the run 'running' with nobody to see a cancel request: cancelling ends it now
    (dead pid on this host, or a heartbeat older than the takeover limit elsewhere)."""
    import socket

    from store import workers

    db, _ = digits_db
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_id, job_id = runs.new_run(db, dataset="digits", model="cnn", epochs=3)
    workers.register(db, "killed", dead.pid, socket.gethostname())
    jobs.claim(db, "killed", job_id=job_id)
    store_runs.set_status(db, run_id, "running")
    assert core_worker.alive_workers(db_path=digits_db[1]) == []  # a dead pid is not a live worker
    assert runs.cancel_run(db, run_id) == "cancelled"
    assert store_runs.get(db, run_id)["status"] == "cancelled" and jobs.get(db, job_id)["status"] == "cancelled"

    run2, job2 = runs.new_run(db, dataset="digits", model="cnn", epochs=3)
    workers.register(db, "other-host", 1, "another-phone")
    jobs.claim(db, "other-host", job_id=job2)
    store_runs.set_status(db, run2, "running")
    assert runs.cancel_run(db, run2) == "cancelling"  # fresh heartbeat: its worker will see the flag
    assert jobs.get(db, job2)["status"] == "running" and jobs.cancel_requested(db, job2)
    db.execute("UPDATE jobs SET heartbeat_at = heartbeat_at - ? WHERE id = ?", (core_worker.STALE_AFTER_S + 1, job2))
    assert runs.cancel_run(db, run2) == "cancelled"  # stale: nobody holds it any more
    assert jobs.get(db, job2)["status"] == "cancelled"
