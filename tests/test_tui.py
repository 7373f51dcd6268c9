"""The dashboard driven like a user would: keys and taps at phone (40×20) and laptop (120×40) sizes.

Everything is real: a SQLite store in tmp_path, the core functions the panels call, the
polling threads. The tests play the worker's part by writing rows into the store.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import store
from core.datasets import add_dataset, ensure_builtin
from core.runs import new_run
from store import datasets as store_datasets
from store import jobs, runs as store_runs, telemetry
from tui.app import make_app
from tui.dialogs import AddDatasetDialog, ConfirmDialog, NewRunDialog
from tui.widgets.chart import CurveChart
from tui.widgets.device import DeviceStrip

pytestmark = [pytest.mark.anyio, pytest.mark.phone]  # phone: no torch or onnx needed (make test-phone)
ROOT = Path(__file__).resolve().parent.parent
PHONE, LAPTOP = (40, 20), (120, 40)
POLL = 0.2


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def db_path(tmp_path):
    path = tmp_path / "t.db"
    db = store.connect(path)
    ensure_builtin(db, path)
    db.conn.close()
    return path


@pytest.fixture
def db(db_path):
    conn = store.connect(db_path)
    yield conn
    conn.conn.close()


def app_for(db_path, **kw):
    kw.setdefault("sample_device", False)
    return make_app(db_path, poll_interval=POLL, **kw)


async def wait_for(pilot, condition, timeout: float = 3.0) -> float:
    """Pause until ``condition()`` holds; the seconds it took (fails after ``timeout``)."""
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.02)
    return time.monotonic() - t0


def toasts(app) -> list[str]:
    return [message for _, message in app.notices]


# -- navigation ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [PHONE, LAPTOP], ids=["40x20", "120x40"])
async def test_panels_reachable_by_key_and_by_tap(db_path, size):
    """At 40×20 and 120×40: `t`/`d` and digits switch panels, and so does tapping a tab."""
    app = app_for(db_path)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        assert app.current_panel.id == "panel-datasets"
        assert app.screen.has_class("-narrow" if size == PHONE else "-wide")
        await pilot.press("t")
        assert app.current_panel.id == "panel-training"
        await pilot.click("#tab-datasets")
        assert app.current_panel.id == "panel-datasets"
        await pilot.press("2")
        assert app.current_panel.id == "panel-training"
        await pilot.click("#tab-datasets")
        await pilot.click("#tab-training")
        assert app.current_panel.id == "panel-training"
        assert app.query_one("#tab-training").has_class("-active")
        assert not app.query_one("#tab-datasets").has_class("-active")


@pytest.mark.parametrize("size", [PHONE, LAPTOP], ids=["40x20", "120x40"])
async def test_narrow_stacks_list_above_detail_wide_puts_them_side_by_side(db_path, size):
    """On a phone the runs list sits above the curves; with room they are side by side."""
    app = app_for(db_path, panel="training")
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        table, detail = app.query_one("#runs-table"), app.query_one("#run-detail")
        if size == PHONE:
            assert table.region.y < detail.region.y and detail.region.x == table.region.x
        else:
            assert table.region.x < detail.region.x and table.region.y == detail.region.y


# -- datasets ------------------------------------------------------------------------------

async def test_datasets_panel_shows_balance_and_a_legible_digit_preview(db_path):
    """At 120×40 the digits dataset shows its rows, 10 balance bars and block-character digits."""
    app = app_for(db_path)
    async with app.run_test(size=LAPTOP) as pilot:
        panel = app.query_one("#panel-datasets")
        await wait_for(pilot, lambda: panel.preview)
        summary = str(app.query_one("#dataset-summary").render())
        assert "1,797 rows" in summary and "10 classes" in summary
        assert len(app.query_one("#dataset-balance").lines()) == 10
        preview = app.query_one("#dataset-preview").text_for(60)
        assert "label: 0" in preview and "█" in preview and len(preview.splitlines()) == 9


async def test_bad_csv_shows_the_exact_error_and_leaves_the_store_unchanged(db_path, db, tmp_path):
    """At 40×20 adding a CSV with a non-number keeps the form open with the core's exact message."""
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n1,2,x\n3,oops,y\n5,6,x\n7,8,y\n")
    with pytest.raises(Exception) as expected:  # the message the core gives, on a throwaway store
        scratch = tmp_path / "scratch.db"
        add_dataset(store.connect(scratch), scratch, bad)
    before = (store_datasets.list_all(db), db.execute("SELECT COUNT(*) FROM artifacts").fetchone()[0])
    app = app_for(db_path)
    async with app.run_test(size=PHONE) as pilot:
        await pilot.press("n")
        assert isinstance(app.screen, AddDatasetDialog)
        app.screen.query_one("#path").value = str(bad)
        await pilot.click("#add")
        error = app.screen.query_one("#error")
        await wait_for(pilot, lambda: str(error.render()))
        assert str(error.render()) == str(expected.value)
        assert "row 3" in str(error.render()) and "'b'" in str(error.render())
        assert isinstance(app.screen, AddDatasetDialog) and error.display
    assert (store_datasets.list_all(db), db.execute("SELECT COUNT(*) FROM artifacts").fetchone()[0]) == before


async def test_adding_a_good_csv_lists_it_and_delete_asks_first(db_path, db, tmp_path):
    """At 120×40 a valid CSV is added from the form, listed, and deleted only after 'yes'."""
    good = tmp_path / "iris-mini.csv"
    good.write_text("x1,x2,label\n" + "".join(f"{i},{i % 3},{'ab'[i % 2]}\n" for i in range(20)))
    app = app_for(db_path)
    async with app.run_test(size=LAPTOP) as pilot:
        await pilot.press("n")
        app.screen.query_one("#path").value = str(good)
        await pilot.click("#add")
        await wait_for(pilot, lambda: not isinstance(app.screen, AddDatasetDialog))
        panel = app.query_one("#panel-datasets")
        await wait_for(pilot, lambda: "iris-mini" in panel.rows and panel.selected == "iris-mini")
        assert store_datasets.by_name(db, "iris-mini")["rows"] == 20
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")
        assert store_datasets.by_name(db, "iris-mini") is not None
        await pilot.press("x")
        await pilot.click("#yes")
        await wait_for(pilot, lambda: "iris-mini" not in panel.rows, timeout=30)
        assert store_datasets.by_name(db, "iris-mini") is None


# -- training ------------------------------------------------------------------------------

async def test_new_run_form_shows_size_and_queues_a_job(db_path, db):
    """At 40×20 `n` opens the form prefilled with digits/cnn; Start writes a run and a queued train job."""
    app = app_for(db_path, panel="training")
    async with app.run_test(size=PHONE) as pilot:
        await pilot.press("n")
        dialog = app.screen
        assert isinstance(dialog, NewRunDialog)
        assert dialog.query_one("#dataset").value == "digits" and dialog.query_one("#model").value == "cnn"
        assert "parameters" in str(dialog.query_one("#estimate").render())
        dialog.query_one("#epochs").value = "3"
        await pilot.click("#start")
        await wait_for(pilot, lambda: not isinstance(app.screen, NewRunDialog), timeout=30)  # run written in a thread
        [run] = store_runs.list_all(db)
        assert (run["model"], run["epochs_total"], run["status"], run["dataset_name"]) == ("cnn", 3, "queued", "digits")
        job = jobs.latest_for_run(db, run["id"])
        assert (job["kind"], job["status"]) == ("train", "queued")
        panel = app.query_one("#panel-training")
        await wait_for(pilot, lambda: run["id"] in panel.runs)
        assert panel.selected == run["id"]


async def test_new_run_form_refuses_a_model_over_50_mb_with_the_figure(db_path, db):
    """At 120×40 an mlp/base on 60,000 features is refused before starting, with its size in MB."""
    store_datasets.insert(db, name="wide", kind="csv", source=None, fingerprint="x", rows_count=10,
                          classes=["a", "b"], class_counts=[5, 5], input_shape=[60_000], artifact_path="/nonexistent.npz")
    app = app_for(db_path, panel="training")
    async with app.run_test(size=LAPTOP) as pilot:
        await pilot.press("n")
        dialog = app.screen
        dialog.query_one("#dataset").value = "wide"
        dialog.query_one("#model").value = "mlp"
        dialog.query_one("#preset").value = "base"
        await pilot.pause()
        text = str(dialog.query_one("#estimate").render())
        assert "over the 50 MB limit" in text and "58.7 MB" in text
        assert dialog.query_one("#start").disabled
        dialog.start()  # even forced, nothing is queued
        await pilot.pause()
        assert isinstance(app.screen, NewRunDialog)
    assert store_runs.list_all(db) == []


async def test_new_run_form_names_the_bad_field(db_path, db):
    """At 40×20 a non-number in Batch size is reported by field name and nothing is queued."""
    app = app_for(db_path, panel="training")
    async with app.run_test(size=PHONE) as pilot:
        await pilot.press("n")
        app.screen.query_one("#lr").value = "fast"
        await pilot.click("#start")
        assert "Learning rate" in str(app.screen.query_one("#error").render())
        assert isinstance(app.screen, NewRunDialog)
    assert store_runs.list_all(db) == []


@pytest.mark.parametrize("size", [PHONE, LAPTOP], ids=["40x20", "120x40"])
async def test_live_curve_grows_within_a_second_of_a_new_point(db_path, db, size):
    """Points the worker writes appear on the loss and accuracy charts by the panel's next poll after the write
    (polls every 0.5 s: under a second). Counted in polls, not wall time, so a slow machine cannot fail it."""
    from tui.panels.training import Panel as TrainingPanel

    run_id, job_id = new_run(db, dataset="digits", model="cnn", epochs=5)
    store_runs.set_status(db, run_id, "running")
    store_runs.add_metrics(db, [{"run_id": run_id, "kind": "train", "step": 10, "epoch": 1, "loss": 2.2, "accuracy": 0.1,
                                 "samples_per_s": 400.0}])
    app = make_app(db_path, poll_interval=0.5, panel="training", sample_device=False)
    async with app.run_test(size=size) as pilot:
        panel = app.query_one(TrainingPanel)
        assert panel.poll_interval <= 0.5
        loss = app.query_one("#loss-chart", CurveChart)
        acc = app.query_one("#acc-chart", CurveChart)
        seen: list[tuple[int, int, int]] = []  # (poll number, loss points, accuracy points) after each poll's render
        update_view = panel.update_view

        def recording(data):
            update_view(data)
            seen.append((panel.polls, loss.point_count, acc.point_count))

        panel.update_view = recording

        def polls_until(before: int, done) -> int:
            return next(n for n, lp, ap in seen if n > before and done(lp, ap)) - before
        await wait_for(pilot, lambda: loss.point_count == 1, timeout=30)
        drawn_before = sum(ch not in " │" for row in loss.current_plot().rows for ch in row)
        for step in range(2, 6):
            before = panel.polls
            store_runs.add_metrics(db, [{"run_id": run_id, "kind": "train", "step": 10 * step, "epoch": 1,
                                         "loss": 2.2 / step, "accuracy": 0.1 * step, "samples_per_s": 450.0}])
            await wait_for(pilot, lambda: loss.point_count == step, timeout=30)
            # A poll already reading when the point landed may miss it; the one after it may not.
            took = polls_until(before, lambda lp, ap, step=step: lp == step)
            assert took <= 2, f"the point took {took} polls to appear"
        before = panel.polls
        store_runs.add_metrics(db, [{"run_id": run_id, "kind": "val", "step": 1, "epoch": 1, "loss": 0.6, "accuracy": 0.8}])
        await wait_for(pilot, lambda: acc.point_count == 6, timeout=30)
        assert polls_until(before, lambda lp, ap: ap == 6) <= 2
        assert sum(ch not in " │" for row in loss.current_plot().rows for ch in row) > drawn_before
        assert "450 samples/s" in str(app.query_one("#run-summary").render())


async def test_cancel_asks_first_then_writes_the_cancel_intent(db_path, db):
    """At 40×20 `x` asks; 'no' changes nothing; 'yes' flags the running job for its worker to stop."""
    run_id, job_id = new_run(db, dataset="digits", model="cnn", epochs=5)
    jobs.claim(db, "test-worker", job_id=job_id)
    store_runs.set_status(db, run_id, "running")
    app = app_for(db_path, panel="training")
    async with app.run_test(size=PHONE) as pilot:
        panel = app.query_one("#panel-training")
        await wait_for(pilot, lambda: panel.selected == run_id and run_id in panel.runs)
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.click("#no")
        assert not jobs.cancel_requested(db, job_id)
        await pilot.press("x")
        await pilot.press("y")
        await wait_for(pilot, lambda: jobs.cancel_requested(db, job_id), timeout=30)  # written by a thread worker
        assert jobs.get(db, job_id)["status"] == "running"  # the worker finishes the batch and stops
        await wait_for(pilot, lambda: any("cancel requested" in t for t in toasts(app)))


async def test_queued_run_is_cancelled_at_once_and_can_be_resumed(db_path, db):
    """At 120×40 cancelling a queued run ends it; `r` queues it again."""
    run_id, job_id = new_run(db, dataset="digits", model="mlp", epochs=2)
    app = app_for(db_path, panel="training")
    async with app.run_test(size=LAPTOP) as pilot:
        panel = app.query_one("#panel-training")
        await wait_for(pilot, lambda: panel.selected == run_id)
        await pilot.press("x", "y")
        await wait_for(pilot, lambda: panel.runs[run_id]["status"] == "cancelled", timeout=30)
        assert jobs.get(db, job_id)["status"] == "cancelled"
        table = app.query_one("#runs-table")
        assert table.get_cell(str(run_id), "status") == "cancelled"
        assert table.columns["status"].content_width >= len("cancelled")  # grew from "queued", not cut
        await pilot.press("r")
        await wait_for(pilot, lambda: panel.runs[run_id]["status"] == "queued", timeout=30)
        assert jobs.latest_for_run(db, run_id)["id"] != job_id


async def test_quick_start_queues_digits_cnn_with_one_key(db_path, db):
    """At 40×20 `s` queues a digits/cnn run with the defaults."""
    app = app_for(db_path, panel="training")
    async with app.run_test(size=PHONE) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: store_runs.list_all(db), timeout=30)  # written by a thread worker
    [run] = store_runs.list_all(db)
    assert (run["dataset_name"], run["model"], run["status"]) == ("digits", "cnn", "queued")


async def test_footer_keys_are_tappable(db_path, db):
    """At 40×20 tapping the footer's 'Start' key queues a run, as pressing `s` does."""
    from textual.widgets._footer import FooterKey

    app = app_for(db_path, panel="training")
    async with app.run_test(size=PHONE) as pilot:
        await pilot.pause()
        start = next(k for k in app.query(FooterKey) if k.key == "s")
        await pilot.click(start)
        await wait_for(pilot, lambda: store_runs.list_all(db), timeout=30)  # written by a thread worker
    assert len(store_runs.list_all(db)) == 1


async def test_unknown_telemetry_shows_unknown(db_path, db):
    """At 40×20 a device that reports nothing shows 'unknown' for CPU, RAM, battery and temperature."""
    telemetry.record(db, "w1", {})
    app = app_for(db_path, panel="training")
    async with app.run_test(size=PHONE) as pilot:
        panel = app.query_one("#panel-training")
        await wait_for(pilot, lambda: panel.polls >= 1)
        strip = app.query_one("#device", DeviceStrip)
        assert strip.text == "CPU unknown  RAM unknown  Battery unknown  Temp unknown"
        assert "unknown" in str(strip.render())


async def test_database_error_while_polling_is_shown_and_polling_continues(db_path, db):
    """At 120×40 a broken table is reported in the UI; when it is back, curves update again."""
    run_id, _ = new_run(db, dataset="digits", model="cnn", epochs=5)
    app = app_for(db_path, panel="training")
    async with app.run_test(size=LAPTOP) as pilot:
        panel = app.query_one("#panel-training")
        await wait_for(pilot, lambda: panel.selected == run_id)
        db.execute("ALTER TABLE metrics RENAME TO metrics_moved")
        await wait_for(pilot, lambda: panel._last_error is not None)
        assert "no such table: metrics" in panel._last_error
        await wait_for(pilot, lambda: any("no such table: metrics" in t for t in toasts(app)))
        db.execute("ALTER TABLE metrics_moved RENAME TO metrics")
        store_runs.add_metrics(db, [{"run_id": run_id, "kind": "train", "step": 10, "epoch": 1, "loss": 1.0, "accuracy": 0.5}])
        await wait_for(pilot, lambda: app.query_one("#loss-chart", CurveChart).point_count == 1)
        assert panel._last_error is None


async def test_modal_pauses_polling(db_path, db):
    """While a dialog is open no poll runs; after it closes polling resumes."""
    app = app_for(db_path, panel="training")
    async with app.run_test(size=PHONE) as pilot:
        panel = app.query_one("#panel-training")
        await wait_for(pilot, lambda: panel.polls >= 1)
        await pilot.press("x")  # no run: a warning, not a dialog
        await pilot.press("n")
        assert isinstance(app.screen, NewRunDialog)
        polls = panel.polls
        await pilot.pause(3 * POLL)
        assert panel.polls == polls
        await pilot.press("escape")
        await wait_for(pilot, lambda: panel.polls > polls)


# -- import hygiene ------------------------------------------------------------------------

def test_dashboard_imports_no_torch_onnx_or_numpy(tmp_path):
    """Importing tui.app and every panel loads no torch or onnx (nor numpy: startup stays lean)."""
    code = ("import sys\nimport tui.app\nfrom tui import panels\n[p.module for p in panels.discover()]\n"
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'numpy') if m in sys.modules))")
    env = {**os.environ, "POCKETOPS_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


async def test_a_new_database_gets_the_builtin_dataset_after_the_first_frame(tmp_path):
    """At 40×20 on an empty store the dashboard sets it up in the background and lists digits."""
    app = app_for(tmp_path / "fresh.db")
    async with app.run_test(size=PHONE) as pilot:
        panel = app.query_one("#panel-datasets")
        await wait_for(pilot, lambda: "digits" in panel.rows, timeout=10)
        assert app.ready


async def test_tab_titles_shorten_on_a_phone_and_grow_back(db_path):
    """Resizing 120×40 → 40×20 → 100×30 switches tabs to short titles and back, and the layout class."""
    app = app_for(db_path)
    async with app.run_test(size=LAPTOP) as pilot:
        tab = app.query_one("#tab-training")
        assert str(tab.render()) == "Training"
        await pilot.resize_terminal(*PHONE)
        await pilot.pause()
        assert str(tab.render()) == "Train" and tab.region.width == len("Train") + 2
        assert app.screen.has_class("-narrow")
        await pilot.resize_terminal(100, 30)
        await pilot.pause()
        assert str(tab.render()) == "Training" and app.screen.has_class("-wide")


async def test_escape_asks_then_quits_and_stay_keeps_the_dashboard(db_path):
    """At 40×20 Escape (on Termux's extra-keys row) asks first; 'Stay' keeps the app, 'Quit' (a tap) exits."""
    app = app_for(db_path, panel="training")
    async with app.run_test(size=PHONE) as pilot:
        await pilot.pause()
        await pilot.press("escape")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.click("#no")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmDialog) and app.is_running
        await pilot.press("n")  # Escape inside a form closes only the form
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, (NewRunDialog, ConfirmDialog))
        await pilot.press("escape")
        await pilot.click("#yes")
        await pilot.pause()
    assert app.return_code == 0 and not app.is_running


async def test_new_run_form_fits_a_phone_and_works_by_taps_alone(db_path, db):
    """At 40×20: tap the footer's New, tap Model → mlp and Size → tiny in their lists, tap Start."""
    from textual.widgets._footer import FooterKey

    app = app_for(db_path, panel="training")
    async with app.run_test(size=PHONE) as pilot:
        await pilot.pause()
        await pilot.click(next(k for k in app.query(FooterKey) if k.key == "n"))
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, NewRunDialog)
        for field in ("#dataset", "#model", "#preset", "#epochs", "#batch", "#accum", "#lr", "#estimate", "#start"):
            assert dialog.region.contains_region(dialog.query_one(field).region), f"{field} is off screen at 40×20"

        async def pick(select_id: str, row: int) -> None:
            await pilot.click(select_id)
            await pilot.pause()
            overlay = next(o for o in app.screen.query("SelectOverlay") if o.region.width)
            await pilot.click(overlay, offset=(2, row))
            await pilot.pause()

        await pick("#model", 0)   # mlp, cnn, transformer
        await pick("#preset", 0)  # tiny, small, base
        assert (dialog.query_one("#model").value, dialog.query_one("#preset").value) == ("mlp", "tiny")
        assert "parameters" in str(dialog.query_one("#estimate").render())
        await pilot.click("#start")
        await wait_for(pilot, lambda: not isinstance(app.screen, NewRunDialog), timeout=30)  # run written in a thread
    [run] = store_runs.list_all(db)
    assert (run["model"], run["config"]["preset"], run["status"]) == ("mlp", "tiny", "queued")


async def test_add_dataset_form_fits_a_phone(db_path):
    """At 40×20 every field and both buttons of the add-dataset form are on screen (tappable)."""
    app = app_for(db_path)
    async with app.run_test(size=PHONE) as pilot:
        await pilot.pause()
        await pilot.press("n")
        dialog = app.screen
        assert isinstance(dialog, AddDatasetDialog)
        for field in ("#path", "#kind", "#name", "#label", "#add", "#cancel"):
            assert dialog.region.contains_region(dialog.query_one(field).region), f"{field} is off screen at 40×20"
        await pilot.click("#cancel")
        await pilot.pause()
        assert not isinstance(app.screen, AddDatasetDialog)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the worker trains: needs torch (not in the phone profile)")
def test_pocketops_starts_a_worker_and_closing_the_dashboard_leaves_the_run_training(tmp_path):
    """`pocketops` (no arguments) in a terminal starts a background worker; hanging up the terminal
    ends the dashboard, not the worker, which finishes the run it was training."""
    import fcntl
    import pty
    import signal
    import struct
    import termios
    import threading

    from core import worker as core_worker

    from tests._pace import Pace

    home = tmp_path / "home"
    pace = Pace(tmp_path, train_step=20)  # the worker holds at step 20 until the dashboard is gone
    env = {**os.environ, "POCKETOPS_HOME": str(home), "TERM": "xterm-256color", **pace.env}
    queued = subprocess.run([sys.executable, "-m", "tui.cli", "train", "--dataset", "digits", "--model", "cnn",
                             "--preset", "tiny", "--epochs", "40", "--patience", "40", "--json"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    run_id = json.loads(queued.stdout)["run_id"]
    db_path = home / "pocketops.db"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 40, 0, 0))
    drain = threading.Thread(target=lambda: _drain(master), daemon=True)
    drain.start()
    dashboard = subprocess.Popen([sys.executable, "-m", "tui.cli"], cwd=ROOT, env=env, stdin=slave, stdout=slave,
                                 stderr=slave, start_new_session=True)
    os.close(slave)
    conn = store.connect(db_path)
    worker_pid = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not store_runs.count_metrics(conn, run_id, "train"):
            assert dashboard.poll() is None, "the dashboard exited on its own"
            time.sleep(0.1)
        assert store_runs.count_metrics(conn, run_id, "train"), "no worker trained the queued run"
        pace.wait_held("train:step", timeout=60)
        [worker] = core_worker.alive_workers(db_path)
        worker_pid = worker["pid"]
        assert worker_pid != dashboard.pid
        os.killpg(dashboard.pid, signal.SIGHUP)  # the terminal goes away (Termux session closed)
        os.close(master)
        assert dashboard.wait(timeout=20) is not None
        assert store_runs.get(conn, run_id)["status"] == "running"
        before = store_runs.count_metrics(conn, run_id, "train")
        pace.set(train_step=40)  # let it go on to the next hold: it must still be training
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and store_runs.count_metrics(conn, run_id, "train") <= before:
            time.sleep(0.1)
        assert store_runs.count_metrics(conn, run_id, "train") > before, "training stopped with the dashboard"
        assert core_worker.pid_alive(worker_pid)
    finally:
        if dashboard.poll() is None:
            dashboard.kill()
        if worker_pid and core_worker.pid_alive(worker_pid):
            os.kill(worker_pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and core_worker.pid_alive(worker_pid):
                time.sleep(0.1)
        conn.conn.close()


def _drain(fd: int) -> None:
    """Read the dashboard's terminal output so it never blocks on a full pty buffer."""
    while True:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


def test_the_dashboard_stays_torch_free_while_used(tmp_path):
    """After adding a dataset, queueing runs (form and quick start), cancelling and visiting every
    panel, the dashboard process has still not imported torch or onnx (training is the worker's)."""
    csv = tmp_path / "mini.csv"
    csv.write_text("x1,x2,label\n" + "".join(f"{i},{i % 3},{'ab'[i % 2]}\n" for i in range(20)))
    code = f"""
import asyncio, sys
from tui.app import make_app, PANELS

async def main():
    app = make_app({str(tmp_path / 'd.db')!r}, poll_interval=0.1, sample_device=True)
    async with app.run_test(size=(40, 20)) as pilot:
        for _ in range(100):
            if app.ready:
                break
            await pilot.pause(0.05)
        await pilot.press("n")
        app.screen.query_one("#path").value = {str(csv)!r}
        await pilot.click("#add")
        for _ in range(100):
            if app.screen is app.screen_stack[0]:
                break
            await pilot.pause(0.05)
        await pilot.press("t", "n")
        await pilot.click("#start")
        await pilot.pause(0.2)
        await pilot.press("s", "x", "y")
        await pilot.pause(0.3)
        for info in PANELS:
            await pilot.press(info.key)
            await pilot.pause(0.3)
    import store
    from store import runs
    print(len(runs.list_all(store.connect({str(tmp_path / 'd.db')!r}))), sorted(m for m in ('torch', 'onnx') if m in sys.modules))

asyncio.run(main())
"""
    env = {**os.environ, "POCKETOPS_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "2 []", proc.stdout  # two runs queued, no torch, no onnx


async def test_new_run_form_shows_samples_per_step_and_the_default_lr(db_path):
    """Batch 4 × accum 4 reads '16 samples per step'; the lr field shows the family's default."""
    app = app_for(db_path, panel="training")
    async with app.run_test(size=PHONE) as pilot:
        await pilot.press("n")
        dialog = app.screen
        dialog.query_one("#batch").value = "4"
        dialog.query_one("#accum").value = "4"
        await pilot.pause()
        assert "16 samples per step" in str(dialog.query_one("#estimate").render())
        assert dialog.query_one("#lr").placeholder == "default 0.002"
        dialog.query_one("#model").value = "transformer"
        await pilot.pause()
        assert dialog.query_one("#lr").placeholder == "default 0.0005"
