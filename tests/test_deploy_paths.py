"""`pocketops deploy` and the dashboard's Deploy form are one code path: the same rows, modulo ids and times."""
from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest

import store
from core.worker import Worker
from deployers.local import _alive
from store import deployments as store_deployments
from store import events, jobs
from tests._deploy_helpers import make_variant
from tests.test_deploy_cli import cli
from tui.app import make_app
from tui.panels.deploy import DeployDialog

pytestmark = pytest.mark.anyio
VOLATILE = {"id", "created_at", "updated_at", "claimed_at", "heartbeat_at", "finished_at", "worker_id", "url",
            "health_latency_ms", "cold_start_ms", "pid", "server_pid", "port", "started", "bundle", "workdir",
            "load_ms", "deployment_id", "job_id", "ts", "create_time"}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _seeded(home):
    db_path = home / "pocketops.db"
    db = store.connect(db_path)
    make_variant(db, db_path, name="fp32", seed=0)
    return db, db_path


def _plain(value, home):
    """Ids, times, ports, pids and the home directory out: what must be equal between the two paths."""
    if isinstance(value, dict):
        return {k: _plain(v, home) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list):
        return [_plain(v, home) for v in value]
    if isinstance(value, str):
        return re.sub(r"\d+(\.\d+)?", "N", value.replace(str(home), "HOME"))
    return value


def rows(db, home) -> dict:
    """The rows a deploy leaves: deployments, jobs (kind, payload, status, result) and events."""
    return _plain({
        "deployments": store_deployments.list_all(db),
        "jobs": [{k: j[k] for k in ("kind", "payload", "status", "result", "error", "attempts", "run_id")}
                 for j in reversed(jobs.list_jobs(db))],
        "events": [{k: e[k] for k in ("level", "source", "message", "run_id")} for e in events.since(db, 0)],
    }, home)


async def wait_for(pilot, condition, timeout: float = 90.0) -> None:
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.02)


def _stop_servers(db) -> None:
    for row in store_deployments.list_all(db):
        for key in ("pid", "server_pid"):
            pid = row["meta"].get(key)
            if pid and _alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


async def test_cli_and_dashboard_deploys_leave_the_same_rows(tmp_path):
    cli_db, _ = _seeded(tmp_path / "cli")
    dash_db, dash_path = _seeded(tmp_path / "dash")
    try:
        # The CLI: look at the plan, then deploy (the form's two steps).
        for argv in (["--dry-run"], []):
            proc = cli(tmp_path / "cli", "deploy", "1", "--target", "local", "--port", "0", "--json", *argv)
            assert proc.returncode == 0, proc.stderr

        # The dashboard: Deploy panel → n → Plan → (a worker plans) → Deploy → (a worker deploys).
        app = make_app(dash_path, poll_interval=0.2, sample_device=False)
        async with app.run_test(size=(40, 20)) as pilot:
            await pilot.press("p")
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, DeployDialog))
            dialog = app.screen
            dialog.query_one("#port").value = "0"
            await pilot.pause()
            await pilot.click("#plan-button")
            await wait_for(pilot, lambda: jobs.list_jobs(dash_db))
            runner = threading.Thread(target=lambda: Worker(dash_path).run(once=True))
            runner.start()
            await wait_for(pilot, lambda: not dialog.query_one("#deploy-button").disabled)
            runner.join()
            # The plan text just arrived: let the form lay out again before tapping, or the tap lands
            # where the button was a frame ago (under load it did: no deploy job, a 90 s timeout).
            await pilot.pause()
            await pilot.click("#deploy-button")
            await wait_for(pilot, lambda: len(jobs.list_jobs(dash_db)) == 2)
        Worker(dash_path).run(once=True)

        cli_rows, dash_rows = rows(cli_db, tmp_path / "cli"), rows(dash_db, tmp_path / "dash")
        assert [j["kind"] for j in dash_rows["jobs"]] == ["deploy-plan", "deploy"]
        assert dash_rows["deployments"] and dash_rows["deployments"][0]["status"] == "running"
        assert dash_rows["events"], "a deploy logs what it did"
        assert cli_rows == dash_rows
    finally:
        _stop_servers(cli_db)
        _stop_servers(dash_db)
