"""The one registry of job kinds (core.jobkinds): validation before any row, handlers that resolve,
the old one-kind deploy rows migrated, and no job kind queued anywhere but through the registry."""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

import store
from core import jobkinds
from core.errors import ConfigError
from store import jobs

ROOT = Path(__file__).resolve().parent.parent


def job_count(db) -> int:
    return db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]


def test_every_kind_has_a_handler_the_worker_uses():
    from core import worker

    for name in jobkinds.names():
        module, _, function = jobkinds.handler_path(name).partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name
        assert worker.HANDLERS[name] == jobkinds.handler_path(name)
    assert {"train", "export", "bench", "deploy", "deploy-plan", "deploy-status", "deploy-rollback",
            "deploy-stop"} <= set(jobkinds.names())


@pytest.mark.parametrize("kind, payload, message", [
    ("train", {}, "train job: payload needs field 'run_id' (int)"),
    ("train", {"run_id": "3"}, "train job: field 'run_id' must be int, not '3'"),
    ("export", {"run_id": 1, "colour": "red"}, "export job: unknown field(s) colour"),
    ("export", {"run_id": 1, "budget_points": -1}, "budget_points must be ≥ 0, not -1"),
    ("bench", {"run_id": 1, "variant_ids": [2]}, "bench job: give either run_id or variant_ids"),
    ("deploy", {"variant_id": 1}, "deploy job: payload needs field 'target' (str)"),
    ("deploy", {"variant_id": 1, "target": "local", "options": {"api_key": "k"}}, "api_key are secrets"),
    ("deploy-stop", {"deployment_id": None}, "deploy-stop job: field 'deployment_id' must be int, not None"),
    ("deploy-explode", {}, "unknown job kind 'deploy-explode'"),
])
def test_a_bad_payload_is_one_line_and_writes_no_row(tmp_path, kind, payload, message):
    db = store.connect(tmp_path / "t.db")
    with pytest.raises(ConfigError) as caught:
        jobkinds.queue(db, kind, payload)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert job_count(db) == 0


def test_cli_refuses_a_bad_payload_in_one_line_and_writes_no_row(tmp_path, monkeypatch, capsys):
    from tui.cli import main

    monkeypatch.setenv("POCKETOPS_HOME", str(tmp_path))
    db = store.connect(tmp_path / "pocketops.db")
    assert main(["export", "1", "--budget", "-1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pocketops: ") and err.count("\n") == 1 and "budget_points must be ≥ 0" in err
    assert main(["export", "1", "--variants", "fp32,int3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "int3" in err
    assert job_count(db) == 0


def test_queued_one_kind_deploy_rows_become_their_own_kinds(tmp_path):
    """A store with "deploy" rows of the old shape (an "action" field) migrates them; done rows stay as they were."""
    from store import migrations

    db = store.connect(tmp_path / "t.db")
    old = {
        "stop": jobs.enqueue(db, "deploy", {"action": "stop", "deployment_id": 4}),
        "plan": jobs.enqueue(db, "deploy", {"action": "plan", "variant_id": 1, "target": "local", "options": {}}),
        "deploy": jobs.enqueue(db, "deploy", {"action": "deploy", "variant_id": 1, "target": "gcp",
                                              "options": {"region": "europe-west1"}}),
        "explode": jobs.enqueue(db, "deploy", {"action": "explode"}),
    }
    done = jobs.enqueue(db, "deploy", {"action": "status", "deployment_id": 4})
    db.execute("UPDATE jobs SET status = 'done' WHERE id = ?", (done,))
    migrations._deploy_kinds(db)
    rows = {name: jobs.get(db, job_id) for name, job_id in old.items()}
    assert (rows["stop"]["kind"], rows["stop"]["payload"]) == ("deploy-stop", {"deployment_id": 4})
    assert (rows["plan"]["kind"], rows["plan"]["payload"]) == ("deploy-plan", {"variant_id": 1, "target": "local",
                                                                               "options": {}})
    assert rows["deploy"]["kind"] == "deploy" and jobkinds.payload_of(rows["deploy"]).options == {"region": "europe-west1"}
    assert rows["explode"]["status"] == "failed" and "unknown action 'explode'" in rows["explode"]["error"]
    assert jobs.get(db, done)["kind"] == "deploy" and jobs.get(db, done)["payload"]["action"] == "status"
    for name in ("stop", "plan", "deploy"):
        jobkinds.payload_of(rows[name])  # each is a valid payload of its new kind


def _python_lines(*packages: str):
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            for number, text in enumerate(path.read_text().splitlines(), 1):
                yield path.relative_to(ROOT).as_posix(), number, text


def test_job_kinds_are_queued_only_through_the_registry():
    """`grep -rn "kind=" core tui deployers` and `grep -rn "enqueue(" …` find job kinds only in core/jobkinds.py.

    Other ``kind=`` arguments name artifacts or datasets ("onnx", "csv"…), never a job kind.
    """
    kinds = "|".join(re.escape(k) for k in jobkinds.names())
    job_kind_arg = re.compile(rf"""\bkind\s*=\s*["']({kinds})["']""")
    found = []
    for path, number, text in _python_lines("core", "tui", "deployers"):
        if path == "core/jobkinds.py":
            continue
        if "enqueue(" in text or job_kind_arg.search(text):
            found.append(f"{path}:{number}: {text.strip()}")
        if re.search(r"""\bjobs\.enqueue\b|from store\.jobs import .*\benqueue\b""", text):
            found.append(f"{path}:{number}: {text.strip()}")
    assert found == [], "queue jobs with core.jobkinds.queue(db, kind, ...):\n" + "\n".join(found)
    # The grep itself: every "kind=" line outside the registry passes something that is not a job kind.
    for path, number, text in _python_lines("core", "tui", "deployers"):
        if path != "core/jobkinds.py" and "kind=" in text:
            for value in re.findall(r"""\bkind\s*=\s*["']([^"']+)["']""", text):
                assert value not in jobkinds.names(), f"{path}:{number}"


def test_handlers_read_their_payload_through_the_registry():
    """No handler reads ``ctx.payload`` raw: each gets its dataclass from ``jobkinds.payload_of``."""
    for name in jobkinds.names():
        module = jobkinds.handler_path(name).partition(":")[0]
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        assert "ctx.payload" not in source, module
        assert "payload_of(ctx.job)" in source, module
    assert json.loads(json.dumps(jobkinds.names()))  # JSON-able names, as the jobs table stores them
