"""A background worker leaves when nobody needs it, and the dashboard starts one again on demand.

Real processes throughout: workers are ``python -m core.worker`` children, the dashboard is the
real app (App.run_test) writing its heartbeat into a real SQLite store. Waits are on process
exit and on store rows, with generous deadlines.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import store
from core import worker as core_worker
from store import dashboards, events, jobs, workers

pytestmark = pytest.mark.phone
ROOT = Path(__file__).resolve().parent.parent
HOST = socket.gethostname()
DEADLINE_S = 60.0

# A worker process with the test handlers registered (they are looked up by name in HANDLERS).
WORKER = """
import sys
from core import worker
worker.HANDLERS.update({"ok": "tests._handlers:ok", "sleepy": "tests._handlers:sleepy"})
sys.exit(worker.main(sys.argv[1:]))
"""


def start_worker(db_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "POCKETOPS_HEARTBEAT_S": "0.1"}
    return subprocess.Popen([sys.executable, "-c", WORKER, "--db", str(db_path), *args], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(cond, what: str, timeout: float = DEADLINE_S, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = cond()
        if found:
            return found
        if proc is not None:
            assert proc.poll() is None, f"the worker exited (code {proc.returncode}) before {what}: {proc.stderr.read()}"
        time.sleep(0.05)
    raise AssertionError(f"not in {timeout:g} s: {what}")


def finished(proc: subprocess.Popen) -> int:
    """The worker's exit code, failing if it is still running after the deadline."""
    try:
        code = proc.wait(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the worker did not leave") from None
    assert "Traceback" not in proc.stderr.read()
    return code


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def registered_for(db, pid: int) -> float:
    """Seconds the worker with ``pid`` has been registered, as its own heartbeats show (0 if not yet)."""
    row = next((w for w in workers.alive(db, within=30) if w["pid"] == pid), None)
    return row["heartbeat_at"] - row["started_at"] if row else 0.0


def test_idle_worker_leaves_when_no_dashboard_is_open(db, procs):
    """With --idle-exit and no live dashboard (only a dead one's and a long-silent one's rows), the worker exits 0."""
    conn, path = db
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dashboards.attach(conn, "killed", dead.pid, HOST)  # fresh heartbeat, process gone (signal 9)
    dashboards.attach(conn, "silent", os.getpid(), HOST)
    conn.execute("UPDATE dashboards SET heartbeat_at = heartbeat_at - 3600 WHERE id = 'silent'")
    t0 = time.time()
    proc = start_worker(path, "--idle-exit", "0.5")
    procs.append(proc)
    assert finished(proc) == 0
    [row] = conn.execute("SELECT started_at, stopped_at FROM workers").fetchall()
    assert row[1] is not None and row[1] - row[0] >= 0.5 and row[1] >= t0
    assert any("left after 0.5 s idle" in e["message"] for e in events.since(conn))
    assert core_worker.live_workers(conn) == []


def test_worker_stays_while_a_dashboard_beats_and_leaves_after_it_closes(db, procs):
    """A fresh dashboard heartbeat keeps an idle worker for many idle-exit periods; closing it lets the worker go."""
    conn, path = db
    dashboards.attach(conn, "open", os.getpid(), HOST)
    proc = start_worker(path, "--idle-exit", "0.3")
    procs.append(proc)
    wait_until(lambda: registered_for(conn, proc.pid) >= 3.0, "ten idle-exit periods with the dashboard open", proc=proc)
    dashboards.detach(conn, "open")
    closed_at = time.time()
    assert finished(proc) == 0
    stopped = conn.execute("SELECT stopped_at FROM workers").fetchone()[0]
    assert stopped >= closed_at, "it left after the dashboard closed, not before"


def test_worker_runs_every_queued_job_before_leaving(db, procs):
    """A job longer than the idle time and one queued behind it both run; the idle clock starts after the last."""
    conn, path = db
    long_job = jobs.enqueue(conn, "sleepy", {"s": 1.5})
    short_job = jobs.enqueue(conn, "ok", {"x": 3})
    proc = start_worker(path, "--idle-exit", "0.3")
    procs.append(proc)
    assert finished(proc) == 0
    done = {j: jobs.get(conn, j) for j in (long_job, short_job)}
    assert [done[j]["status"] for j in (long_job, short_job)] == ["done", "done"]
    stopped = conn.execute("SELECT stopped_at FROM workers").fetchone()[0]
    assert stopped - done[short_job]["finished_at"] >= 0.3


def test_pocketops_worker_by_hand_stays_without_idle_exit(db, procs):
    """`pocketops worker` without --idle-exit outlives many idle periods and no dashboard; with it, it leaves."""
    conn, path = db
    env = {**os.environ, "POCKETOPS_HEARTBEAT_S": "0.1", "POCKETOPS_IDLE_EXIT_S": "0.2"}
    by_hand = subprocess.Popen([sys.executable, "-m", "tui.cli", "--db", str(path), "worker"], cwd=ROOT, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(by_hand)
    wait_until(lambda: registered_for(conn, by_hand.pid) >= 2.0, "ten POCKETOPS_IDLE_EXIT_S periods", proc=by_hand)
    by_hand.send_signal(signal.SIGTERM)
    assert finished(by_hand) == 0
    leaving = subprocess.run([sys.executable, "-m", "tui.cli", "--db", str(path), "worker", "--idle-exit", "0.2", "--json"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=DEADLINE_S)
    assert leaving.returncode == 0 and "Traceback" not in leaving.stderr
    assert '"left_idle": true' in leaving.stdout
    bad = subprocess.run([sys.executable, "-m", "tui.cli", "--db", str(path), "worker", "--idle-exit", "soon"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=DEADLINE_S)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "expected seconds" in bad.stderr


def test_idle_exit_setting_is_read_from_the_environment(monkeypatch):
    from core.errors import ConfigError

    monkeypatch.delenv("POCKETOPS_IDLE_EXIT_S", raising=False)
    assert core_worker.idle_exit_setting() == core_worker.DEFAULT_IDLE_EXIT_S == 300
    monkeypatch.setenv("POCKETOPS_IDLE_EXIT_S", "45")
    assert core_worker.idle_exit_setting() == 45
    monkeypatch.setenv("POCKETOPS_IDLE_EXIT_S", "soon")
    with pytest.raises(ConfigError, match="POCKETOPS_IDLE_EXIT_S='soon': expected seconds"):
        core_worker.idle_exit_setting()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_dashboard_keeps_its_worker_and_starts_another_when_a_job_waits(tmp_path, monkeypatch):
    """The dashboard starts a worker that stays while it is open; after Android kills that worker, queuing a
    job from the Deploy panel starts a new one; after the dashboard closes the new one leaves when idle."""
    from core.atomic import sha256_file
    from store import deployments, variants
    from tui.app import make_app

    monkeypatch.setenv("POCKETOPS_IDLE_EXIT_S", "0.5")
    monkeypatch.setenv("POCKETOPS_HEARTBEAT_S", "0.1")
    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    model = ROOT / "tests" / "fixtures" / "digits-mlp.onnx"
    vid = variants.insert(db, name="fp32", path=str(model), sha256=sha256_file(model), size_bytes=model.stat().st_size)
    row = deployments.create(db, variant_id=vid, target="local", name="local")
    deployments.update(db, row["id"], status="stopped", url="http://127.0.0.1:9")

    app = make_app(db_path, poll_interval=0.2, sample_device=False, start_worker=True)
    spawned: list[subprocess.Popen] = []
    try:
        async with app.run_test(size=(40, 20)) as pilot:

            async def until(cond, what: str):
                deadline = time.monotonic() + DEADLINE_S
                while not cond():
                    assert time.monotonic() < deadline, f"not in {DEADLINE_S:g} s: {what}"
                    await pilot.pause(0.05)

            await until(lambda: app._worker_proc is not None, "a worker started with the dashboard")
            first = app._worker_proc
            spawned.append(first)
            assert dashboards.recent(db, within=30)[0]["pid"] == os.getpid()
            # Idle, with a 0.5 s idle exit, it stays for many periods because the dashboard is open.
            await until(lambda: registered_for(db, first.pid) >= 3.0 or first.poll() is not None, "first worker beats")
            assert first.poll() is None, "the worker left while the dashboard was open"

            first.send_signal(signal.SIGKILL)  # Android's phantom process killer
            first.wait(timeout=DEADLINE_S)
            await pilot.press("p")
            panel = app.query_one("#panel-deploy")
            await until(lambda: len(panel.rows) == 1, "the deployment listed")
            await pilot.press("s")  # queue a status check: the tap a user makes
            await until(lambda: app._worker_proc is not first, "a new worker for the queued job")
            second = app._worker_proc
            spawned.append(second)
            [status_job] = jobs.list_jobs(db)
            await until(lambda: jobs.get(db, status_job["id"])["status"] in jobs.FINAL, "the status check ran")
            assert jobs.get(db, status_job["id"])["worker_id"].split("-")[-2] == str(second.pid)
            assert any("for the queued job" in message for _, message in app.notices)
        assert dashboards.recent(db, within=3600) == [], "closing the dashboard removed its row"
        assert second.wait(timeout=DEADLINE_S) == 0, "the worker left once the dashboard was closed"
    finally:
        for proc in spawned:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
