"""Signal 9 anywhere: a worker killed mid-train, mid-export or mid-deploy loses nothing and leaves
nothing behind once the next worker has taken its jobs over.

Moments are chosen by observable state (the pace hook of core/pace.py holding a job at a
point, job status, rows and files appearing), never by sleeping, so the kills land where they
are meant to on a machine 10x faster or 3x slower.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import store
from core import jobkinds
from deployers.local import _alive, _members
from store import deployments as store_deployments
from store import jobs
from tests._deploy_helpers import make_variant
from tests._pace import Pace

ROOT = Path(__file__).resolve().parent.parent


def start_worker(db_path: Path, pace: Pace, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "POCKETOPS_HOME": str(db_path.parent / "home"), "PYTHONWARNINGS": "ignore", **pace.env}
    env.pop("POCKETOPS_API_KEY", None)
    log = open(db_path.parent / f"worker-{time.monotonic_ns()}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "core.worker", "--db", str(db_path), *extra],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def kill9(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop_servers(db) -> None:
    for row in store_deployments.list_all(db):
        for pid in [row["meta"].get("pid"), *(p.get("pid") for p in row["meta"].get("started") or [])]:
            if pid and _alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_a_deploy_killed_after_its_server_started_is_closed_and_its_server_stopped(tmp_path):
    """The known gap: signal 9 while the new server starts (row still 'deploying'). The server's
    process group was recorded before the wait; the next worker takes the job over, stops that
    server, marks the row failed with the reason, and deploys again to the end."""
    db_path = tmp_path / "data" / "t.db"
    db = store.connect(db_path)
    pace = Pace(tmp_path, hold=["deploy:server-started"])
    try:
        vid = make_variant(db, db_path)
        job_id = jobkinds.queue(db, "deploy", {"variant_id": vid, "target": "local", "options": {"port": 0}})
        first = start_worker(db_path, pace)
        try:
            pace.wait_held("deploy:server-started", pid=first.pid, proc=first, timeout=120)
            [row] = store_deployments.list_all(db)
            assert row["status"] == "deploying"
            [started] = row["meta"]["started"]
            group = started["pid"]
            wait_for(lambda: _members(group), 30, "the server process of the interrupted deploy")
        finally:
            kill9(first)
        assert _alive(group), "the server outlives the worker that started it (new session)"
        pace.set()  # no holds: the next worker runs to the end
        second = start_worker(db_path, pace, "--once")
        assert second.wait(timeout=180) == 0
        job = jobs.get(db, job_id)
        assert job["status"] == "done" and job["attempts"] == 2
        old, new = sorted(store_deployments.list_all(db), key=lambda r: r["id"])
        assert old["id"] == row["id"] and old["status"] == "failed"
        assert f"interrupted: the process deploying it (pid {first.pid}) died" in old["error"]
        assert f"process group {group}" in old["error"]
        assert not _members(group), "the interrupted deploy's server was stopped"
        assert new["status"] == "running" and job["result"]["deployment_id"] == new["id"]
        assert _alive(new["meta"]["pid"]) and new["version"] == old["version"] + 1
        assert store_deployments.current(db, "local", "local") == [store_deployments.get(db, new["id"])]
    finally:
        stop_servers(db)


def test_a_deploy_of_a_process_still_running_is_not_reconciled(tmp_path):
    """Only a dead deploying process's row is closed: a row whose owner still runs is left as it is."""
    from deployers import service

    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    vid = make_variant(db, db_path)
    alive = store_deployments.create(db, variant_id=vid, target="local", name="local",
                                     meta={"owner": service._owner()})
    dead_proc = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_proc.wait()
    dead = store_deployments.create(db, variant_id=vid, target="local", name="local",
                                    meta={"owner": {**service._owner(), "pid": dead_proc.pid}})
    reused = store_deployments.create(db, variant_id=vid, target="local", name="local",
                                      meta={"owner": {**service._owner(), "create_time": 1.0}})
    closed = service.reconcile(db, "local", "local")
    assert sorted(r["id"] for r in closed) == [dead["id"], reused["id"]]
    assert store_deployments.get(db, alive["id"])["status"] == "deploying"
    assert all(store_deployments.get(db, r)["status"] == "failed" for r in (dead["id"], reused["id"]))


# -- the harness: 20 kills across train, export and deploy ----------------------------------

SEED = 7  # spreads the held steps over all three epochs and hits every kind of moment
EPOCHS, BATCH = 3, 8


def _moments(rng, n_batches: int) -> dict[str, list[tuple]]:
    """20 kill moments, seeded: (kind, argument) per stage, the train ones in the order they occur."""
    held = [("held", rng.randrange(10, EPOCHS * n_batches, 10)) for _ in range(6)]
    val = [("val", rng.randint(1, EPOCHS - 1)) for _ in range(2)]  # just after epoch k's val point
    train = sorted(held + val, key=lambda m: m[1] if m[0] == "held" else m[1] * n_batches + 0.5)
    train = [("claimed", None)] + train + [("done-running", None)]
    export = [rng.choice(["claimed", "file", "registered", "benchmarked"]) for _ in range(5)]
    deploy = [rng.choice(["claimed", "row", "bundle", "held", "held"]) for _ in range(5)]
    return {"train": train, "export": [(m, None) for m in export], "deploy": [(m, None) for m in deploy]}


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _registered(db, db_path: Path) -> set[Path]:
    """Every file the store accounts for: artifacts (a bundle is a directory), variants,
    datasets, and each deployment's working directory (server log, ready file)."""
    from store.db import rows

    roots = [Path(r["path"]) for r in rows(db, "SELECT path FROM artifacts")]
    roots += [Path(r["path"]) for r in rows(db, "SELECT path FROM variants")]
    roots += [Path(r["artifact_path"]) for r in rows(db, "SELECT artifact_path FROM datasets")]
    roots += [Path(d["meta"]["workdir"]) for d in store_deployments.list_all(db) if d["meta"].get("workdir")]
    out = set()
    for root in roots:
        out |= _files(root) if root.is_dir() else {root}
    return out


def test_kill9_anywhere_loses_nothing_and_leaves_nothing(tmp_path):
    """SIGKILL the worker at 20 seeded moments across a train, an export and a deploy job, a new
    worker each time: every job ends done, the metric points are exactly a clean run's, every
    artifact's sha256 matches its file, no file under the data dir is unaccounted for (temp files
    included) and no release is left 'deploying'."""
    import random

    from core.datasets import ensure_builtin, load_arrays, split_indices
    from store import datasets as store_datasets

    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    db_path = tmp_path / "data" / "t.db"
    db = store.connect(db_path)
    ensure_builtin(db, db_path)
    n_batches = -(-len(split_indices(load_arrays(store_datasets.by_name(db, "digits")).y)[0]) // BATCH)
    total_steps = EPOCHS * n_batches
    rng = random.Random(SEED)
    plan = _moments(rng, n_batches)
    assert sum(len(m) for m in plan.values()) == 20
    pace = Pace(tmp_path)
    kills: list[str] = []

    def job_status(job_id):
        return jobs.get(db, job_id)["status"]

    def run_stage(stage: str, job_id: int, moment_ready) -> None:
        for kind, arg in plan[stage]:
            pace.set(**({"train_step": arg} if stage == "train" and kind == "held" else
                        {"hold": ["deploy:server-started"]} if kind == "held" else {}))
            pace.clear_held()
            worker = start_worker(db_path, pace)
            try:
                seen = wait_for(lambda: (moment_ready(kind, arg, worker) and "moment")
                                or (job_status(job_id) == "done" and "job already done")
                                or (worker.poll() is not None and f"worker exited {worker.returncode}"),
                                240, f"{stage} moment {kind} {arg}")
            finally:
                kill9(worker)
            assert not seen.startswith("worker exited"), seen
            kills.append(f"{stage}:{kind}:{arg}:{seen}")
        pace.set()
        last = start_worker(db_path, pace, "--once")
        assert last.wait(timeout=600) == 0, f"the {stage} stage's last worker failed"
        job = jobs.get(db, job_id)
        assert job["status"] == "done", (stage, job)

    try:
        _harness(db, db_path, pace, plan, kills, run_stage, job_status, total_steps)
    except AssertionError as exc:  # say where the kills landed, so a failure can be replayed
        raise AssertionError(f"{exc}\nkills so far (stage:moment:arg:seen): {kills}") from exc
    finally:
        stop_servers(db)


def _harness(db, db_path, pace, plan, kills, run_stage, job_status, total_steps):
    """The three stages and the checks of the end state (see the test above)."""
    from core import paths, runs
    from core.atomic import sha256_file
    from store import runs as store_runs
    from store import variants as store_variants
    from store.db import rows

    # 1. train
    run_id, train_job = runs.new_run(db, dataset="digits", model="cnn", preset="tiny", epochs=EPOCHS,
                                     batch_size=BATCH, patience=50, threads=1)

    def train_moment(kind, arg, worker):
        if kind == "claimed":
            return job_status(train_job) == "running"
        if kind == "held":
            at = pace.held()
            return at is not None and at["pid"] == worker.pid
        if kind == "val":
            return len(rows(db, "SELECT 1 FROM metrics WHERE run_id = ? AND kind = 'val' AND step >= ?",
                            (run_id, arg))) > 0 and job_status(train_job) == "running"
        # done-running: the run row says done (the job may not be closed yet)
        return store_runs.get(db, run_id)["status"] == "done"

    run_stage("train", train_job, train_moment)

    # 2. export (fp32 only: the export, verify, register, benchmark and compare steps)
    export_job = jobs.enqueue(db, "export", {"run_id": run_id, "variants": ["fp32"], "threads": 1})
    onnx_dir = paths.files_dir(db_path) / "runs" / str(run_id) / "onnx" / f"job-{export_job}"

    def export_moment(kind, arg, worker):
        if kind == "claimed":
            return job_status(export_job) == "running"
        if kind == "file":
            return onnx_dir.is_dir() and any(onnx_dir.iterdir())
        mine = store_variants.for_job(db, export_job)
        if kind == "registered":
            return bool(mine)
        return bool(mine) and all(v["status"] == "benchmarked" for v in mine)

    run_stage("export", export_job, export_moment)
    [variant] = store_variants.for_job(db, export_job)

    # 3. deploy to the local target
    deploy_job = jobkinds.queue(db, "deploy", {"variant_id": variant["id"], "target": "local",
                                               "options": {"port": 0}})
    bundles = paths.files_dir(db_path) / "bundles"

    def deploy_moment(kind, arg, worker):
        if kind == "claimed":
            return job_status(deploy_job) == "running"
        if kind == "row":
            return any(d["status"] == "deploying" for d in store_deployments.list_all(db))
        if kind == "bundle":
            return bundles.is_dir() and any(bundles.iterdir())
        at = pace.held()
        return at is not None and at["pid"] == worker.pid

    run_stage("deploy", deploy_job, deploy_moment)

    # -- what a clean run would have left ---------------------------------------------
    print("\n".join(kills))
    train = [r["step"] for r in rows(db, "SELECT step FROM metrics WHERE run_id = ? AND kind = 'train' ORDER BY step", (run_id,))]
    assert train == list(range(10, total_steps + 1, 10)), "train points lost or doubled"
    val = [r["step"] for r in rows(db, "SELECT step FROM metrics WHERE run_id = ? AND kind = 'val' ORDER BY step", (run_id,))]
    assert val == list(range(1, EPOCHS + 1))
    s = store_runs.get(db, run_id)
    assert s["status"] == "done" and s["epochs_done"] == EPOCHS
    from core.trainer import read_checkpoint

    assert read_checkpoint(Path(s["checkpoint_path"]).parent / "last.pt")["step"] == total_steps
    for art in rows(db, "SELECT * FROM artifacts"):
        path = Path(art["path"])
        target = path / "model.json" if art["kind"] == "bundle" else path
        assert target.is_file() and sha256_file(target) == art["sha256"], f"artifact {art['id']} {path}"
    for v in rows(db, "SELECT * FROM variants"):
        assert sha256_file(v["path"]) == v["sha256"]
    orphans = _files(paths.files_dir(db_path)) - _registered(db, db_path)
    assert not orphans, sorted(map(str, orphans))
    deps = store_deployments.list_all(db)
    assert not [d for d in deps if d["status"] == "deploying"]
    serving = [d for d in deps if d["status"] == "running"]
    assert len(serving) == 1 and serving[0]["id"] == jobs.get(db, deploy_job)["result"]["deployment_id"]
    assert all(d["status"] in ("failed", "superseded") for d in deps if d is not serving[0])
    from deployers.local import _request

    assert _request(serving[0]["url"], "/health")[0]
    # no server left that no row knows: only the serving release's process group runs
    from deployers.local import _groups_running

    assert _groups_running(str(paths.files_dir(db_path))) == {serving[0]["meta"]["pid"]}
