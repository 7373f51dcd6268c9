"""The Alerts panel by taps alone at 40×20, 48×24 and 120×40: open an alert, label a sample, retrain, ack.

Taps are Pilot clicks on the tab, list rows and buttons; a swipe (scroll) brings a button into
view first, as a thumb would. Every step is checked in the store, waiting on its state.
"""
from __future__ import annotations

import time

import pytest

from core import alerts as core_alerts
from deployers import monitor
from store import alerts as store_alerts
from store import jobs
from tests._deploy_helpers import make_variant
from tests.standins.monitor import MonitorStandIn
from tests.test_alerts import deployment, digit_inputs
from tui.app import make_app
from tui.panels.alerts import before_after_lines, signal_series, watch_lines

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def seeded(db, db_path) -> int:
    variant = make_variant(db, db_path)
    with MonitorStandIn() as served:
        deployment(db, served.url, variant_id=variant, target="local")
        deployment(db, "https://huggingface.co/spaces/you/demo", target="spaces-static")
        served.serve(200, distance=1.0)
        served.serve(4, inputs=digit_inputs(4), distance=6.0, pred=8, confidence=0.4)
        served.alarm(quarantine=4)
        monitor.monitor_pass(db)
    (a,) = core_alerts.list_alerts(db)
    return a["alert_id"]


async def wait_for(pilot, condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        await pilot.pause(0.05)


async def tap(pilot, app, selector: str) -> None:
    """Swipe ``selector`` into view if needed, check it lies on the screen, click it."""
    widget = app.screen.query_one(selector)
    widget.scroll_visible(animate=False)
    await pilot.pause()
    await pilot.pause()  # the scroll's layout is applied before the region is read
    assert app.screen.region.contains_region(widget.region), f"{selector} is off the screen: {widget.region}"
    await pilot.click(widget)
    await pilot.pause()


@pytest.mark.parametrize("size", [(40, 20), (48, 24), (120, 40)])
async def test_open_label_retrain_ack_by_taps(digits_db, size):
    db, db_path = digits_db
    alert_id = seeded(db, db_path)
    app = make_app(db_path, sample_device=False, poll_interval=0.1)
    async with app.run_test(size=size) as pilot:
        await tap(pilot, app, "#tab-alerts")
        panel = app.query_one("#panel-alerts")
        await wait_for(pilot, lambda: panel.detail is not None and panel.previews, "the alert's evidence")
        assert panel.detail["alert_id"] == alert_id
        # Open it (tap its row), see the evidence.
        from textual.widgets import DataTable

        table = app.query_one("#alerts-table", DataTable)
        await pilot.click(table, offset=(2, 1))
        await pilot.pause()
        assert panel.selected == alert_id
        assert panel.query_one("#alert-signal").point_count > 200
        assert "cannot be monitored" in str(panel.query_one("#alert-watch").render())
        # Label sample 2 as "3": next, next, tap the class.
        for expected in (1, 2):
            await tap(pilot, app, "#alert-next")
            await wait_for(pilot, lambda: panel.sample == expected, f"sample {expected} shown", timeout=5)
        await wait_for(pilot, lambda: app.screen.query("#alert-label-3"), "the class buttons")
        await tap(pilot, app, "#alert-label-3")
        await wait_for(pilot, lambda: [s["label"] for s in core_alerts.detail(db, alert_id)["evidence"]["samples"]]
                       == [None, None, "3", None], "the label in the store")
        # Retrain in one tap: a new dataset version and a queued run.
        await tap(pilot, app, "#alert-retrain")
        await wait_for(pilot, lambda: any(j["kind"] == "train" for j in jobs.list_jobs(db)), "the retrain run")
        assert db.execute("SELECT COUNT(*) FROM datasets WHERE name = 'digits-v2'").fetchone()[0] == 1
        # Ack.
        await tap(pilot, app, "#alert-ack")
        await wait_for(pilot, lambda: store_alerts.get(db, alert_id)["status"] == "acked", "the ack")
        assert not [n for n in app.notices if "error" in str(n).lower()], app.notices


async def test_retrain_without_labels_offers_the_dataset_alone(digits_db):
    db, db_path = digits_db
    alert_id = seeded(db, db_path)
    app = make_app(db_path, sample_device=False, poll_interval=0.1)
    async with app.run_test(size=(40, 20)) as pilot:
        await tap(pilot, app, "#tab-alerts")
        panel = app.query_one("#panel-alerts")
        await wait_for(pilot, lambda: panel.detail is not None, "the alert")
        await tap(pilot, app, "#alert-retrain")
        from tui.dialogs import ConfirmDialog

        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the offer")
        assert "no labelled samples" in app.screen.question
        await tap(pilot, app, "#yes")
        await wait_for(pilot, lambda: any(j["kind"] == "train" for j in jobs.list_jobs(db)), "the run on digits")
    run = db.execute("SELECT d.name FROM runs r JOIN datasets d ON d.id = r.dataset_id").fetchone()
    assert run[0] == "digits" and store_alerts.get(db, alert_id)["status"] == "open"


def test_watch_lines_say_what_cannot_be_monitored():
    rows = [{"id": 1, "target": "spaces-static", "version": 2, "status": "running"},
            {"id": 2, "target": "local", "version": 3, "status": "running"},
            {"id": 3, "target": "gcp", "version": 1, "status": "stopped"},
            {"id": 4, "target": "spaces-docker", "version": 1, "status": "running"}]
    cursors = {2: {"seq": 40, "last_ok_at": 100.0, "failures": 0, "last_error": None},
               4: {"seq": 0, "last_ok_at": None, "failures": 2, "last_error": "not answering"}}
    assert watch_lines(rows, cursors, 112.0) == [
        "#1 spaces-static v2: cannot be monitored (it runs in visitors' browsers)",
        "#2 local v3: watched, request 40, pulled 12 s ago",
        "#3 gcp v1: stopped, not monitored",
        "#4 spaces-docker v1: failing ×2: not answering"]


def test_the_chart_marks_the_alarm_and_a_threshold_on_the_signal_scale():
    detail = {"threshold": 0.5, "evidence": {"signal": {"name": "confidence", "points": [[1, 0.9], [2, 0.8], [3, 0.3]]},
                                             "alarm_seq": 3}}
    names = [s.name for s in signal_series(detail)]
    assert names == ["confidence", "alarm@3", "thr"]
    detail["threshold"] = 40.0  # a Page-Hinkley statistic, not on the signal's scale: not drawn
    assert [s.name for s in signal_series(detail)] == ["confidence", "alarm@3"]
    lines = before_after_lines(["0", "1"], [3, 1], [0, 4], 40)
    assert lines[0].startswith("0 ") and lines[0].rstrip().endswith("0%") and " 75% │" in lines[0]


def test_the_panel_names_notification_channels_masked(monkeypatch, tmp_path):
    from tui.panels.alerts import notify_line

    monkeypatch.setenv("POCKETOPS_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("POCKETOPS_NOTIFY_URLS", "https://ntfy.example.org/secret-topic-123 tgram://123456:ABCDEF/99")
    line = notify_line()
    assert "ntfy.example.org/***" in line and "tgram://***" in line
    assert "secret-topic" not in line and "ABCDEF" not in line
