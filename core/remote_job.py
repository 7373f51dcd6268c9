"""The worker's executor for jobs with ``on`` set: run them on a Ray cluster, replay them here.

Submit: the code (our ``core`` and ``store`` packages), the dataset's arrays (and, for an
export, the checkpoint) go up as the job's ``runtime_env.working_dir`` package; the entrypoint
is our own worker on the cluster (:mod:`core.remote_entry`). Follow: the phone polls the Ray
job's status and logs and replays the JSON lines into its store, counting the lines applied in
the same transaction, so a reconnect or a new worker after kill -9 continues where the store
is (metric points are also unique by (run, kind, step)). Collect: artifacts are read from the
directory the cluster and the phone share, their sha256 checked, copied under this store's
files and registered as if made here. A cancel here stops the Ray job.

The Ray submission id is recorded (``remote_jobs``) before submitting, so a worker killed at
any point finds the Ray job again instead of starting a second one. The token is read from the
environment at each start and goes only into the Authorization header.
"""
from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import time
import zipfile
from hashlib import sha256
from pathlib import Path

from core import clusters, jobkinds, pace, paths
from core.atomic import sha256_file
from core.errors import JobCancelled, JobStopped, PocketopsError
from core.rayjobs import TERMINAL, ClusterError
from core.remote_entry import PREFIX
from store import artifacts as store_artifacts
from store import clusters as store_clusters
from store import datasets as store_datasets
from store import events
from store import runs as store_runs
from store import variants as store_variants
from store.db import transaction

POLL_S = float(os.environ.get("POCKETOPS_REMOTE_POLL_S", "0.5"))
OFFLINE_RETRY_S = 5.0
STOP_WAIT_S = 60.0
SHIPPED_PACKAGES = ("core", "store")
ENTRYPOINT = "python -m core.remote_entry"


def shared_dir(cluster: dict, db_path: Path) -> Path:
    """Where the cluster leaves artifacts for us: the cluster's shared dir, else this store's files
    (right when the head runs on this machine)."""
    return Path(cluster.get("shared_dir") or paths.files_dir(db_path) / "cluster").expanduser()


def build_package(manifest: dict, files: dict[str, Path]) -> bytes:
    """The working-dir zip: our packages' sources, the data files, and ``manifest.json``."""
    root = Path(__file__).resolve().parent.parent
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for package in SHIPPED_PACKAGES:
            for src in sorted((root / package).rglob("*.py")):
                z.write(src, src.relative_to(root).as_posix())
        for name, src in files.items():
            z.write(src, name)
        z.writestr("manifest.json", json.dumps(manifest, indent=1, default=str))
    return buf.getvalue()


def _manifest(ctx, kind: str, payload, run_row: dict, dataset: dict, out: str, shared: Path) -> tuple[dict, dict]:
    files = {"dataset.npz": Path(dataset["artifact_path"])}
    run = {k: run_row[k] for k in ("model", "config", "epochs_total", "params", "size_bytes", "epochs_done", "metrics")}
    body = {k: v for k, v in vars(payload).items() if k not in ("on", "run_id")}
    if kind == "export":
        from core.export_job import checkpoint_for

        files["checkpoint.pt"] = checkpoint_for(run_row)
        run["checkpoint_file"] = "checkpoint.pt"
    ds = {k: dataset[k] for k in ("name", "kind", "fingerprint", "rows", "classes", "class_counts", "input_shape", "meta")}
    manifest = {"kind": kind, "payload": body, "run": run, "dataset": {**ds, "file": "dataset.npz"},
                "shared_dir": str(shared), "out": out}
    return manifest, files


def _lines(logs: str) -> list[dict]:
    """Our protocol lines in a log, in order; an unfinished last line waits for the next poll."""
    found = []
    for line in logs.split("\n")[:-1]:
        at = line.find(PREFIX)
        if at >= 0:
            try:
                found.append(json.loads(line[at + len(PREFIX):]))
            except ValueError:
                continue  # a line another process wrote into ours; never ours half-written (complete lines only)
    return found


class _Follower:
    """Replays a remote job's lines into the phone's store, idempotently."""

    def __init__(self, ctx, kind: str, run_id: int, remote: dict):
        self.ctx, self.db, self.kind, self.run_id = ctx, ctx.db, kind, run_id
        self.applied = remote["lines_applied"]
        self.result: dict | None = None
        self.artifacts: list[dict] = []

    def apply(self, lines: list[dict]) -> int:
        """Apply the lines not applied yet; how many were new."""
        for line in lines:  # artifacts and the result are read from the whole log each time (idempotent)
            if line["t"] == "artifact" and line not in self.artifacts:
                self.artifacts.append(line)
            elif line["t"] == "result":
                self.result = line
        new = lines[self.applied:]
        if not new:
            return 0
        points = []
        with transaction(self.db):
            for line in new:
                t = line["t"]
                if t == "metric":
                    points.append({"run_id": self.run_id, **{k: line.get(k) for k in
                                   ("kind", "step", "epoch", "loss", "accuracy", "samples_per_s")}})
                elif t == "progress":
                    self.ctx.progress(**{k: v for k, v in line.items() if k != "t"})
                elif t == "run" and self.kind == "train":
                    store_runs.update(self.db, self.run_id, epochs_done=line["epochs_done"], metrics=line["metrics"])
                elif t == "event":
                    events.log(self.db, line["level"], f"job:{self.kind}", f"[cluster] {line['message']}",
                               run_id=self.run_id, job_id=self.ctx.job_id)
            store_runs.add_metrics(self.db, points)
            self.applied += len(new)
            store_clusters.update_remote_job(self.db, self.ctx.job_id, lines_applied=self.applied)
        return len(new)


def run(ctx) -> dict:
    """Run a ``train`` or ``export`` job that has ``on`` set on that Ray cluster."""
    kind = ctx.job["kind"]
    payload = jobkinds.payload_of(ctx.job)
    db = ctx.db
    cluster = clusters.get(db, payload.on)
    api = clusters.client(cluster)
    run_id = payload.run_id
    run_row = store_runs.get(db, run_id)
    if run_row is None:
        raise PocketopsError(f"{kind} job {ctx.job_id}: run {run_id} does not exist")
    if kind == "train" and run_row["status"] in ("done", "cancelled"):
        return {"run_id": run_id, "status": run_row["status"], "skipped": True}
    shared = shared_dir(cluster, ctx.db_path)
    remote = store_clusters.remote_job(db, ctx.job_id)
    try:
        if remote is None:
            sid = f"pocketops-{ctx.job_id}-{secrets.token_hex(4)}"
            store_clusters.start_remote_job(db, ctx.job_id, cluster["name"], sid)
            remote = store_clusters.remote_job(db, ctx.job_id)
        sid = remote["submission_id"]
        if kind == "train":
            store_runs.set_status(db, run_id, "running")
        if api.info(sid) is None:  # never submitted (or killed before the POST reached the cluster)
            dataset = store_datasets.get(db, run_row["dataset_id"])
            manifest, files = _manifest(ctx, kind, payload, run_row, dataset, sid, shared)
            data = build_package(manifest, files)
            uri = api.upload_package(f"_ray_pkg_{sha256(data).hexdigest()[:32]}.zip", data)
            runtime_env = {"working_dir": uri}
            if pace.active():  # tests only: hold the cluster's job at a train point too (core/pace.py)
                runtime_env["env_vars"] = {pace.ENV: os.environ[pace.ENV]}
            api.submit(sid, ENTRYPOINT, runtime_env, metadata={"pocketops_job": str(ctx.job_id), "kind": kind},
                       entrypoint_num_cpus=1)
            store_clusters.update_remote_job(db, ctx.job_id, status="submitted")
            ctx.log("info", f"{kind} of run {run_id} submitted to cluster {cluster['name']} as Ray job {sid} "
                            f"({len(data) / 1024:.0f} KiB package)")
        else:
            ctx.log("info", f"following Ray job {sid} on cluster {cluster['name']} again "
                            f"({remote['lines_applied']} lines already replayed)")
        info = _follow(ctx, api, sid, _Follower(ctx, kind, run_id, remote), kind, run_id)
    except (JobStopped, JobCancelled):
        raise
    except BaseException as exc:
        if kind == "train":
            message = str(exc) if isinstance(exc, PocketopsError) else f"{type(exc).__name__}: {exc}"
            store_runs.set_status(db, run_id, "failed", error=message)
        raise
    return info


def _follow(ctx, api, sid: str, follower: _Follower, kind: str, run_id: int) -> dict:
    """Tail the Ray job until it ends; collect it."""
    offline_since = None
    while True:
        try:
            if ctx.cancelled:
                return _cancel(ctx, api, sid, follower, kind, run_id)
            if ctx.stopping:  # this worker is leaving: the Ray job goes on, the next worker follows it
                if kind == "train":
                    store_runs.set_status(ctx.db, run_id, "queued")
                raise JobStopped()
            info = api.info(sid)
            if info is None:
                raise ClusterError(f"cluster {api.name!r} has no Ray job {sid} any more (was the head restarted?)")
            if offline_since is not None:  # said before anything else, also when the job ended meanwhile
                ctx.log("info", f"cluster {api.name} answers again; following Ray job {sid}")
                offline_since = None
            follower.apply(_lines(api.logs(sid)))
            if info["status"] in TERMINAL:
                follower.apply(_lines(api.logs(sid)))  # lines written between the two reads
                break
        except ClusterError as exc:
            if not getattr(exc, "unreachable", False):
                raise
            if offline_since is None:  # the phone lost the network: keep the job, retry until it is back
                offline_since = time.monotonic()
                ctx.log("warning", f"{exc}; retrying every {OFFLINE_RETRY_S:g} s")
            ctx._cancelled.wait(OFFLINE_RETRY_S)
            continue
        ctx._cancelled.wait(POLL_S)
    status = info["status"]
    result = follower.result or {}
    if status != "SUCCEEDED" or result.get("status") != "done":
        why = result.get("error") or _last_line(info.get("message")) or "no reason given"
        raise PocketopsError(f"cluster {api.name}: Ray job {sid} {status.lower()}: {why}")
    return _collect(ctx, follower, kind, run_id, sid, api.name)


def _last_line(text: str | None) -> str:
    """The last non-empty line of Ray's (multi-line) job message: usually the exception."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _cancel(ctx, api, sid: str, follower: _Follower, kind: str, run_id: int) -> dict:
    api.stop(sid)
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline:
        info = api.info(sid)
        if info is None or info["status"] in TERMINAL:
            break
        time.sleep(POLL_S)
    follower.apply(_lines(api.logs(sid)))
    store_clusters.update_remote_job(ctx.db, ctx.job_id, status="stopped")
    if kind == "train":
        store_runs.set_status(ctx.db, run_id, "cancelled", error="cancelled by the user")
    ctx.log("info", f"Ray job {sid} stopped (cancelled here)")
    raise JobCancelled()


def _fetch(ctx, line: dict, src_dir: Path, dest_dir: Path) -> tuple[Path, str, int]:
    """Copy one artifact from the shared dir after checking its sha256; (local path, sha256, size)."""
    src, dest = src_dir / line["file"], dest_dir / line["file"]
    if dest.is_file() and sha256_file(dest) == line["sha256"]:
        return dest, line["sha256"], dest.stat().st_size  # fetched by an earlier attempt
    if not src.is_file():
        raise PocketopsError(f"artifact {line['file']} of Ray job {src_dir.name} is not in {src_dir}; "
                             "is --shared-dir a directory both the cluster and this machine see?")
    got = sha256_file(src)
    if got != line["sha256"]:
        raise PocketopsError(f"artifact {src}: sha256 {got[:12]}… differs from the cluster's {line['sha256'][:12]}… "
                             "(damaged in transfer); run the job again")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{line['file']}.tmp"
    shutil.copyfile(src, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    if sha256_file(dest) != got:
        raise PocketopsError(f"artifact {dest}: changed while copying from {src}; run the job again")
    return dest, got, dest.stat().st_size


def _drop_transfer(src_dir: Path) -> None:
    """The shared dir only carries artifacts across: once each is verified and registered here, empty it."""
    shutil.rmtree(src_dir, ignore_errors=True)


def _collect(ctx, follower: _Follower, kind: str, run_id: int, sid: str, cluster: str) -> dict:
    db = ctx.db
    cluster_row = clusters.get(db, cluster)
    src_dir = shared_dir(cluster_row, ctx.db_path) / sid
    result = dict(follower.result.get("result") or {})
    result.pop("run_id", None)  # the cluster's job-local run id, not ours
    if kind == "train":
        run_dir = ctx.files("runs", run_id)
        local = {}
        for line in follower.artifacts:
            path, sha, size = _fetch(ctx, line, src_dir, run_dir)
            store_artifacts.register(db, kind="checkpoint", path=str(path), sha256=sha, size_bytes=size, run_id=run_id,
                                     meta={"name": path.name, "cluster": cluster, "ray_job": sid})
            local[line["name"]] = str(path)
        result["checkpoint"] = local.get(result.get("checkpoint") or "best.pt") or local.get("best.pt")
        with transaction(db):
            store_runs.update(db, run_id, epochs_done=result["epochs_done"], metrics=result,
                              checkpoint_path=result["checkpoint"], params=result.get("params"),
                              size_bytes=result.get("size_bytes"))
            store_runs.set_status(db, run_id, "done")
            store_clusters.update_remote_job(db, ctx.job_id, status="collected")
            test = result.get("test_accuracy")
            events.log(db, "info", "job:train", f"run {run_id} done on cluster {cluster}: val accuracy "
                       f"{result['val_accuracy']:.3f}, test accuracy {'n/a' if test is None else f'{test:.3f}'}",
                       run_id=run_id, job_id=ctx.job_id)
        _drop_transfer(src_dir)
        return {"run_id": run_id, **result}
    return _collect_export(ctx, follower, run_id, sid, cluster, src_dir)


def _collect_export(ctx, follower: _Follower, run_id: int, sid: str, cluster: str, src_dir: Path) -> dict:
    """Register the returned variants as if exported here, then benchmark them on this device."""
    from core import export_job

    db = ctx.db
    payload = jobkinds.payload_of(ctx.job)
    run_row = store_runs.get(db, run_id)
    out_dir = ctx.files("runs", run_id, "onnx", f"job-{ctx.job_id}")
    with transaction(db):
        for line in follower.artifacts:
            path, sha, size = _fetch(ctx, line, src_dir, out_dir)
            if store_variants.by_path(db, str(path)) is not None:
                continue  # collected by an earlier attempt
            v = line["variant"]
            meta = {k: x for k, x in v["meta"].items() if k != "baseline"}  # torch timed there, not on this device
            meta = {**meta, "cluster_baseline": v["meta"].get("baseline"), "job_id": ctx.job_id, "run_id": run_id, "checkpoint": run_row["checkpoint_path"],
                    "source": f"cluster {cluster}", "ray_job": sid, "cluster_bench": v.get("bench") or {}}
            store_artifacts.register(db, kind="onnx", path=str(path), sha256=sha, size_bytes=size, run_id=run_id,
                                     meta={"variant": v["name"], "job_id": ctx.job_id, "cluster": cluster})
            store_variants.insert(db, name=v["name"], path=str(path), sha256=sha, size_bytes=size, run_id=run_id, meta=meta)
        store_clusters.update_remote_job(db, ctx.job_id, status="collected")
    _drop_transfer(src_dir)
    mine = store_variants.for_job(db, ctx.job_id)
    ctx.log("info", f"run {run_id}: {len(mine)} variants back from cluster {cluster} (sha256 checked); benchmarking them here")
    from core.optional import available

    if available("onnxruntime"):  # measured on this device: the figures that matter are the phone's
        first = mine[0]["meta"]
        data = export_job.eval_data(db, first["dataset"], first.get("split"))
        export_job.measure_variants(ctx, mine, payload.threads, only_unmeasured=True, data=data)
    result = export_job.summary(db, run_id, store_variants.for_job(db, ctx.job_id))
    result["cluster"] = cluster
    rec = result["recommended"]
    ctx.log("info", f"run {run_id}: recommended {rec['name']} — {rec['reason']}")
    return result
