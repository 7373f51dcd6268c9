"""The cluster side of a remote job: ``python -m core.remote_entry`` in the Ray job's working dir.

The working dir is the package the phone uploaded (our ``core`` and ``store`` packages, the
dataset's arrays, for an export the checkpoint, and ``manifest.json``). This runs our own
worker against a job-local SQLite and prints every point, progress change, event and artifact
as one JSON line prefixed with :data:`PREFIX`, which the phone tails from the Ray job's logs
and replays into its own store (:mod:`core.remote_job`). Artifacts are copied into the
directory the phone and the cluster share, with their sha256.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

PREFIX = "@@pocketops "
POLL_S = 0.2


def emit(_t: str, **fields) -> None:
    """One protocol line of type ``_t`` on stdout (the Ray job's log)."""
    sys.__stdout__.write(PREFIX + json.dumps({"t": _t, **fields}, separators=(",", ":"), default=str) + "\n")
    sys.__stdout__.flush()


def _copy_out(src: Path, dest_dir: Path, name: str) -> dict:
    """Copy an artifact into the shared directory atomically; its line's fields."""
    from core.atomic import sha256_file

    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{name}.tmp"
    shutil.copyfile(src, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest_dir / name)
    return {"file": name, "sha256": sha256_file(dest_dir / name), "size_bytes": (dest_dir / name).stat().st_size}


def _setup(manifest: dict, here: Path, db_path: Path):
    """The job-local store: the dataset, the run (and its checkpoint for an export), the job."""
    import store
    from core import jobkinds
    from store import datasets, runs

    db = store.connect(db_path)
    ds = manifest["dataset"]
    dataset_id = datasets.insert(
        db, name=ds["name"], kind=ds["kind"], source="cluster", fingerprint=ds["fingerprint"], rows_count=ds["rows"],
        classes=ds["classes"], class_counts=ds["class_counts"], input_shape=ds["input_shape"],
        artifact_path=str(here / ds["file"]), meta=ds.get("meta") or {})
    r = manifest["run"]
    run_id = runs.create(db, dataset_id=dataset_id, model=r["model"], config=r["config"], epochs_total=r["epochs_total"],
                         params=r.get("params"), size_bytes=r.get("size_bytes"))
    if r.get("checkpoint_file"):
        runs.update(db, run_id, checkpoint_path=str(here / r["checkpoint_file"]), epochs_done=r.get("epochs_done") or 0,
                    metrics=r.get("metrics") or {})
        runs.set_status(db, run_id, "done")
    payload = {**manifest["payload"], "run_id": run_id, "on": None}  # here it runs locally
    job_id = jobkinds.queue(db, manifest["kind"], payload)
    return db, run_id, job_id


class _Tail:
    """What of the job-local store has been printed (cursors), and printing what is new."""

    def __init__(self, db, run_id: int, job_id: int):
        self.db, self.run_id, self.job_id = db, run_id, job_id
        self.metric_id = self.event_id = 0
        self.progress = self.run_state = None

    def drain(self) -> None:
        from store import events, jobs, runs

        for p in runs.metrics_since(self.db, self.run_id, self.metric_id):
            self.metric_id = p["id"]
            emit("metric", **{k: p[k] for k in ("kind", "step", "epoch", "loss", "accuracy", "samples_per_s")})
        job = jobs.get(self.db, self.job_id)
        if job and job["progress"] != self.progress:
            self.progress = job["progress"]
            emit("progress", **(self.progress or {}))
        row = runs.get(self.db, self.run_id)
        state = (row["epochs_done"], row["metrics"]) if row else None
        if state != self.run_state:
            self.run_state = state
            emit("run", epochs_done=row["epochs_done"], metrics=row["metrics"])
        for e in events.since(self.db, self.event_id):
            self.event_id = e["id"]
            if e["source"].startswith("job:") or e["level"] != "info":
                emit("event", level=e["level"], message=e["message"])


def main(argv: list[str] | None = None) -> int:
    """The Ray job's entrypoint: run the shipped job against a job-local store, printing JSON lines."""
    here = Path.cwd()
    manifest = json.loads((here / "manifest.json").read_text())
    out_dir = Path(manifest["shared_dir"]) / manifest["out"]
    home = Path(tempfile.mkdtemp(prefix="pocketops-remote-"))
    os.environ["POCKETOPS_HOME"] = str(home)
    from core.worker import Worker
    from store import jobs, variants

    db_path = home / "job.db"
    db, run_id, job_id = _setup(manifest, here, db_path)
    emit("start", kind=manifest["kind"], python=sys.version.split()[0], host=os.uname().nodename)
    worker = Worker(db_path, worker_id=f"ray-{manifest['out']}")
    # Ray stops a job with SIGTERM: the job checkpoints and ends at its next safe point.
    signal.signal(signal.SIGTERM, lambda *_: worker._current and worker._current._cancelled.set())
    failure: list[BaseException] = []

    def work() -> None:
        try:
            worker.run_one(job_id)
        except BaseException as exc:  # reported below as the job's failure
            failure.append(exc)

    thread = threading.Thread(target=work, name="remote-job", daemon=True)
    thread.start()
    import store

    tail = _Tail(store.connect(db_path), run_id, job_id)
    while thread.is_alive():
        tail.drain()
        thread.join(POLL_S)
    tail.drain()
    job = jobs.get(db, job_id)
    if failure or job["status"] != "done":
        error = f"{type(failure[0]).__name__}: {failure[0]}" if failure else job.get("error")
        emit("result", status="cancelled" if job["status"] == "cancelled" else "failed", error=error)
        return 1
    result = dict(job["result"] or {})
    if manifest["kind"] == "train":
        from core import paths

        run_dir = paths.artifact_dir(db_path, "runs", run_id)
        for name in ("best.pt", "last.pt"):
            if (run_dir / name).is_file():
                emit("artifact", kind="checkpoint", name=name, **_copy_out(run_dir / name, out_dir, name))
        result["checkpoint"] = Path(result.get("checkpoint") or "best.pt").name
    else:
        for v in variants.for_job(db, job_id):
            src = Path(v["path"])
            line = _copy_out(src, out_dir, src.name)
            emit("artifact", kind="onnx", name=v["name"], variant={"name": v["name"], "meta": v["meta"], "bench": v["bench"],
                                                                  "status": v["status"]}, **line)
    emit("result", status="done", result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
