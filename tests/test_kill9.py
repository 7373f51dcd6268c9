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
        job_id = jobs.enqueue(db, "deploy", {"action": "deploy", "variant_id": vid, "target": "local",
                                             "options": {"port": 0}})
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
