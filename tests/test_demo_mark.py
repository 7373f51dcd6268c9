"""The demo store is labelled: its mark in the store, a "demo" mark on the dashboard, and in screenshots."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

import store
from core.datasets import ensure_builtin
from store import demo
from store import deployments as store_deployments
from store import telemetry
from tui.app import make_app

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    from demo_db import build

    path = tmp_path_factory.mktemp("demo") / "pocketops.db"
    build(path)
    return path


def test_the_seed_marks_its_store_and_says_where_each_figure_comes_from(demo_db, tmp_path):
    from demo_db import METRICS_FILE, TYPED_TELEMETRY

    recording = json.loads(METRICS_FILE.read_text())
    db = store.connect(demo_db)
    note = demo.note(db)
    assert note is not None and "curves: recorded" in note
    sample = telemetry.latest(db)
    local = [d for d in store_deployments.list_all(db) if d["target"] == "local"]
    if recording.get("telemetry"):
        assert "device load: recorded while training" in note
        assert sample["cpu_percent"] == recording["telemetry"]["cpu_percent"]
    else:
        assert "device load: typed demo values" in note and sample["cpu_percent"] == TYPED_TELEMETRY["cpu_percent"]
    if recording.get("deploy"):
        assert "cold start and health: recorded" in note
        assert sorted(d["cold_start_ms"] for d in local) == sorted(r["cold_start_ms"] for r in recording["deploy"][:2])
        assert all(d["meta"]["figures"].startswith("recorded") for d in local)
    else:
        assert all(d["meta"]["figures"] == "typed demo values" for d in local)
    db.close()
    # A real store has no mark.
    plain = store.connect(tmp_path / "real.db")
    assert demo.note(plain) is None and not demo.is_demo(plain)
    plain.close()


@pytest.mark.parametrize("size", [(40, 20), (48, 24), (120, 40)], ids=["40x20", "48x24", "120x40"])
async def test_the_dashboard_shows_a_demo_mark_on_the_demo_store_only(demo_db, tmp_path, size):
    real = tmp_path / "real.db"
    db = store.connect(real)
    ensure_builtin(db, real)
    db.close()
    for path, expect in ((demo_db, True), (real, False)):
        app = make_app(path, poll_interval=0.2, sample_device=False)
        async with app.run_test(size=size) as pilot:
            deadline = time.monotonic() + 60
            while not app.ready:
                assert time.monotonic() < deadline, "store setup did not finish"
                await pilot.pause(0.02)
            await pilot.pause()
            mark = app.query_one("#demo-mark")
            assert app.demo is expect
            if expect:
                assert mark.display and mark.region.width >= 4, mark.region
                assert app.screen.region.contains_region(mark.region)
                assert "demo" in str(mark.render()) and "demo" in app.title
                tabs = [t.region for t in app.query(".panel-tab")]
                assert all(not t.overlaps(mark.region) for t in tabs), "the mark hides a tab"
                assert len(tabs) == 6 and all(app.screen.region.contains_region(t) and t.width >= 4 for t in tabs)
            else:
                assert not mark.display and "demo" not in app.title


async def test_screenshots_carry_the_mark(demo_db, tmp_path):
    from screenshots import shoot

    svg = (await shoot(demo_db, "t", (48, 24), "training.svg", tmp_path)).read_text()
    assert ">pocketops&#160;·&#160;demo</text>" in svg  # the window title
    assert 'clip-path="url(#terminal-' in svg and '-line-0)">demo</text>' in svg  # the mark in the tab bar
