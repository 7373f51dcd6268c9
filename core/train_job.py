"""The worker's handler for ``train`` jobs: a Trainer whose callbacks write to the store.

Metric points are buffered and written in batches (at least every ``FLUSH_S`` and at each
epoch end), so the dashboard sees a point within a second without a write per step.
"""
from __future__ import annotations

import time
from pathlib import Path

from core import jobkinds, pace
from core.atomic import sha256_file
from core.datasets import load_arrays
from core.errors import JobCancelled, JobStopped, PocketopsError
from core.trainer import Callbacks, Trainer, TrainConfig
from store import artifacts, events, jobs
from store import datasets as store_datasets
from store import runs as store_runs
from store.db import transaction

FLUSH_S = 0.5


class StoreCallbacks(Callbacks):
    """Send the loop's progress to the store: metric points, run fields, artifacts, job progress."""

    def __init__(self, ctx, run_id: int, epochs_total: int):
        self.ctx, self.db, self.run_id, self.epochs_total = ctx, ctx.db, run_id, epochs_total
        self.buffer: list[dict] = []
        self.last_flush = time.monotonic()
        self.samples_per_s: float | None = None
        self._paced = pace.active()  # tests only: hold at a train point (core/pace.py)
        self._pace_step: int | None = None

    def flush(self) -> None:
        """Write the buffered metric points now."""
        if self.buffer:
            store_runs.add_metrics(self.db, self.buffer)
            self.buffer = []
        self.last_flush = time.monotonic()

    def check(self) -> None:
        """Flush points older than FLUSH_S, then raise if the job was cancelled or must stop."""
        if self.buffer and time.monotonic() - self.last_flush >= FLUSH_S:
            self.flush()
        self.ctx.check()
        if self._pace_step is not None:  # the first safe point after a train point
            step, self._pace_step = self._pace_step, None
            pace.hold("train:step", step=step, check=self.ctx.check, on_hold=self.flush)

    def on_start(self, *, epoch: int, step: int, resumed: bool) -> None:
        """Log a resume and report the starting epoch and step as job progress."""
        if resumed:
            self.ctx.log("info", f"resumed from checkpoint after epoch {epoch}, step {step}", run_id=self.run_id)
        self.ctx.progress(epoch=epoch, epochs=self.epochs_total, step=step)

    def on_train_point(self, step, epoch, loss, accuracy, samples_per_s) -> None:
        """Buffer a train point and report it as job progress."""
        self.samples_per_s = round(samples_per_s, 1)
        self.buffer.append({"run_id": self.run_id, "kind": "train", "step": step, "epoch": epoch, "loss": loss,
                            "accuracy": accuracy, "samples_per_s": self.samples_per_s})
        self.ctx.progress(epoch=epoch - 1, epochs=self.epochs_total, step=step, samples_per_s=self.samples_per_s)
        if self._paced:
            self._pace_step = step

    def on_epoch_end(self, epoch, metrics, checkpoint_path) -> None:
        """Store the val point, the run's summary and its checkpoint in one transaction."""
        self.buffer.append({"run_id": self.run_id, "kind": "val", "step": epoch, "epoch": epoch,
                            "loss": metrics["val_loss"], "accuracy": metrics["val_accuracy"],
                            "samples_per_s": metrics.get("samples_per_s")})
        summary = {
            "val_accuracy": metrics["best_val_accuracy"], "val_loss": metrics["best_val_loss"],
            "best_epoch": metrics["best_epoch"], "last_val_accuracy": metrics["val_accuracy"],
            "last_val_loss": metrics["val_loss"], "samples_per_s": metrics.get("samples_per_s"),
        }
        with transaction(self.db):
            self.flush()
            store_runs.update(self.db, self.run_id, epochs_done=epoch, metrics=summary, checkpoint_path=str(checkpoint_path))
        self.ctx.progress(epoch=epoch, epochs=self.epochs_total, step=metrics.get("step"),
                          samples_per_s=metrics.get("samples_per_s"), val_accuracy=metrics["val_accuracy"])

    def on_checkpoint(self, path: Path) -> None:
        """Register the rewritten checkpoint with its sha256 and size."""
        artifacts.register(self.db, kind="checkpoint", path=str(path), sha256=sha256_file(path),
                           size_bytes=path.stat().st_size, run_id=self.run_id, meta={"name": path.name})

    def before_checkpoint(self, path: Path, sha256: str) -> None:
        """Record the sha256 the checkpoint is about to have, before its rename."""
        # Noted before the rename: a kill between rename and on_checkpoint must not make the
        # new (good) file look corrupted to the next worker.
        artifacts.expect(self.db, str(path), sha256)

    def checkpoint_problem(self, path: Path) -> str | None:
        """Why the checkpoint must not be resumed from (sha256 matches neither recorded value), or None."""
        row = artifacts.by_path(self.db, str(path))
        if row is None:
            return None  # never registered (e.g. written by an older version): the loader judges it
        actual = sha256_file(path)
        if actual in (row["sha256"], (row["meta"] or {}).get("pending_sha256")):
            return None
        return (f"{path}: sha256 {actual[:12]}… does not match the store's {row['sha256'][:12]}… "
                "(truncated or corrupted)")

    def on_checkpoint_rejected(self, path: Path, reason: str, fallback: str) -> None:
        """Log that a checkpoint was unusable and where training resumes instead."""
        instead = "from scratch" if fallback == "scratch" else f"from {fallback}"
        self.ctx.log("warning", f"checkpoint {path.name} is unusable, resuming {instead}: {reason}", run_id=self.run_id)

    def on_pause(self, reason: str) -> None:
        """Flush, show the pause reason in the job's progress and log it."""
        self.flush()
        self.ctx.progress(paused=reason)
        self.ctx.log("warning", f"training paused: {reason}", run_id=self.run_id)

    def on_resume(self) -> None:
        """Clear the pause from the job's progress and log that training continues."""
        self.ctx.progress(paused=None)
        self.ctx.log("info", "training continues: battery charging or recovered", run_id=self.run_id)


def _recover(run_dir: Path, callbacks: StoreCallbacks) -> None:
    """After a kill: drop half-written temp files and register checkpoints renamed but not recorded.

    Signal 9 during an atomic write leaves its temp file; one between a checkpoint's rename and
    its registration leaves the row's sha256 behind the file (and best.pt may never be rewritten).
    Only a file the store expected (its ``pending_sha256``) or never saw is registered: a file
    that matches neither is damaged, and the trainer's sha256 check rejects it with the reason.
    Only the worker holding the run's job writes in its directory, so this is safe here.
    """
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    for name in ("best.pt", "last.pt"):
        path = run_dir / name
        if not path.is_file():
            continue
        row = artifacts.by_path(callbacks.db, str(path))
        if row is None or sha256_file(path) == (row["meta"] or {}).get("pending_sha256"):
            callbacks.on_checkpoint(path)


def run(ctx) -> dict:
    """Job kind ``train``: train the payload's run; the run row says how it ended."""
    db = ctx.db
    run_id = jobkinds.payload_of(ctx.job).run_id
    run_row = store_runs.get(db, run_id)
    if run_row is None:
        raise PocketopsError(f"train job {ctx.job_id}: run {run_id} does not exist")
    if run_row["status"] in ("done", "cancelled"):
        return {"run_id": run_id, "status": run_row["status"], "skipped": True}
    if jobs.cancel_requested(db, ctx.job_id):
        store_runs.set_status(db, run_id, "cancelled", error="cancelled by the user")
        raise JobCancelled()
    callbacks = StoreCallbacks(ctx, run_id, run_row["epochs_total"])
    store_runs.set_status(db, run_id, "running")
    try:
        dataset = store_datasets.get(db, run_row["dataset_id"])
        cfg = TrainConfig.from_dict(run_row["config"])
        run_dir = ctx.files("runs", run_id)
        _recover(run_dir, callbacks)
        trainer = Trainer(cfg, load_arrays(dataset), run_dir, callbacks)
        summary = trainer.fit()
    except JobCancelled:
        callbacks.flush()
        store_runs.set_status(db, run_id, "cancelled", error="cancelled by the user")
        raise
    except JobStopped:
        callbacks.flush()
        store_runs.set_status(db, run_id, "queued")  # the worker releases the job; the next one resumes
        raise
    except BaseException as exc:
        callbacks.flush()
        message = str(exc) if isinstance(exc, PocketopsError) else f"{type(exc).__name__}: {exc}"
        store_runs.set_status(db, run_id, "failed", error=message)
        raise
    with transaction(db):
        callbacks.flush()
        store_runs.update(db, run_id, epochs_done=summary["epochs_done"], metrics=summary,
                          checkpoint_path=summary["checkpoint"], params=summary["params"], size_bytes=summary["size_bytes"])
        store_runs.set_status(db, run_id, "done")
        test = summary["test_accuracy"]
        events.log(db, "info", "job:train", f"run {run_id} done: val accuracy {summary['val_accuracy']:.3f}, "
                   f"test accuracy {'n/a' if test is None else f'{test:.3f}'}", run_id=run_id, job_id=ctx.job_id)
    return {"run_id": run_id, **summary}
