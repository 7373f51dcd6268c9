"""The Training panel's sweep: `w` queues one (written in a thread), and the panel shows its trials,
the best-so-far curve and the importances the sweep job stored. The test plays the sweep job by
writing rows (no optuna, no torch in the dashboard)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import store
from core.datasets import ensure_builtin
from store import jobs
from store import runs as store_runs
from store import sweeps as store_sweeps
from tui.app import make_app
from tui.widgets.chart import CurveChart
from tui.widgets.sweep import SweepDialog, best_so_far, importance_text, sweep_text

pytestmark = [pytest.mark.anyio, pytest.mark.phone]
ROOT = Path(__file__).resolve().parent.parent
PHONE, LAPTOP = (40, 20), (120, 40)


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


async def wait_for(pilot, condition, timeout: float = 5.0) -> None:
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.02)


def _fake_sweep(db) -> int:
    """A sweep as its job leaves it mid-study: 2 done, 1 pruned at epoch 1, 1 running."""
    from core.sweep import new_sweep

    sweep_id, _ = new_sweep(db, dataset="digits", model="mlp", trials=6, parallel=2, epochs=4)
    ds = store_sweeps.get(db, sweep_id)["dataset_id"]
    for trial, (status, value, lr) in enumerate([("done", 0.91, 0.002), ("done", 0.96, 0.004),
                                                 ("pruned", None, 0.0002), ("running", None, 0.001)]):
        run_id = store_runs.create(db, dataset_id=ds, model="mlp", config={}, epochs_total=4)
        store_sweeps.add_trial(db, sweep_id, trial, run_id, {"lr": lr, "width": 64, "layers": 2})
        if status != "running":
            store_sweeps.finish_trial(db, sweep_id, trial, status, value=value,
                                      pruned_epoch=1 if status == "pruned" else None)
    store_sweeps.update(db, sweep_id, best={"trial": 1, "run_id": 2, "params": {"lr": 0.004}, "value": 0.96},
                        importances={"lr": 0.7, "width": 0.2, "layers": 0.1})
    store_sweeps.set_status(db, sweep_id, "running")
    return sweep_id


def test_pure_rendering_of_a_sweep():
    trials = [{"trial": 0, "status": "done", "value": 0.9, "run_id": 1, "params": {"lr": 0.001}, "pruned_epoch": None},
              {"trial": 1, "status": "pruned", "value": None, "run_id": 2, "params": {"lr": 0.1}, "pruned_epoch": 2},
              {"trial": 2, "status": "done", "value": 0.85, "run_id": 3, "params": {"lr": 0.01}, "pruned_epoch": None},
              {"trial": 3, "status": "done", "value": 0.95, "run_id": 4, "params": {"lr": 0.003}, "pruned_epoch": None}]
    assert best_so_far(trials) == [(0.0, 0.9), (2.0, 0.9), (3.0, 0.95)]
    assert best_so_far(trials, maximize=False) == [(0.0, 0.9), (2.0, 0.85), (3.0, 0.85)]
    assert importance_text(None).startswith("Parameter importance: after")
    bars = importance_text({"width": 0.25, "lr": 0.75}).splitlines()
    assert bars[1].split()[0] == "lr" and bars[2].split()[0] == "width"
    text = sweep_text({"id": 1, "dataset_name": "digits", "model": "mlp", "status": "running",
                       "config": {"trials": 8, "parallel": 2}, "best": None}, trials)
    assert "4/8 trials" in text
    assert "pruned@2" in text


async def test_the_panel_shows_the_newest_sweep(db_path):
    """At 120×40: trial rows with status, value and epoch pruned at; the best-so-far curve; importances."""
    db = store.connect(db_path)
    _fake_sweep(db)
    app = make_app(db_path, poll_interval=0.2, sample_device=False, panel="training")
    async with app.run_test(size=LAPTOP) as pilot:
        summary = app.query_one("#sweep-summary")
        await wait_for(pilot, lambda: "Sweep #1" in str(summary.render()))
        text = str(summary.render())
        assert "3/6 trials" in text and "pruned@1" in text and "0.9600" in text and "running" in text
        assert "Best: trial 1 = run #2" in text
        chart = app.query_one("#sweep-chart", CurveChart)
        assert [s.points for s in chart.series] == [[(0.0, 0.91), (1.0, 0.96)]]
        assert "lr" in str(app.query_one("#sweep-importance").render())


async def test_w_opens_the_sweep_dialog_and_start_queues_a_sweep_job(db_path):
    """At 40×20: `w`, 4 trials, Start: a sweep row and a queued sweep job, written off the main thread."""
    db = store.connect(db_path)
    app = make_app(db_path, poll_interval=0.2, sample_device=False, panel="training")
    async with app.run_test(size=PHONE) as pilot:
        await pilot.press("w")
        assert isinstance(app.screen, SweepDialog)
        for button in ("#sweep-start", "#sweep-cancel"):  # tappable without scrolling on a phone
            assert app.screen.region.contains_region(app.screen.query_one(button).region), button
        app.screen.query_one("#sweep-trials").value = "4"
        app.screen.query_one("#sweep-epochs").value = "3"
        await pilot.click("#sweep-start")
        await wait_for(pilot, lambda: store_sweeps.latest(db) is not None)
        sweep = store_sweeps.latest(db)
        assert (sweep["model"], sweep["config"]["trials"], sweep["config"]["epochs"]) == ("mlp", 4, 3)
        [job] = jobs.list_jobs(db)
        assert (job["kind"], job["status"], job["payload"]) == ("sweep", "queued", {"sweep_id": sweep["id"]})
        await wait_for(pilot, lambda: "Sweep #1" in str(app.query_one("#sweep-summary").render()))


async def test_a_bad_sweep_form_says_which_field(db_path):
    db = store.connect(db_path)
    app = make_app(db_path, poll_interval=0.2, sample_device=False, panel="training")
    async with app.run_test(size=PHONE) as pilot:
        await pilot.press("w")
        app.screen.query_one("#sweep-trials").value = "0"
        await pilot.click("#sweep-start")
        error = app.screen.query_one("#sweep-error")
        await wait_for(pilot, lambda: str(error.render()))
        assert "Trials" in str(error.render()) and isinstance(app.screen, SweepDialog)
    assert store_sweeps.latest(db) is None


def test_the_sweep_view_imports_neither_optuna_nor_torch():
    code = ("import sys; import tui.panels.training, tui.widgets.sweep, core.sweep, core.sweep_space; "
            "print(sorted(m for m in ('optuna', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr
