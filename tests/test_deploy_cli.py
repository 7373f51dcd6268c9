"""`pocketops deploy` and `pocketops deployments` end to end in subprocesses, and the worker's deploy job."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import store
from core.worker import Worker
from deployers.local import _alive
from store import deployments as store_deployments
from store import jobs
from tests._deploy_helpers import make_variant

ROOT = Path(__file__).resolve().parent.parent


def cli(home: Path, *argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "POCKETOPS_API_KEY"}
    full.update({"POCKETOPS_HOME": str(home), **(env or {})})
    return subprocess.run([sys.executable, "-m", "tui.cli", *argv], cwd=ROOT, env=full, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def home(tmp_path):
    home = tmp_path / "home"
    db_path = home / "pocketops.db"
    db = store.connect(db_path)
    make_variant(db, db_path, name="fp32", seed=0)
    make_variant(db, db_path, name="int8", seed=1)
    yield home
    for row in store_deployments.list_all(db):
        pid = row["meta"].get("pid")
        if pid and _alive(pid):
            os.killpg(pid, signal.SIGKILL)


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def test_dry_run_prints_the_plan_and_changes_nothing(home):
    before = files_under(home)
    proc = cli(home, "deploy", "1", "--target", "local", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)["plan"]
    assert {f["path"] for f in plan["files"]} == {"api.py", "model.json", "model.onnx", "monitor.json", "monitor.py", "predictor.py",
                                                  "reference.npz", "runtimes.py", "server.py"}
    assert all(f["size_bytes"] > 0 for f in plan["files"])
    assert plan["estimated_monthly_cost_usd"] == 0 and any("onnxruntime" in r for r in plan["requirements"])
    assert files_under(home) == before
    assert store_deployments.list_all(store.connect(home / "pocketops.db")) == []
    text = cli(home, "deploy", "1", "--target", "local", "--dry-run", "--host", "0.0.0.0")
    assert "estimated cost: $0.00/month" in text.stdout and "API key" in text.stdout


def test_deploy_list_status_rollback_stop(home):
    first = cli(home, "deploy", "1", "--target", "local", "--port", "0", "--json")
    assert first.returncode == 0, first.stderr
    one = json.loads(first.stdout)
    assert set(one) == {"deployment_id", "target", "version", "status", "url"}
    assert (one["target"], one["version"], one["status"]) == ("local", 1, "running")
    port = one["url"].rsplit(":", 1)[1]
    two = json.loads(cli(home, "deploy", "2", "--target", "local", "--port", port, "--json").stdout)
    assert (two["version"], two["status"], two["url"]) == (2, "running", one["url"])

    listed = json.loads(cli(home, "deployments", "list", "--json").stdout)
    assert [(r["deployment_id"], r["status"]) for r in listed] == [(2, "running"), (1, "superseded")]
    status = json.loads(cli(home, "deployments", "status", "2", "--json").stdout)
    assert status["status"] == "running" and status["health_latency_ms"] > 0

    # No terminal and no --yes: refuse, one line, nothing changes.
    refused = cli(home, "deployments", "rollback", "2")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "--yes" in refused.stderr
    rolled = json.loads(cli(home, "deployments", "rollback", "2", "--yes", "--json").stdout)
    assert rolled["version"] == 3 and rolled["variant_id"] == 1 and rolled["rolled_back_from"] == 2
    stopped = cli(home, "deployments", "stop", str(rolled["deployment_id"]), "--yes")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    text = cli(home, "deployments", "list").stdout.splitlines()
    assert text[0].startswith("#3 local v3 stopped") and "rolled-back" in text[1]


@pytest.mark.parametrize("argv, message", [
    (["deploy", "9", "--target", "local"], "variant 9 does not exist"),
    (["deployments", "status", "77"], "deployment 77 does not exist"),
    (["deployments", "rollback", "77", "--yes"], "deployment 77 does not exist"),
])
def test_errors_are_one_line(home, argv, message):
    proc = cli(home, *argv)
    assert proc.returncode == 1 and proc.stderr.startswith("pocketops: ") and proc.stderr.count("\n") == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_missing_package_is_one_line(home):
    """Without onnxruntime (as on a fresh Termux) a local deploy says what to install, no traceback."""
    code = ("import sys; sys.modules['onnxruntime'] = None; from tui.cli import main; "
            "sys.exit(main(['deploy', '1', '--target', 'local', '--port', '0']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "POCKETOPS_HOME": str(home)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "onnxruntime" in proc.stderr and "pkg install python-onnxruntime" in proc.stderr


def test_api_key_never_stored_or_printed(home):
    key = "s3cret-key-for-test"
    proc = cli(home, "deploy", "1", "--target", "local", "--host", "0.0.0.0", "--port", "0", "--json",
               env={"POCKETOPS_API_KEY": key})
    assert proc.returncode == 0, proc.stderr
    assert key not in proc.stdout + proc.stderr
    db_bytes = b"".join(p.read_bytes() for p in home.glob("pocketops.db*"))
    assert key.encode() not in db_bytes
    logs = "".join(p.read_text() for p in home.rglob("server.log"))
    assert key not in logs
    listed = cli(home, "deployments", "list", "--json").stdout
    assert key not in listed and json.loads(listed)[0]["status"] == "running"


def test_worker_runs_deploy_jobs(home):
    """The dashboard's actions are deploy jobs (one kind per action); the worker runs them through the same service."""
    from core import jobkinds
    from core.errors import ConfigError

    db_path = home / "pocketops.db"
    db = store.connect(db_path)
    job = jobkinds.queue(db, "deploy", variant_id=1, target="local", options={"port": 0})
    with pytest.raises(ConfigError, match="unknown job kind 'deploy-explode'"):
        jobkinds.queue(db, "deploy-explode", deployment_id=1)
    assert Worker(db_path).run(once=True) == 1
    done = jobs.get(db, job)
    assert done["status"] == "done" and done["result"]["status"] == "running"
    stop = jobkinds.queue(db, "deploy-stop", deployment_id=done["result"]["deployment_id"])
    Worker(db_path).run(once=True)
    assert jobs.get(db, stop)["result"]["status"] == "stopped"
    assert [j["kind"] for j in jobs.list_jobs(db)] == ["deploy-stop", "deploy"]


def test_two_models_served_side_by_side_with_names(home):
    """--name starts another line: deploying a second model does not replace the first."""
    one = json.loads(cli(home, "deploy", "1", "--target", "local", "--port", "0", "--json").stdout)
    two = cli(home, "deploy", "2", "--target", "local", "--name", "int8-demo", "--port", "0", "--json")
    assert two.returncode == 0, two.stderr
    two = json.loads(two.stdout)
    assert (two["version"], two["status"]) == (1, "running") and two["url"] != one["url"]
    listed = {r["deployment_id"]: (r["name"], r["status"]) for r in json.loads(cli(home, "deployments", "list", "--json").stdout)}
    assert listed == {one["deployment_id"]: ("local", "running"), two["deployment_id"]: ("int8-demo", "running")}
    wrong = cli(home, "deploy", "1", "--target", "gcp", "--name", "x", "--dry-run")
    assert wrong.returncode == 1 and "--name is for --target local" in wrong.stderr
