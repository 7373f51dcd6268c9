"""A truncated or corrupted last.pt: the next worker verifies the file against the store's
sha256, skips it, resumes from the newest valid checkpoint (best.pt, else from scratch) and
says so in the run's events; the run still finishes with no metric point duplicated."""
from __future__ import annotations

from pathlib import Path

import pytest

import store
from store.db import rows

pytest.importorskip("torch")

EPOCHS = 3


@pytest.fixture
def stopped_run(tmp_path, monkeypatch):
    """``(db, db_path, run_id, ckpt_dir)``: a run stopped (checkpointed, requeued) after epoch 2."""
    from core import runs, train_job
    from core import worker as core_worker
    from core.datasets import ensure_builtin

    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    ensure_builtin(db, db_path)
    monkeypatch.setattr(core_worker, "HEARTBEAT_S", 0.05)
    run_id, job_id = runs.new_run(db, dataset="digits", model="cnn", preset="tiny", epochs=EPOCHS, batch_size=64, threads=1)
    real = train_job.StoreCallbacks.on_epoch_end

    def stop_after_two(self, epoch, metrics, path):
        real(self, epoch, metrics, path)
        if epoch == 2:
            self.ctx._stopping.set()  # as SIGTERM does: checkpoint at the next batch, give the job back

    monkeypatch.setattr(train_job.StoreCallbacks, "on_epoch_end", stop_after_two)
    assert core_worker.Worker(db_path, kinds=("train",)).run_one(job_id)  # just this attempt: it ends released
    monkeypatch.setattr(train_job.StoreCallbacks, "on_epoch_end", real)
    row = runs.run_summary(db, run_id)
    assert row["status"] == "queued" and row["epochs_done"] == 2
    return db, db_path, run_id, Path(row["checkpoint_path"]).parent


def resume(db, db_path, run_id) -> tuple[dict, list[str]]:
    from core import runs
    from core import worker as core_worker

    assert core_worker.Worker(db_path, kinds=("train",)).run(once=True) == 1
    messages = [r["message"] for r in rows(db, "SELECT message FROM events WHERE run_id = ? ORDER BY id", (run_id,))]
    return runs.run_summary(db, run_id), messages


def finished_cleanly(db, run_id, summary) -> None:
    assert summary["status"] == "done" and summary["epochs_done"] == EPOCHS, summary
    keys = [(r["kind"], r["step"]) for r in rows(db, "SELECT kind, step FROM metrics WHERE run_id = ?", (run_id,))]
    assert len(keys) == len(set(keys))
    assert sorted(s for k, s in keys if k == "val") == list(range(1, EPOCHS + 1))


def test_truncated_last_resumes_from_best_and_says_so(stopped_run):
    from core.trainer import read_checkpoint

    db, db_path, run_id, ckpt_dir = stopped_run
    last, best = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    best_epoch = read_checkpoint(best)["epoch"]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    summary, messages = resume(db, db_path, run_id)
    (warning,) = [m for m in messages if "unusable" in m]
    assert warning.startswith("checkpoint last.pt is unusable, resuming from best.pt: ")
    assert "sha256" in warning and "does not match" in warning
    assert f"resumed from checkpoint after epoch {best_epoch}," in " ".join(messages)
    finished_cleanly(db, run_id, summary)


def test_same_size_corruption_is_caught_by_the_sha256(stopped_run):
    db, db_path, run_id, ckpt_dir = stopped_run
    last = ckpt_dir / "last.pt"
    data = bytearray(last.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0x5A for b in data[mid:mid + 64])  # a bad sector: size unchanged
    last.write_bytes(bytes(data))
    summary, messages = resume(db, db_path, run_id)
    assert any(m.startswith("checkpoint last.pt is unusable, resuming from best.pt") for m in messages), messages
    finished_cleanly(db, run_id, summary)


def test_both_checkpoints_bad_starts_from_scratch_and_says_so(stopped_run):
    db, db_path, run_id, ckpt_dir = stopped_run
    (ckpt_dir / "last.pt").write_bytes(b"garbage")
    (ckpt_dir / "best.pt").write_bytes(b"")
    summary, messages = resume(db, db_path, run_id)
    warnings = [m for m in messages if "unusable" in m]
    assert len(warnings) == 2, messages
    assert warnings[0].startswith("checkpoint last.pt is unusable, resuming from best.pt")
    assert warnings[1].startswith("checkpoint best.pt is unusable, resuming from scratch")
    assert summary["metrics"]["resumed"] is False
    finished_cleanly(db, run_id, summary)


def test_a_rewritten_file_whose_row_was_not_updated_yet_is_still_accepted(stopped_run):
    """A kill between the rename and the artifact update leaves the store's pending sha256."""
    from core.atomic import sha256_file
    from store import artifacts

    db, db_path, run_id, ckpt_dir = stopped_run
    last = ckpt_dir / "last.pt"
    row = artifacts.by_path(db, str(last))
    actual = sha256_file(last)
    db.execute("UPDATE artifacts SET sha256 = ? WHERE id = ?", ("0" * 64, row["id"]))
    artifacts.expect(db, str(last), actual)
    summary, messages = resume(db, db_path, run_id)
    assert not any("unusable" in m for m in messages), messages
    assert "resumed from checkpoint after epoch 2," in " ".join(messages)
    finished_cleanly(db, run_id, summary)
    assert "pending_sha256" not in artifacts.by_path(db, str(last))["meta"]


def test_trainer_without_a_store_skips_an_unreadable_last(tmp_path):
    from core.datasets import ensure_builtin, load_arrays
    from core.trainer import Callbacks, Trainer, TrainConfig
    from store import datasets as store_datasets

    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    ensure_builtin(db, db_path)
    rejected = []

    class Note(Callbacks):
        def on_checkpoint_rejected(self, path, reason, fallback):
            rejected.append((path.name, fallback, reason))

    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    (ckpt_dir / "last.pt").write_bytes(b"PK\x03\x04 not really a zip")
    cfg = TrainConfig(dataset="digits", model="cnn", preset="tiny", epochs=1, batch_size=64, threads=1,
                      pause_on_low_battery=False)
    summary = Trainer(cfg, load_arrays(store_datasets.by_name(db, "digits")), ckpt_dir, Note()).fit()
    assert summary["resumed"] is False and summary["epochs_done"] == 1
    ((name, fallback, reason),) = rejected
    assert name == "last.pt" and fallback == "scratch" and "cannot read checkpoint" in reason and "\n" not in reason
