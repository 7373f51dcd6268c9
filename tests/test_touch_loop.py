"""The whole loop by touch at 40×20: dataset → new run → export → deploy (local), taps only.

Actions are Pilot clicks on tabs, footer keys, list rows and buttons; nothing is pressed on a
keyboard. Two text fields (the CSV's path, the port) get their text set directly, standing in for
the phone's on-screen keyboard. A real worker runs the jobs in a thread on the test's store; every
step is checked in the store, waiting on its state with generous deadlines.

Also: every dialog's buttons lie inside the 40×20 screen, so each is one tap away without scrolling.
"""
from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import store
from core.datasets import ensure_builtin
from store import datasets as store_datasets
from store import deployments as store_deployments
from store import jobs
from store import runs as store_runs
from store import variants as store_variants
from tui.app import make_app
from tui.dialogs import AddDatasetDialog, ConfirmDialog, NewRunDialog
from tui.panels.deploy import DeployDialog

pytestmark = pytest.mark.anyio
PHONE = (40, 20)


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def wait_for(pilot, condition, what: str, timeout: float) -> None:
    """Pause (letting the app and the worker run) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        await pilot.pause(0.05)


def footer_key(app, key: str):
    """The footer's button for ``key``, checked to lie on the 40×20 screen (so it can be tapped)."""
    from textual.widgets._footer import FooterKey

    found = [k for k in app.screen.query(FooterKey) if k.key == key]
    assert found, f"no footer key {key!r} on {app.screen}"
    assert app.screen.region.contains_region(found[0].region), f"footer key {key!r} is off screen: {found[0].region}"
    return found[0]


def has_footer_key(app, key: str) -> bool:
    from textual.widgets._footer import FooterKey

    return any(k.key == key and k.region.width for k in app.screen.query(FooterKey))


async def tap_key(pilot, app, key: str) -> None:
    """Tap the footer's button for ``key`` (once the footer shows it)."""
    await wait_for(pilot, lambda: has_footer_key(app, key), f"footer key {key!r}", 30)
    await tap(pilot, app, footer_key(app, key))


async def tap(pilot, app, target) -> None:
    """Click ``target`` (a selector or widget) after checking it is wholly on the screen."""
    await pilot.pause()  # a pending layout (new text just arrived) first: else the tap uses last frame's place
    widget = app.screen.query_one(target) if isinstance(target, str) else target
    assert app.screen.region.contains_region(widget.region), f"{target} is off the 40×20 screen: {widget.region}"
    await pilot.click(widget)
    await pilot.pause()


async def pick(pilot, app, select_id: str, row: int) -> None:
    """Open a Select by tapping it and tap its ``row``-th option."""
    await tap(pilot, app, select_id)
    overlay = next(o for o in app.screen.query("SelectOverlay") if o.region.width)
    await pilot.click(overlay, offset=(2, row))
    await pilot.pause()


def assert_buttons_on_screen(app, dialog) -> None:
    buttons = list(dialog.query("Button"))
    assert buttons, f"{type(dialog).__name__} has no buttons"
    screen = app.screen.region
    for button in buttons:
        assert screen.contains_region(button.region) and button.region.width >= 4, \
            f"{type(dialog).__name__} #{button.id} is not wholly on the 40×20 screen: {button.region}"


def write_csv(path: Path, n: int = 400, seed: int = 0) -> Path:
    """Two well-separated classes in four features: an MLP learns it in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    X = rng.normal(0, 0.6, (n, 4)) + labels[:, None] * 2.0
    lines = ["f0,f1,f2,f3,label"] + [",".join(f"{v:.4f}" for v in x) + f",{'yes' if y else 'no'}" for x, y in zip(X, labels)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _health(url: str) -> int:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


def _stop_servers(db) -> None:
    from deployers import service
    from deployers.local import _alive

    for row in store_deployments.list_all(db):
        pid = (row.get("meta") or {}).get("pid")
        if row["status"] in ("running", "sleeping", "deploying"):
            try:
                service.stop(db, row["id"])
            except Exception:  # noqa: BLE001 - a cleanup must not hide the test's own failure
                pass
        if pid and _alive(pid):
            os.killpg(pid, signal.SIGKILL)


async def test_dataset_run_export_deploy_by_taps_alone_at_40x20(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from core.worker import Worker

    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    ensure_builtin(db, db_path)
    csv = write_csv(tmp_path / "blobs.csv")
    worker = Worker(db_path, worker_id="touch-loop-worker")
    runner = threading.Thread(target=lambda: worker.run(idle_sleep=0.1), name="touch-loop-worker", daemon=True)
    runner.start()
    app = make_app(db_path, poll_interval=0.2, sample_device=False)
    try:
        async with app.run_test(size=PHONE) as pilot:
            await wait_for(pilot, lambda: app.ready, "store set up", 60)

            # 1. Dataset: tap Add, (type) the path, tap Add.
            await tap_key(pilot, app, "n")
            await wait_for(pilot, lambda: isinstance(app.screen, AddDatasetDialog), "add dialog open", 30)
            dialog = app.screen
            assert_buttons_on_screen(app, dialog)
            dialog.query_one("#path").value = str(csv)
            await tap(pilot, app, "#add")
            await wait_for(pilot, lambda: store_datasets.by_name(db, "blobs") is not None, "dataset added", 60)
            await wait_for(pilot, lambda: not isinstance(app.screen, AddDatasetDialog), "add dialog closed", 30)
            dataset = store_datasets.by_name(db, "blobs")
            assert (dataset["rows"], dataset["classes"]) == (400, ["no", "yes"])

            # 2. New run: tap the Training tab, tap New, pick blobs / mlp / tiny in the lists, tap Start.
            await tap(pilot, app, "#tab-training")
            assert app.current_panel.id == "panel-training"
            await wait_for(pilot, lambda: has_footer_key(app, "s"), "Training's footer", 30)  # not Datasets' n
            await tap_key(pilot, app, "n")
            await wait_for(pilot, lambda: isinstance(app.screen, NewRunDialog), "new-run dialog open", 30)
            dialog = app.screen
            assert_buttons_on_screen(app, dialog)
            names = [d["name"] for d in store_datasets.list_all(db)]
            await pick(pilot, app, "#dataset", names.index("blobs"))
            await pick(pilot, app, "#model", 0)   # mlp, cnn, transformer
            await pick(pilot, app, "#preset", 0)  # tiny, small, base
            assert (dialog.query_one("#dataset").value, dialog.query_one("#model").value,
                    dialog.query_one("#preset").value) == ("blobs", "mlp", "tiny")
            await tap(pilot, app, "#start")
            await wait_for(pilot, lambda: len(store_runs.list_all(db)) == 1, "run queued", 30)
            [run] = store_runs.list_all(db)
            assert (run["dataset_name"], run["model"], run["config"]["preset"]) == ("blobs", "mlp", "tiny")
            await wait_for(pilot, lambda: store_runs.get(db, run["id"])["status"] in ("done", "failed"),
                           "run trained", 600)
            run = store_runs.get(db, run["id"])
            assert run["status"] == "done", run["error"]
            assert run["metrics"]["val_accuracy"] >= 0.9 and Path(run["checkpoint_path"]).exists()

            # 3. Export: tap the Quantize tab, (the finished run is selected) tap Export.
            await tap(pilot, app, "#tab-quantize")
            panel = app.query_one("#panel-quantize")
            await wait_for(pilot, lambda: panel.selected == run["id"], "run offered for export", 30)
            await tap_key(pilot, app, "e")
            await wait_for(pilot, lambda: jobs.latest_for_run(db, run["id"], "export") is not None, "export queued", 30)

            def export_ended() -> bool:
                return jobs.latest_for_run(db, run["id"], "export")["status"] in jobs.FINAL

            await wait_for(pilot, export_ended, "export finished", 900)
            job = jobs.latest_for_run(db, run["id"], "export")
            assert job["status"] == "done", job["error"]
            variants = store_variants.latest_for_run(db, run["id"])
            assert "fp32" in {v["name"] for v in variants}
            assert all(Path(v["path"]).is_file() for v in variants)
            assert any(v["status"] == "benchmarked" for v in variants)

            # 4. Deploy: tap the Deploy tab, tap Deploy, (type) port 0, tap Plan, wait, tap Deploy.
            await tap(pilot, app, "#tab-deploy")
            await wait_for(pilot, lambda: has_footer_key(app, "r"), "Deploy's footer", 30)
            await tap_key(pilot, app, "n")
            await wait_for(pilot, lambda: isinstance(app.screen, DeployDialog), "deploy dialog open", 30)
            dialog = app.screen
            assert_buttons_on_screen(app, dialog)
            dialog.query_one("#port").value = "0"  # any free port: never collide with a real server
            await tap(pilot, app, "#plan-button")
            await wait_for(pilot, lambda: not dialog.query_one("#deploy-button").disabled, "plan shown", 300)
            assert_buttons_on_screen(app, dialog)  # a long plan scrolls under the docked buttons
            variant_id = int(dialog.query_one("#variant").value)
            await tap(pilot, app, "#deploy-button")

            def served() -> bool:
                return any(d["status"] in ("running", "failed") for d in store_deployments.list_all(db))

            await wait_for(pilot, served, "deployed", 300)
            [release] = store_deployments.list_all(db)
            assert release["status"] == "running", release["error"]
            assert (release["target"], release["variant_id"]) == ("local", variant_id)
            assert release["url"].startswith("http://127.0.0.1:")
            assert _health(release["url"]) == 200
            await wait_for(pilot, lambda: app.query_one("#panel-deploy").rows, "Deploy panel lists it", 30)
    finally:
        worker.request_stop()
        runner.join(timeout=120)
        _stop_servers(db)
        db.close()


async def test_every_dialogs_buttons_are_on_a_40x20_screen(tmp_path):
    """Add dataset (also with an error shown), new run, deploy, and the confirmations: no button needs scrolling."""
    from tests._deploy_helpers import make_variant

    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    ensure_builtin(db, db_path)
    make_variant(db, db_path)
    store_runs.create(db, dataset_id=store_datasets.by_name(db, "digits")["id"], model="cnn", config={}, epochs_total=3)
    app = make_app(db_path, poll_interval=0.2, sample_device=False)
    async with app.run_test(size=PHONE) as pilot:
        await wait_for(pilot, lambda: app.ready, "store set up", 60)
        checked = []

        async def check(open_it, kind, close="#cancel"):
            await open_it()
            await wait_for(pilot, lambda: isinstance(app.screen, kind), f"{kind.__name__} open", 30)
            await pilot.pause()
            assert_buttons_on_screen(app, app.screen)
            checked.append(kind.__name__)
            await tap(pilot, app, close)
            await wait_for(pilot, lambda: not isinstance(app.screen, kind), f"{kind.__name__} closed", 30)

        # Add dataset, then again with a long error in the form (it must not push the buttons off).
        await check(lambda: tap_key(pilot, app, "n"), AddDatasetDialog)
        await tap_key(pilot, app, "n")
        await wait_for(pilot, lambda: isinstance(app.screen, AddDatasetDialog), "add dialog open", 30)
        dialog = app.screen
        dialog.query_one("#path").value = str(tmp_path / "no" / "such" / "folder-with-a-rather-long-name.csv")
        await tap(pilot, app, "#add")
        await wait_for(pilot, lambda: dialog.query_one("#error").has_class("-shown"), "error shown", 30)
        assert_buttons_on_screen(app, dialog)
        await tap(pilot, app, "#cancel")
        await check(lambda: tap_key(pilot, app, "x"), ConfirmDialog, "#no")  # delete dataset
        await tap(pilot, app, "#tab-training")
        await wait_for(pilot, lambda: app.query_one("#panel-training").runs and has_footer_key(app, "s"), "runs listed", 30)
        await check(lambda: tap_key(pilot, app, "n"), NewRunDialog)
        await tap_key(pilot, app, "n")  # again, with a field's error shown under the form
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunDialog), "new-run dialog open", 30)
        dialog = app.screen
        dialog.query_one("#epochs").value = "many"
        await tap(pilot, app, "#start")
        await wait_for(pilot, lambda: dialog.query_one("#error").has_class("-shown"), "error shown", 30)
        assert "Epochs: expected a whole number" in str(dialog.query_one("#error").render())
        assert_buttons_on_screen(app, dialog)
        await tap(pilot, app, "#cancel")
        await check(lambda: tap_key(pilot, app, "x"), ConfirmDialog, "#no")  # cancel run
        await tap(pilot, app, "#tab-deploy")
        await wait_for(pilot, lambda: has_footer_key(app, "r"), "Deploy's footer", 30)
        await check(lambda: tap_key(pilot, app, "n"), DeployDialog)

        async def ask_quit():
            app.action_ask_quit()  # escape on the phone's extra-keys row; the dialog is what matters here

        await check(ask_quit, ConfirmDialog, "#no")
        assert checked == ["AddDatasetDialog", "ConfirmDialog", "NewRunDialog", "ConfirmDialog", "DeployDialog",
                           "ConfirmDialog"]
    db.close()
