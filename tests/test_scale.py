"""A store that has grown: the runs table pages, the first frame already has data, `runs list --limit`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import store
from store import runs as store_runs
from store.db import transaction
from tui.app import make_app

ROOT = Path(__file__).resolve().parent.parent
N_RUNS = 250


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def many_runs(tmp_path) -> Path:
    """A store with N_RUNS finished runs (a few metric points each), written as the worker would."""
    path = tmp_path / "big.db"
    db = store.connect(path)
    with transaction(db):
        db.execute("INSERT INTO datasets (name, kind, fingerprint, rows, n_classes, classes, class_counts, input_shape,"
                   " artifact_path, created_at) VALUES ('digits', 'builtin', 'f', 10, 2, '[]', '[]', '[64]', 'd.npz', 0)")
        for _ in range(N_RUNS):
            run_id = store_runs.create(db, dataset_id=1, model="mlp", config={}, epochs_total=2)
            store_runs.update(db, run_id, status="done", epochs_done=2, metrics={"val_accuracy": 0.9})
            store_runs.add_metrics(db, [{"run_id": run_id, "kind": "train", "step": s, "epoch": 1, "loss": 1.0 / s}
                                        for s in range(1, 6)])
    db.close()
    return path


async def _wait_for(pilot, condition, timeout: float = 30.0) -> None:
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, f"condition not met within {timeout} s"
        await pilot.pause(0.02)


@pytest.mark.anyio
async def test_first_frame_already_shows_the_runs_and_the_selected_runs_curve(many_runs):
    """On an existing store the Training panel reads its first page before the first frame, not a poll later."""
    app = make_app(many_runs, panel="training", sample_device=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await _wait_for(pilot, lambda: app.first_frame_at is not None)
        assert app.data_shown_at is not None and app.data_shown_at <= app.first_frame_at
        panel = app.query_one("#panel-training")
        first = len(panel.runs)
        assert 20 <= first <= 100 and next(iter(panel.runs)) == N_RUNS  # a screenful, newest first
        assert panel.selected == N_RUNS and app.query_one("#loss-chart").point_count == 5
        await _wait_for(pilot, lambda: panel.polls >= 1)
        assert len(panel.runs) == 100  # the first poll fills in the rest of the page


@pytest.mark.anyio
async def test_runs_table_loads_older_runs_a_page_at_a_time(many_runs):
    app = make_app(many_runs, panel="training", sample_device=False, poll_interval=0.2)
    async with app.run_test(size=(120, 40)) as pilot:
        panel = app.query_one("#panel-training")
        table = app.query_one("#runs-table")
        await _wait_for(pilot, lambda: panel.polls >= 1)
        assert table.row_count == 100 and panel.total_runs == N_RUNS
        await pilot.press("m")
        await _wait_for(pilot, lambda: table.row_count == 200)
        await pilot.press("m")
        await _wait_for(pilot, lambda: table.row_count == N_RUNS)
        assert min(panel.runs) == 1
        await pilot.press("m")
        await _wait_for(pilot, lambda: any(f"All {N_RUNS} runs are shown." in m for _, m in app.notices))
        assert table.row_count == N_RUNS


def _cli(db: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "POCKETOPS_HOME": str(db.parent)}
    return subprocess.run([sys.executable, "-m", "tui.cli", "--db", str(db), *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_runs_list_limit_keeps_the_json_shape(many_runs):
    default = _cli(many_runs, "runs", "list", "--json")
    assert default.returncode == 0, default.stderr
    runs = json.loads(default.stdout)["runs"]
    assert len(runs) == 200 and runs[0]["run_id"] == N_RUNS
    assert set(runs[0]) == {"run_id", "dataset", "model", "status", "epochs_done", "epochs_total", "val_accuracy", "created_at"}
    assert [r["run_id"] for r in json.loads(_cli(many_runs, "runs", "list", "--json", "--limit", "3").stdout)["runs"]] == [250, 249, 248]
    assert len(json.loads(_cli(many_runs, "runs", "list", "--json", "--limit", "0").stdout)["runs"]) == N_RUNS
    bad = _cli(many_runs, "runs", "list", "--limit", "-2")
    assert bad.returncode == 2 and "expected a whole number >= 0" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
