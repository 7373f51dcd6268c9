"""Worker loop: results, failures as values, cancel, graceful stop, dead-worker reaping."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

import store
from core import worker as core_worker
from store import events, jobs, workers

pytestmark = pytest.mark.phone  # none of these need torch or onnx (make test-phone)


@pytest.fixture
def handlers(monkeypatch):
    monkeypatch.setattr(core_worker, "HEARTBEAT_S", 0.05)
    monkeypatch.setitem(core_worker.HANDLERS, "ok", "tests._handlers:ok")
    monkeypatch.setitem(core_worker.HANDLERS, "user_error", "tests._handlers:user_error")
    monkeypatch.setitem(core_worker.HANDLERS, "bug", "tests._handlers:bug")
    monkeypatch.setitem(core_worker.HANDLERS, "slow", "tests._handlers:slow")


def test_jobs_run_in_order_and_failures_are_recorded(tmp_path, handlers):
    """A bug or a user error in one job is recorded with its reason; the worker goes on to the next."""
    path = tmp_path / "p.db"
    db = store.connect(path)
    a = jobs.enqueue(db, "ok", {"x": 7})
    b = jobs.enqueue(db, "user_error")
    c = jobs.enqueue(db, "bug")
    d = jobs.enqueue(db, "no-such-kind")
    e = jobs.enqueue(db, "ok", {"x": 8})
    ran = core_worker.Worker(path, kinds=("ok", "user_error", "bug", "no-such-kind")).run(once=True)
    assert ran == 5
    got = {j: jobs.get(db, j) for j in (a, b, c, d, e)}
    assert got[a]["status"] == "done" and got[a]["result"] == {"echo": 7}
    assert got[b]["status"] == "failed" and "does not exist" in got[b]["error"]
    assert got[c]["status"] == "failed" and got[c]["error"].startswith("KeyError")
    assert got[d]["status"] == "failed" and "no handler for job kind 'no-such-kind'" in got[d]["error"]
    assert got[e]["result"] == {"echo": 8}
    assert any("Traceback" in ev["message"] for ev in events.since(db)), "a bug's traceback is kept in events"


def test_cancel_request_reaches_a_running_job(tmp_path, handlers):
    """A cancel written by another connection stops the running job within a heartbeat or two."""
    path = tmp_path / "p.db"
    db = store.connect(path)
    job_id = jobs.enqueue(db, "slow")
    w = core_worker.Worker(path, kinds=("slow",))
    t = threading.Thread(target=w.run, kwargs={"once": True})
    t.start()
    _wait(lambda: jobs.get(db, job_id)["status"] == "running")
    start = time.monotonic()
    jobs.request_cancel(db, job_id)
    t.join(timeout=10)
    assert jobs.get(db, job_id)["status"] == "cancelled"
    assert time.monotonic() - start < 3


def test_stop_releases_the_job_for_the_next_worker(tmp_path, handlers):
    """Stopping a worker (what SIGTERM does) gives the job back; another worker then finishes it."""
    path = tmp_path / "p.db"
    db = store.connect(path)
    job_id = jobs.enqueue(db, "slow")
    w = core_worker.Worker(path, kinds=("slow",))
    t = threading.Thread(target=w.run)
    t.start()
    _wait(lambda: jobs.get(db, job_id)["status"] == "running")
    w.request_stop()
    t.join(timeout=10)
    job = jobs.get(db, job_id)
    assert job["status"] == "queued" and job["worker_id"] is None
    assert not workers.alive(db)
    again = jobs.claim(db, "next")
    assert again["id"] == job_id and again["attempts"] == 2


def test_job_of_a_killed_worker_is_requeued_at_once(tmp_path):
    """A running job whose worker's pid is gone on this host is reaped without waiting for staleness."""
    path = tmp_path / "p.db"
    db = store.connect(path)
    job_id = jobs.enqueue(db, "train")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    workers.register(db, "ghost", dead.pid, socket.gethostname())
    jobs.claim(db, "ghost")
    assert core_worker.reap_dead(db, socket.gethostname()) == 1
    assert jobs.get(db, job_id)["status"] == "queued"
    assert core_worker.reap_dead(db, socket.gethostname()) == 0
    # a job held by a live process (this one) is left alone
    workers.register(db, "me", os.getpid(), socket.gethostname())
    jobs.claim(db, "me")
    assert core_worker.reap_dead(db, socket.gethostname()) == 0


def test_a_zombie_worker_pid_is_not_alive(tmp_path):
    """A worker that died but was not reaped by its parent (a zombie) holds nothing: its job is requeued."""
    import socket

    import psutil

    path = tmp_path / "p.db"
    db = store.connect(path)
    job_id = jobs.enqueue(db, "train")
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # exits; never waited for until the end
    try:
        created = psutil.Process(child.pid).create_time()
        _wait(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, timeout=30)
        assert not core_worker.pid_alive(child.pid) and not core_worker.pid_alive(child.pid, created)
        workers.register(db, "zombie", child.pid, socket.gethostname(), created)
        jobs.claim(db, "zombie")
        assert core_worker.live_workers(db) == []
        assert core_worker.reap_dead(db, socket.gethostname()) == 1
        assert jobs.get(db, job_id)["status"] == "queued"
    finally:
        child.wait()


def test_a_reused_pid_is_not_the_worker_that_registered(tmp_path):
    """The worker died and the kernel gave its pid to another process: the recorded create time
    differs, so the pid is not taken for the worker and its job is requeued at once."""
    import socket

    path = tmp_path / "p.db"
    db = store.connect(path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = core_worker.process_create_time(other.pid)
        assert started is not None and core_worker.pid_alive(other.pid, started)
        assert not core_worker.pid_alive(other.pid, started - 100)  # same pid, an older process
        # the same live process under its true create time is a live worker and keeps its job...
        workers.register(db, "real", other.pid, socket.gethostname(), started)
        real_job = jobs.enqueue(db, "train")
        jobs.claim(db, "real", job_id=real_job)
        assert core_worker.reap_dead(db, socket.gethostname()) == 0
        assert [w["id"] for w in core_worker.live_workers(db)] == ["real"]
        # ...but a registration recorded by an earlier process with that pid is dead
        workers.register(db, "earlier", other.pid, socket.gethostname(), started - 100)
        job_id = jobs.enqueue(db, "train")
        jobs.claim(db, "earlier", job_id=job_id)
        assert [w["id"] for w in core_worker.live_workers(db)] == ["real"]
        assert core_worker.reap_dead(db, socket.gethostname()) == 1
        assert jobs.get(db, job_id)["status"] == "queued" and jobs.get(db, real_job)["status"] == "running"
    finally:
        other.kill()
        other.wait()


def test_a_worker_records_its_process_create_time(tmp_path, handlers):
    path = tmp_path / "p.db"
    db = store.connect(path)
    jobs.enqueue(db, "ok", {"x": 1})
    core_worker.Worker(path, worker_id="w1", kinds=("ok",)).run(once=True)
    [row] = [w for w in store.db.rows(db, "SELECT * FROM workers") if w["id"] == "w1"]
    assert row["pid"] == os.getpid() and abs(row["create_time"] - core_worker.process_create_time()) < 0.01


def test_ensure_worker_starts_one_background_worker(tmp_path):
    """The dashboard's start-up starts a worker process only when none is alive, and it survives on its own."""
    path = tmp_path / "p.db"
    store.connect(path)
    env_home = os.environ.get("POCKETOPS_HOME")
    pid = core_worker.ensure_worker(path)
    try:
        assert pid
        _wait(lambda: core_worker.alive_workers(path), timeout=20)
        assert core_worker.ensure_worker(path) is None
        assert [w["pid"] for w in core_worker.alive_workers(path)] == [pid]
    finally:
        os.kill(pid, 15)
        _wait(lambda: not core_worker.alive_workers(path), timeout=20)
    assert os.environ.get("POCKETOPS_HOME") == env_home


def _wait(cond, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# -- device telemetry (what the worker records every few seconds) --------------------------

def test_android_permission_errors_become_unknown_or_fallbacks(monkeypatch):
    """Termux: /proc/stat denied, no battery sensors, no Termux:API. CPU falls back to the load
    average; what nothing tells is None (shown as unknown); no PermissionError escapes."""
    import psutil

    from core import telemetry

    def denied(*_a, **_k):
        raise PermissionError(13, "Permission denied", "/proc/stat")

    for name in ("cpu_percent", "virtual_memory", "sensors_battery"):
        monkeypatch.setattr(psutil, name, denied)
    monkeypatch.delattr(psutil, "sensors_temperatures", raising=False)  # absent on Android builds
    monkeypatch.setattr(telemetry, "_termux_battery_cmd", lambda: None)
    monkeypatch.setattr(telemetry, "_battery_cache", None)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    reading = telemetry.sample()
    assert reading == {"cpu_percent": 25.0, "ram_used_mb": None, "ram_total_mb": None,
                       "battery_percent": None, "charging": None, "temperature_c": None}


def test_first_cpu_reading_is_measured_not_psutils_placeholder(monkeypatch):
    """psutil's first cpu_percent(None) in a process is a meaningless 0.0: the first reading measures an interval."""
    import psutil

    from core import telemetry

    calls = []
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: calls.append(interval) or 37.0)
    monkeypatch.setattr(telemetry, "_cpu_primed", False)
    assert telemetry._cpu_percent() == 37.0 and telemetry._cpu_percent() == 37.0
    assert calls[0] and calls[0] > 0 and calls[1] is None


def test_a_hanging_termux_battery_call_times_out_as_unknown(tmp_path, monkeypatch):
    """`termux-battery-status` can hang (Termux:API app not installed): it is cut off and reads as unknown."""
    from core import telemetry

    fake = tmp_path / "termux-battery-status"
    fake.write_text("#!/bin/sh\nsleep 30\necho {}\n")  # a child process holds the pipe
    fake.chmod(0o755)
    monkeypatch.setattr(telemetry, "_termux_battery_cmd", lambda: str(fake))
    monkeypatch.setattr(telemetry, "BATTERY_TIMEOUT_S", 0.3)
    t0 = time.monotonic()
    assert telemetry._termux_battery() == {}
    assert time.monotonic() - t0 < 3
