"""`--on` against a real local Ray head (tests/_ray_head.py): curves stream into the phone's store
while the job runs, a kill -9 of the phone's worker loses and duplicates nothing, artifacts come
back with their sha256, `export --on` returns variants measured here, a cancel stops the Ray job."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import store
from core.atomic import sha256_file
from core.rayjobs import RayJobs
from store import clusters as store_clusters
from store import jobs, runs
from tests._pace import Pace

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 240.0


def env_for(head, **extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TEST_RAY_TOKEN": head.token, **extra}


def cli(db_path, head, *args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "tui.cli", "--db", str(db_path), *args], capture_output=True, text=True,
                          env=env or env_for(head), timeout=timeout, cwd=ROOT)


def start_worker(db_path, env) -> subprocess.Popen:
    log = open(Path(db_path).parent / "worker.log", "ab")  # read it when a test fails
    return subprocess.Popen([sys.executable, "-m", "core.worker", "--db", str(db_path)], env=env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def wait_for(predicate, what: str, timeout: float = DEADLINE_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def phone(ray_head, tmp_path_factory):
    """A phone's store with the head added as cluster `local` and one run trained here (2 epochs)."""
    home = tmp_path_factory.mktemp("phone")
    db_path = home / "phone.db"
    r = cli(db_path, ray_head, "cluster", "add", "local", "--address", ray_head.address, "--token-env", "TEST_RAY_TOKEN")
    assert r.returncode == 0, r.stderr
    r = cli(db_path, ray_head, "train", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--wait", "--json")
    assert r.returncode == 0, r.stderr
    local = json.loads(r.stdout.strip().splitlines()[-1])
    return {"db_path": db_path, "home": home, "local_run": local}


def ray_jobs_for(head, job_id: int) -> list[dict]:
    api = RayJobs("local", head.address, head.token)
    return [j for j in api.list_jobs() if (j.get("metadata") or {}).get("pocketops_job") == str(job_id)]


def test_check_lists_resources_and_a_wrong_token_is_one_line(phone, ray_head):
    r = cli(phone["db_path"], ray_head, "cluster", "check", "local", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["ray_version"] == "2.60.0" and info["auth"] == "token" and info["resources"]["CPU"] == 1
    listed = json.loads(cli(phone["db_path"], ray_head, "cluster", "list", "--json").stdout)
    assert listed == [{"name": "local", "address": ray_head.address, "reachable": True, "ray_version": "2.60.0"}]
    wrong = cli(phone["db_path"], ray_head, "cluster", "check", "local", env=env_for(ray_head, TEST_RAY_TOKEN="wrong"))
    lines = wrong.stderr.strip().splitlines()
    assert wrong.returncode == 1 and len(lines) == 1 and "cluster 'local' rejected the token from $TEST_RAY_TOKEN" in lines[0]


def test_a_cancel_on_the_phone_stops_the_ray_job(phone, ray_head, tmp_path):
    db_path = phone["db_path"]
    pace = Pace(tmp_path, train_step=20)
    r = cli(db_path, ray_head, "train", "--dataset", "digits", "--model", "mlp", "--epochs", "3", "--on", "local", "--json")
    assert r.returncode == 0, r.stderr
    run_id, job_id = json.loads(r.stdout)["run_id"], json.loads(r.stdout)["job_id"]
    db = store.connect(db_path)
    worker = start_worker(db_path, env_for(ray_head, **pace.env))
    try:
        pace.wait_held("train:step", timeout=DEADLINE_S)
        assert cli(db_path, ray_head, "runs", "cancel", str(run_id)).returncode == 0
        try:
            wait_for(lambda: jobs.get(db, job_id)["status"] in jobs.FINAL, "the cancel to end the job", timeout=90)
        except AssertionError:
            events = db.execute("SELECT level, message FROM events WHERE job_id = ?", (job_id,)).fetchall()
            raise AssertionError(f"job {jobs.get(db, job_id)}; events {events}; Ray {ray_jobs_for(ray_head, job_id)}; "
                                 f"worker log {(db_path.parent / 'worker.log').read_text()[-2000:]}") from None
    finally:
        stop_worker(worker)
        pace.set()
    assert jobs.get(db, job_id)["status"] == "cancelled" and runs.get(db, run_id)["status"] == "cancelled"
    assert ray_jobs_for(ray_head, job_id)[0]["status"] == "STOPPED"


def test_train_on_the_cluster_streams_survives_kill9_and_returns_the_checkpoint(phone, ray_head, tmp_path):
    db_path = phone["db_path"]
    pace = Pace(tmp_path, train_step=40)  # the cluster's trainer holds at step 40 of 3 epochs (~480 steps)
    r = cli(db_path, ray_head, "train", "--dataset", "digits", "--model", "mlp", "--epochs", "3", "--on", "local", "--json")
    assert r.returncode == 0, r.stderr
    queued = json.loads(r.stdout)
    run_id, job_id = queued["run_id"], queued["job_id"]
    db = store.connect(db_path)
    first = start_worker(db_path, env_for(ray_head, **pace.env))
    try:
        pace.wait_held("train:step", timeout=DEADLINE_S)
        # The curve is in the phone's store while the job still runs on the cluster.
        wait_for(lambda: runs.count_metrics(db, run_id, "train") >= 4, "the first points replayed")
        assert runs.get(db, run_id)["status"] == "running" and jobs.get(db, job_id)["status"] == "running"
        remote = store_clusters.remote_job(db, job_id)
        assert remote["lines_applied"] > 0 and ray_jobs_for(ray_head, job_id)[0]["status"] == "RUNNING"
    finally:
        first.kill()  # kill -9 of the phone's worker mid-job
        first.wait(timeout=30)
    pace.set()  # let the cluster's job finish while no phone worker follows it
    api = RayJobs("local", ray_head.address, ray_head.token)
    wait_for(lambda: api.info(remote["submission_id"])["status"] == "SUCCEEDED", "the Ray job to finish unobserved")
    second = start_worker(db_path, env_for(ray_head))
    try:
        wait_for(lambda: jobs.get(db, job_id)["status"] in jobs.FINAL, "the new worker to collect the job")
    finally:
        stop_worker(second)
    job = jobs.get(db, job_id)
    assert job["status"] == "done", job["error"]
    # One Ray job for our job (the new worker followed it, it did not submit again) ...
    assert [j["submission_id"] for j in ray_jobs_for(ray_head, job_id)] == [remote["submission_id"]]
    # ... and every point of its log exactly once.
    logs = api.logs(remote["submission_id"])
    lines = [json.loads(ln.split("@@pocketops ", 1)[1]) for ln in logs.splitlines() if "@@pocketops " in ln]
    assert len(lines) == store_clusters.remote_job(db, job_id)["lines_applied"]
    metric_lines = [ln for ln in lines if ln["t"] == "metric"]
    assert runs.count_metrics(db, run_id) == len(metric_lines) == len({(m["kind"], m["step"]) for m in metric_lines})
    assert runs.count_metrics(db, run_id, "val") == 3
    cluster_events = db.execute("SELECT message FROM events WHERE job_id = ? AND message LIKE '[cluster]%'", (job_id,)).fetchall()
    assert len(cluster_events) == sum(1 for ln in lines if ln["t"] == "event")
    # Done, with the same metrics shape as the run trained here, and the checkpoint verified.
    run = runs.get(db, run_id)
    assert run["status"] == "done" and run["epochs_done"] == 3
    assert set(run["metrics"]) == set(phone["local_run"]["metrics"])
    ckpt = Path(run["checkpoint_path"])
    assert ckpt.parent == db_path.parent / "phone-files" / "runs" / str(run_id)
    reported = next(ln for ln in lines if ln["t"] == "artifact" and ln["name"] == ckpt.name)
    row = db.execute("SELECT sha256 FROM artifacts WHERE path = ?", (str(ckpt),)).fetchone()
    assert sha256_file(ckpt) == reported["sha256"] == row[0]
    assert not (db_path.parent / "phone-files" / "cluster" / remote["submission_id"]).exists()  # transfer area emptied
    # The token is in none of: the Ray job's details (metadata, runtime env), its log, the phone's store.
    details = json.dumps(api.info(remote["submission_id"]))
    assert ray_head.token not in details and ray_head.token not in logs and "runtime_env" in details
    assert ray_head.token.encode() not in b"".join(p.read_bytes() for p in db_path.parent.glob("phone.db*"))


def test_export_on_the_cluster_returns_variants_measured_here(phone, ray_head):
    db_path, run_id = phone["db_path"], phone["local_run"]["run_id"]
    r = cli(db_path, ray_head, "export", str(run_id), "--on", "local", "--variants", "fp32,int8-dynamic", "--wait", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["cluster"] == "local" and [v["name"] for v in result["variants"]] == ["fp32", "int8-dynamic"]
    assert all(v["status"] == "benchmarked" and v["latency_p50_ms"] > 0 for v in result["variants"])
    files = db_path.parent / "phone-files"
    for v in result["variants"]:
        assert Path(v["path"]).is_relative_to(files) and Path(v["path"]).is_file()
    listed = json.loads(cli(db_path, ray_head, "models", "list", "--run", str(run_id), "--json").stdout)["models"]
    assert {m["name"] for m in listed} >= {"fp32", "int8-dynamic"}
    db = store.connect(db_path)
    for v in result["variants"]:
        row = db.execute("SELECT sha256, meta FROM variants WHERE id = ?", (v["variant_id"],)).fetchone()
        assert sha256_file(v["path"]) == row[0] and json.loads(row[1])["source"] == "cluster local"
    bench = cli(db_path, ray_head, "bench", *(v["path"] for v in result["variants"]), "--dataset", "digits", "--json")
    assert bench.returncode == 0, bench.stderr
    measured = json.loads(bench.stdout.strip().splitlines()[-1])["models"]
    assert len(measured) == 2 and all(m["latency_p50_ms"] > 0 and m["agreement"] >= 0.98 for m in measured)

