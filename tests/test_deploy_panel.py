"""The Deploy panel driven like a user: lines with status, the plan-first deploy form, confirmed rollback/stop."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import store
from core.worker import Worker
from store import deployments as store_deployments
from store import jobs
from tui.app import make_app
from tui.panels.deploy import MASK, DeployDialog, detail_lines, render_plan
from tests._deploy_helpers import make_variant

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
PHONE, LAPTOP = (40, 20), (120, 40)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def seeded(tmp_path):
    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    vid = make_variant(db, db_path)
    old = store_deployments.create(db, variant_id=vid, target="local", name="local")
    store_deployments.update(db, old["id"], status="superseded", url="http://127.0.0.1:8765", meta={"served": True})
    cur = store_deployments.create(db, variant_id=vid, target="local", name="local")
    store_deployments.update(db, cur["id"], status="running", url="http://127.0.0.1:8765", health_latency_ms=2.4,
                             cold_start_ms=640.0, meta={"served": True, "api_key_required": True})
    space = store_deployments.create(db, variant_id=vid, target="spaces-static", name="me/digits")
    store_deployments.update(db, space["id"], status="sleeping", url="https://me-digits.static.hf.space")
    return db, db_path, cur


async def wait_for(pilot, condition, timeout: float = 30.0) -> None:
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.02)


ACTIONS = {"deploy": "deploy", "deploy-plan": "plan", "deploy-status": "status", "deploy-rollback": "rollback",
           "deploy-stop": "stop"}


def deploy_jobs(db) -> list[dict]:
    """The deploy jobs, newest first, each payload shown with its action (the kind says it: one kind per action)."""
    return [{**j, "payload": {"action": ACTIONS[j["kind"]], **j["payload"]}} for j in jobs.list_jobs(db)
            if j["kind"] in ACTIONS]


def test_detail_lines_mask_secrets_and_show_history(seeded):
    db, _p, cur = seeded
    row = store_deployments.get(db, cur["id"])
    lines = detail_lines(row, store_deployments.list_all(db, target="local"))
    assert lines[1] == "v2 running · variant 1"
    assert "health 2.4 ms · cold start 640 ms" in lines
    assert any(MASK in line for line in lines)
    assert lines[-1] == "history: v2 running, v1 superseded"
    plan = {"target": "local", "files": [{"path": "a", "size_bytes": 2048}], "estimated_monthly_cost_usd": 0.0,
            "requirements": ["onnxruntime"], "notes": []}
    assert render_plan(plan).splitlines()[:4] == ["local: 1 files, 2.0 KB", "  a  2.0 KB", "cost ≈ $0.00/month",
                                                  "needs: onnxruntime"]


@pytest.mark.parametrize("size", [PHONE, LAPTOP], ids=["40x20", "120x40"])
async def test_panel_lists_lines_and_stop_asks_first(seeded, size):
    db, db_path, cur = seeded
    app = make_app(db_path, poll_interval=0.2, sample_device=False)
    async with app.run_test(size=size) as pilot:
        await pilot.press("p")
        panel = app.query_one("#panel-deploy")
        assert app.current_panel is panel
        await wait_for(pilot, lambda: len(panel.rows) == 2)
        table = app.query_one("#deploy-table")
        assert [table.get_row_at(i)[2] for i in range(table.row_count)] == ["running", "sleeping"]
        assert "URL: http://127.0.0.1:8765" in str(app.query_one("#deploy-summary").render())
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("n")  # "No": nothing queued
        await pilot.pause()
        assert deploy_jobs(db) == []
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: deploy_jobs(db))
        assert deploy_jobs(db)[0]["payload"] == {"action": "stop", "deployment_id": cur["id"]}
        await pilot.press("r")
        await wait_for(pilot, lambda: app.screen.query(".dialog-question"))  # the earlier release is read in a thread
        assert "Roll back local v2 to v1 (variant 1)?" in str(app.screen.query_one(".dialog-question").render())
        await pilot.click("#yes")  # a tap works as well as a key
        await wait_for(pilot, lambda: len(deploy_jobs(db)) == 2)
        assert deploy_jobs(db)[0]["payload"] == {"action": "rollback", "deployment_id": cur["id"]}


async def test_deploy_form_shows_the_plan_before_deploying(seeded):
    db, db_path, _cur = seeded
    app = make_app(db_path, poll_interval=0.2, sample_device=False)
    async with app.run_test(size=PHONE) as pilot:
        await pilot.press("p")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployDialog))  # the variants are read in a thread
        dialog = app.screen
        assert isinstance(dialog, DeployDialog)
        assert dialog.query_one("#deploy-button").disabled
        await pilot.click("#plan-button")
        await wait_for(pilot, lambda: deploy_jobs(db))
        # Play the worker: it builds the bundle and answers the plan (onnxruntime stays out of the app).
        runner = threading.Thread(target=lambda: Worker(db_path).run(once=True))
        runner.start()
        await wait_for(pilot, lambda: not dialog.query_one("#deploy-button").disabled, timeout=20)
        runner.join()
        plan_text = str(dialog.query_one("#plan").render())
        assert "local: 9 files" in plan_text and "$0.00/month" in plan_text and "model.onnx" in plan_text
        # All three buttons fit the phone's 40 columns, so each can be tapped.
        for button in ("#plan-button", "#deploy-button", "#cancel"):
            region = dialog.query_one(button).region
            assert region.right <= PHONE[0] and region.width >= 4, (button, region)
        await pilot.click("#deploy-button")
        await wait_for(pilot, lambda: len(deploy_jobs(db)) == 2)
        assert deploy_jobs(db)[0]["payload"] == {"action": "deploy", "variant_id": 1, "target": "local", "options": {}}
        assert not isinstance(app.screen, DeployDialog)


def test_panel_imports_no_onnxruntime_torch_or_onnx():
    code = ("import sys, tui.panels.deploy; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'deployers.service') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_a_failed_attempt_does_not_hide_the_release_that_serves(seeded):
    """v3 failed after v2: the line shows v2 running (what to roll back or stop) and says why v3 failed."""
    db, db_path, cur = seeded
    failed = store_deployments.create(db, variant_id=cur["variant_id"], target="local", name="local")
    store_deployments.update(db, failed["id"], status="failed", error="port 8765 is taken")
    app = make_app(db_path, poll_interval=0.2, sample_device=False)
    async with app.run_test(size=PHONE) as pilot:
        await pilot.press("p")
        panel = app.query_one("#panel-deploy")
        await wait_for(pilot, lambda: len(panel.rows) == 2)
        table = app.query_one("#deploy-table")
        assert table.get_row_at(0)[:3] == ["local", "v2", "running"]
        summary = str(app.query_one("#deploy-summary").render())
        assert "last attempt v3 failed: port 8765 is taken" in summary
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: deploy_jobs(db))
        assert deploy_jobs(db)[0]["payload"] == {"action": "stop", "deployment_id": cur["id"]}


def test_deploy_form_offers_the_recommended_variant_first(tmp_path):
    """The form's variant defaults to the one the Quantize panel recommends, not merely the newest."""
    from store import variants as store_variants
    from tui.panels.deploy import recommended_variant

    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    figures = {"fp32": (0.030, 0.99, 200_000), "fp16": (0.020, 0.99, 100_000), "int8-static": (0.040, 0.99, 50_000)}
    ids = {}
    for name, (p50, acc, size) in figures.items():
        vid = make_variant(db, db_path, name=name)  # also registers the digits dataset
        if not ids:
            from store import datasets as store_datasets
            from store import runs as store_runs

            run_id = store_runs.create(db, dataset_id=store_datasets.by_name(db, "digits")["id"], model="cnn",
                                       config={}, epochs_total=1)
        store_variants.set_bench(db, vid, {"latency_p50_ms": p50, "accuracy": acc, "size_bytes": size})
        db.execute("UPDATE variants SET run_id = ? WHERE id = ?", (run_id, vid))
        ids[name] = vid
    offered = store_deployments.variants(db)
    assert offered[0]["name"] == "int8-static"  # newest first
    assert recommended_variant(db, offered) == ids["fp16"]  # fastest within the budget
    assert DeployDialog(db_path, offered, initial=ids["fp16"]).initial == ids["fp16"]
    assert DeployDialog(db_path, offered, initial=999).initial is None  # unknown ids fall back to the newest
