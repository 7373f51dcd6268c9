"""Training runs as the user sees them: create, cancel, resume, summarise. No torch here.

The dashboard and the CLI only write intents (a run row plus a queued ``train`` job, or a
cancel request); a worker does the training (:mod:`core.train_job`).
"""
from __future__ import annotations

import socket

from core import jobkinds, models
from core.datasets import model_input
from core.errors import ConfigError, DatasetError, PocketopsError
from core.trainer import TrainConfig
from store import datasets as store_datasets
from store import events, jobs
from store import runs as store_runs
from store.db import now as store_now
from store.db import transaction

FINAL = ("done", "failed", "cancelled")


class RunError(PocketopsError):
    """A request about a run that cannot be done (unknown run, wrong status)."""


def _dataset(db, name: str) -> dict:
    row = store_datasets.by_name(db, name)
    if row is None:
        known = ", ".join(d["name"] for d in store_datasets.list_all(db)) or "none"
        raise DatasetError(f"no dataset named {name!r}", found=f"known datasets: {known}",
                           hint="Add one with `pocketops datasets add PATH`")
    return row


def new_run(db, *, dataset: str, model: str, preset: str = "small", epochs: int = 10, batch_size: int = 8,
            accum: int = 1, lr: float | None = None, seed: int = 0, on: str | None = None, **extra) -> tuple[int, int]:
    """Validate a training config, create its run and queue its ``train`` job (on cluster ``on``,
    if given); (run_id, job_id)."""
    row = _dataset(db, dataset)
    cfg = TrainConfig.from_dict(dict(dataset=dataset, model=model, preset=preset, epochs=epochs, batch_size=batch_size,
                                     accum=accum, lr=lr, seed=seed, **extra)).validate()
    shape, dtype = model_input(row)
    sizes = models.check_config(model, shape, row["n_classes"], preset, dtype, cfg.arch)
    with transaction(db):
        run_id = store_runs.create(db, dataset_id=row["id"], model=model, config=cfg.to_dict(), epochs_total=epochs,
                                   params=sizes["params"], size_bytes=sizes["size_bytes"])
        job_id = jobkinds.queue(db, "train", run_id=run_id, on=on)
    return run_id, job_id


def _run(db, run_id: int) -> dict:
    run = store_runs.get(db, run_id)
    if run is None:
        raise RunError(f"no run with id {run_id}")
    return run


def cancel_run(db, run_id: int) -> str:
    """Cancel a run: 'cancelled' at once when queued (or its worker is gone), 'cancelling' while
    its worker finishes a batch."""
    from core import worker as core_worker  # no torch: the job loop's liveness rules

    run = _run(db, run_id)
    if run["status"] in FINAL:
        raise RunError(f"run {run_id} is already {run['status']}; nothing to cancel")
    job = jobs.latest_for_run(db, run_id, "train")
    was_running = bool(job and job["status"] == "running")
    if was_running:
        # A worker killed with signal 9 never sees the request: give back what a dead process on
        # this host holds, and treat a claim whose heartbeat went stale as abandoned.
        core_worker.reap_dead(db, socket.gethostname())
    stale_before = store_now() - core_worker.STALE_AFTER_S
    status = jobs.request_cancel(db, job["id"], stale_before=stale_before) if job else "cancelled"
    if status == "cancelled":
        with transaction(db):
            store_runs.set_status(db, run_id, "cancelled", error="cancelled by the user")
            how = "its worker had stopped" if was_running else "before it started"
            events.log(db, "info", "runs", f"run {run_id} cancelled ({how})", run_id=run_id)
        return "cancelled"
    events.log(db, "info", "runs", f"run {run_id}: cancel requested", run_id=run_id, job_id=job["id"])
    return "cancelling"


def resume_run(db, run_id: int) -> int:
    """Queue a failed or cancelled run again; it continues from its last checkpoint. Returns the job id."""
    run = _run(db, run_id)
    if run["status"] not in ("failed", "cancelled"):
        raise RunError(f"run {run_id} is {run['status']}; only failed or cancelled runs can be resumed")
    with transaction(db):
        store_runs.update(db, run_id, status="queued", error=None, finished_at=None)
        job_id = jobkinds.queue(db, "train", run_id=run_id)
        events.log(db, "info", "runs", f"run {run_id} queued again (from epoch {run['epochs_done']})", run_id=run_id, job_id=job_id)
    return job_id


def run_summary(db, run_id: int) -> dict:
    """What ``runs show ID --json`` prints."""
    run = _run(db, run_id)
    ds = store_datasets.get(db, run["dataset_id"])
    job = jobs.latest_for_run(db, run_id, "train")
    return {
        "run_id": run["id"], "status": run["status"], "epochs_done": run["epochs_done"],
        "epochs_total": run["epochs_total"], "dataset": ds["name"] if ds else None, "model": run["model"],
        "preset": run["config"].get("preset"), "metrics": run["metrics"], "error": run["error"],
        "params": run["params"], "size_bytes": run["size_bytes"], "checkpoint_path": run["checkpoint_path"],
        "config": run["config"], "job_id": job["id"] if job else None,
        "progress": job["progress"] if job and job["status"] == "running" else {},
        "created_at": run["created_at"], "started_at": run["started_at"], "finished_at": run["finished_at"],
    }


def estimate(db, *, dataset: str, model: str, preset: str = "small") -> dict:
    """``{"params", "size_bytes"}`` for a config, or ConfigError/DatasetError (for the new-run form)."""
    row = _dataset(db, dataset)
    shape, dtype = model_input(row)
    return models.check_config(model, shape, row["n_classes"], preset, dtype)


__all__ = ["new_run", "cancel_run", "resume_run", "run_summary", "estimate", "RunError", "ConfigError"]
