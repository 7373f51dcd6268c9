"""Alerts, phone side: the monitor pass against a loopback /v1/monitor, idempotent storage, down alerts,
notifications (fake termux-notification, loopback webhooks), the headless `alerts` commands."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import store
from core import alerts, notify, periodic
from deployers import monitor
from store import alerts as store_alerts
from store import deployments as store_deployments
from store import jobs
from tests._deploy_helpers import digits_samples, make_variant
from tests.standins.monitor import MonitorStandIn

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _quiet_channels(tmp_path, monkeypatch):
    """No user config, no Termux, no env URLs: each test sets the channels it wants."""
    monkeypatch.setenv("POCKETOPS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("POCKETOPS_NOTIFY_URLS", raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                               if not (Path(p) / "termux-notification").exists()))


def deployment(db, url: str, *, target: str = "spaces-docker", variant_id: int | None = None, status: str = "running") -> dict:
    row = store_deployments.create(db, variant_id=variant_id, target=target, name=f"{target}-{url[-5:]}", status=status)
    return store_deployments.update(db, row["id"], url=url)


def digit_inputs(n: int = 3) -> list:
    return [x[0].tolist() for x in digits_samples(n, start=100)]


# -- the pass ------------------------------------------------------------------------------------------

def test_in_distribution_traffic_opens_nothing_and_an_alarm_opens_one_alert_once(db):
    db, db_path = db
    with MonitorStandIn() as served:
        dep = deployment(db, served.url)
        served.serve(400)
        first = monitor.monitor_pass(db)
        assert first["alerts_opened"] == 0 and first["deployments"][0]["signals"] == 400
        assert store_alerts.list_alerts(db) == []
        served.serve(50, distance=7.0)
        event = served.alarm("distance", value=9.5, threshold=5.0)
        second = monitor.monitor_pass(db)
        assert second["alerts_opened"] == 1
        # A retried pull (the cursor rewound, as after a kill before it was saved) never duplicates.
        db.execute("UPDATE monitor_cursors SET seq = 0")
        assert monitor.monitor_pass(db)["alerts_opened"] == 0
    found = alerts.list_alerts(db)
    assert len(found) == 1
    a = found[0]
    assert set(a) == set(store_alerts.PUBLIC)
    assert (a["kind"], a["deployment_id"], a["detector"], a["status"], a["request_seq"], a["value"], a["threshold"]) == \
        ("drift", dep["id"], "distance", "open", event["seq"], 9.5, 5.0)
    shown = alerts.detail(db, a["alert_id"])["evidence"]
    assert shown["alarm_seq"] == 450 and len(shown["samples"]) == 3
    assert [p[0] for p in shown["signal"]["points"]][0] == 150  # 300 requests before the alarm
    assert shown["calibration"]["ert_target"] == 10000
    assert sum(shown["confidence_histogram"]["before"]) == 300 and sum(shown["confidence_histogram"]["after"]) == 1


def test_inputs_quarantined_after_the_alarm_join_its_alert_in_a_later_pull(db):
    """The served side quarantines inputs around an alarm, the later ones after the phone first saw
    it: the next pull adds them to the same alert's evidence and opens no second alert."""
    db, db_path = db
    with MonitorStandIn() as served:
        deployment(db, served.url)
        served.serve(60, distance=7.0)
        event = served.alarm("distance", value=9.5, threshold=5.0, quarantine=3)
        assert monitor.monitor_pass(db)["alerts_opened"] == 1
        [a] = alerts.list_alerts(db)
        assert len(alerts.detail(db, a["alert_id"])["evidence"]["samples"]) == 3
        served.serve(4, distance=7.5)
        served.quarantine_after(event, 4)
        assert monitor.monitor_pass(db)["alerts_opened"] == 0
    assert len(alerts.list_alerts(db)) == 1
    samples = alerts.detail(db, a["alert_id"])["evidence"]["samples"]
    assert len(samples) == 7
    assert store_alerts.get(db, a["alert_id"])["evidence"]["quarantine"] == list(range(58, 65))


def test_a_restarted_server_is_read_from_its_first_request(db):
    db, _ = db
    with MonitorStandIn() as served:
        deployment(db, served.url)
        served.serve(30)
        monitor.monitor_pass(db)
        old = store_alerts.cursor(db, 1)["server_id"]
        served.restart()
        served.serve(5)
        served.alarm("confidence", kind="confidence", value=0.4, threshold=0.2)
        out = monitor.monitor_pass(db)
    assert out["alerts_opened"] == 1 and out["deployments"][0]["signals"] == 5
    cur = store_alerts.cursor(db, 1)
    assert cur["server_id"] != old and cur["seq"] == 5


def test_two_instances_behind_one_url_each_keep_their_cursor(db):
    """Cloud Run: many instances answer the same URL, each with its own server_id and seq."""
    db, _ = db
    with MonitorStandIn() as a, MonitorStandIn() as b:
        dep = deployment(db, a.url)
        a.serve(30)
        b.serve(10)
        monitor.monitor_pass(db)
        store_deployments.update(db, dep["id"], url=b.url)   # the next request lands on instance b
        monitor.monitor_pass(db)
        a.serve(5)
        a.alarm()
        store_deployments.update(db, dep["id"], url=a.url)   # and back on a
        out = monitor.monitor_pass(db)
        since = [q for m, q in a.requests if "since=" in q]
    assert out["deployments"][0]["signals"] == 5 and out["alerts_opened"] == 1
    assert since[-1].startswith("/v1/monitor?since=30&")  # a's own cursor, not a re-read from 0
    assert db.execute("SELECT COUNT(*) FROM monitor_signals").fetchone()[0] == 45


def test_paging_catches_up_a_long_backlog(db):
    db, _ = db
    with MonitorStandIn() as served:
        deployment(db, served.url)
        served.serve(2500)
        served.alarm()
        out = monitor.monitor_pass(db)
    assert out["deployments"][0]["signals"] == 2500 and out["alerts_opened"] == 1
    assert store_alerts.cursor(db, 1)["seq"] == 2500


def test_garbage_is_a_down_alert_with_the_reason_and_the_cli_says_so_in_one_pass(db, tmp_path):
    db, db_path = db
    with MonitorStandIn() as served:
        deployment(db, served.url)
        served.garbage = b"<html>502 Bad Gateway</html>"
        done = subprocess.run([sys.executable, "-m", "tui.cli", "--db", str(db_path), "monitor", "--once", "--json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads(done.stdout)
    assert result["alerts_opened"] == 1 and result["deployments"][0]["status"] == "failing"
    (a,) = alerts.list_alerts(db)
    assert a["kind"] == "down" and "not JSON" in a["message"] and "502 Bad Gateway" in a["message"]


@pytest.mark.parametrize("answer, says", [
    (b"[1, 2]", "expected a JSON object"),
    (b'{"server_id": "x", "seq": "7"}', "'seq' must be an integer"),
    (b'{"server_id": "x", "seq": 1, "signals": [{"seq": 1, "confidence": "high"}]}', "must be numbers"),
    (b'{"server_id": "x", "seq": 1, "events": [{"seq": 1}]}', "'event_id'"),
])
def test_a_wrong_shape_is_garbage_with_the_field_named(db, answer, says):
    db, _ = db
    with MonitorStandIn() as served:
        deployment(db, served.url)
        served.garbage = answer
        out = monitor.monitor_pass(db)
    assert out["alerts_opened"] == 1 and says in out["deployments"][0]["error"]
    assert db.execute("SELECT COUNT(*) FROM monitor_signals").fetchone()[0] == 0


def test_down_after_n_failures_in_a_row_then_resolved_when_it_answers(db, monkeypatch):
    db, _ = db
    monkeypatch.setenv("POCKETOPS_MONITOR_DOWN_AFTER", "3")
    with MonitorStandIn() as served:
        deployment(db, served.url)
        served.fail["monitor"] = 503
        for expected in (0, 0, 1, 0):
            assert monitor.monitor_pass(db)["alerts_opened"] == expected
        (a,) = alerts.list_alerts(db)
        assert a["kind"] == "down" and a["value"] == 3 and "HTTP 503" in a["message"]
        del served.fail["monitor"]
        served.serve(3)
        monitor.monitor_pass(db)
    assert alerts.list_alerts(db) == [] and store_alerts.get(db, a["alert_id"])["status"] == "resolved"


def test_a_refused_connection_counts_as_a_failed_check(db, monkeypatch):
    db, _ = db
    monkeypatch.setenv("POCKETOPS_MONITOR_DOWN_AFTER", "1")
    with MonitorStandIn() as served:
        url = served.url
    deployment(db, url)  # nothing listens there any more
    out = monitor.monitor_pass(db)
    assert out["alerts_opened"] == 1 and "not answering" in out["deployments"][0]["error"]


def test_the_static_page_and_stopped_releases_are_not_pulled(db):
    db, _ = db
    with MonitorStandIn() as served:
        deployment(db, served.url, target="spaces-static")
        deployment(db, served.url, target="gcp", status="stopped")
        assert monitor.monitor_pass(db)["deployments"] == []
        assert served.requests == []
    with pytest.raises(Exception, match="cannot be monitored"):
        monitor.monitor_pass(db, deployment_id=1)


def test_a_muted_detector_opens_no_alert(db):
    db, _ = db
    with MonitorStandIn() as served:
        dep = deployment(db, served.url)
        alerts.mute(db, dep["id"], "confidence")
        served.serve(10)
        served.alarm("confidence", kind="confidence")
        served.alarm("distance")
        out = monitor.monitor_pass(db)
    assert out["alerts_opened"] == 1 and out["deployments"][0]["muted"] == 1
    assert [a["detector"] for a in alerts.list_alerts(db)] == ["distance"]


# -- scheduling ----------------------------------------------------------------------------------------

def test_the_periodic_monitor_job_never_piles_up(db):
    db, _ = db
    assert periodic.schedule_monitor(db, every=30) is None  # nothing watched: nothing queued
    deployment(db, "http://127.0.0.1:9")
    first = periodic.schedule_monitor(db, every=30)
    assert first is not None and jobs.get(db, first)["kind"] == "monitor"
    assert periodic.schedule_monitor(db, every=0.0001) is None  # one queued: no second one
    db.execute("UPDATE jobs SET status = 'done', created_at = created_at - 10 WHERE id = ?", (first,))
    assert periodic.schedule_monitor(db, every=30) is None      # done 10 s ago: not due yet
    second = periodic.schedule_monitor(db, every=5)
    assert second == first and jobs.get(db, first)["status"] == "queued"  # one row, requeued: no pile of rows
    assert [j["kind"] for j in jobs.list_jobs(db)] == ["monitor"]


def test_the_worker_queues_and_runs_monitor_passes_by_itself(db, monkeypatch):
    from core.worker import Worker

    db, db_path = db
    with MonitorStandIn() as served:
        deployment(db, served.url)
        served.serve(20)
        served.alarm()
        worker = Worker(db_path)
        seen = []

        def on_job(job):
            seen.append(job)
            worker.request_stop()

        thread = threading.Thread(target=lambda: worker.run(on_job=on_job, idle_sleep=0.05))
        thread.start()
        thread.join(timeout=120)
    assert not thread.is_alive()
    assert seen and seen[0]["kind"] == "monitor" and seen[0]["status"] == "done", seen
    assert seen[0]["result"]["alerts_opened"] == 1


# -- notifications -------------------------------------------------------------------------------------

class _Hook(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.got.append((self.path, json.loads(body)))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.got, server.statuses = [], []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _alarm_once(db, served) -> int:
    deployment(db, served.url)
    served.serve(5)
    served.alarm()
    monitor.monitor_pass(db)
    return alerts.list_alerts(db)[0]["alert_id"]


def test_a_webhook_gets_the_alert_as_json_and_its_url_never_reaches_the_store(db, webhook, tmp_path):
    db, db_path = db
    secret_path = "/hook/s3cr3t-t0ken-abcdef"
    url = f"http://127.0.0.1:{webhook.server_address[1]}{secret_path}"
    assert notify.add_url(url) == 1
    assert stat.S_IMODE(notify.config_file().stat().st_mode) == 0o600
    with MonitorStandIn() as served:
        alert_id = _alarm_once(db, served)
    ((path, body),) = webhook.got
    assert path == secret_path and body["alert"]["alert_id"] == alert_id and body["alert"]["kind"] == "drift"
    (row,) = store_alerts.notifications(db, alert_id)
    assert (row["channel"], row["status"], row["attempts"]) == ("webhook", "sent", 1)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for f in db_path.parent.glob(db_path.name + "*"):
        data = f.read_bytes()
        assert b"s3cr3t-t0ken" not in data and str(webhook.server_address[1]).encode() + b"/hook" not in data, f
    assert "s3cr3t" not in json.dumps(notify.listing())


def test_a_failing_webhook_is_retried_with_backoff_and_recorded(db, webhook, monkeypatch):
    db, _ = db
    monkeypatch.setenv("POCKETOPS_NOTIFY_BACKOFF_S", "60")
    monkeypatch.setenv("POCKETOPS_NOTIFY_URLS", f"http://127.0.0.1:{webhook.server_address[1]}/fail-token-xyz")
    webhook.statuses = [500, 500]
    with MonitorStandIn() as served:
        alert_id = _alarm_once(db, served)
    (row,) = store_alerts.notifications(db, alert_id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 1, "webhook answered HTTP 500")
    assert row["next_at"] - row["created_at"] >= 59
    assert notify.deliver_due(db) == {"sent": 0, "failed": 0, "retrying": 0}  # not due yet
    assert notify.deliver_due(db, at=row["next_at"] + 1) == {"sent": 0, "failed": 0, "retrying": 1}
    row = store_alerts.notifications(db, alert_id)[0]
    assert row["attempts"] == 2 and row["next_at"] - (row["created_at"]) >= 60 + 120 - 1  # doubled
    assert notify.deliver_due(db, at=row["next_at"] + 1)["sent"] == 1
    assert store_alerts.notifications(db, alert_id)[0]["status"] == "sent" and len(webhook.got) == 3
    assert "fail-token" not in json.dumps(store_alerts.notifications(db))


def test_termux_notification_is_called_with_a_timeout_and_failure_never_crashes(db, tmp_path, monkeypatch):
    db, _ = db
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    fake = bin_dir / "termux-notification"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> {calls}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with MonitorStandIn() as served:
        alert_id = _alarm_once(db, served)
    args = calls.read_text().splitlines()
    assert "--title" in args and f"pocketops-alert-{alert_id}" in args
    assert store_alerts.notifications(db, alert_id)[0]["status"] == "sent"
    # A broken Termux:API exits non-zero: recorded, retried later, the pass goes on.
    fake.write_text("#!/bin/sh\necho 'Termux:API app not installed' >&2\nexit 1\n")
    with MonitorStandIn() as served:
        deployment(db, served.url)
        served.serve(2)
        served.alarm()
        out = monitor.monitor_pass(db)
    assert out["notifications"]["retrying"] == 1
    last = store_alerts.notifications(db)[0]
    assert "exited 1" in last["last_error"] and "not installed" in last["last_error"]


# -- the headless commands ---------------------------------------------------------------------------

def cli(db_path, *argv, env=None):
    from tui.cli import main

    return main(["--db", str(db_path), *argv])


def test_alerts_commands_and_their_one_line_refusals(digits_db, capsys):
    db, db_path = digits_db
    variant = make_variant(db, db_path)
    inputs = digit_inputs(3)
    with MonitorStandIn() as served:
        dep = deployment(db, served.url, variant_id=variant)
        served.serve(3, inputs=inputs, distance=8.0)
        served.alarm(quarantine=3)
        monitor.monitor_pass(db)
    capsys.readouterr()
    assert cli(db_path, "alerts", "list", "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    alert_id = row["alert_id"]
    assert cli(db_path, "alerts", "show", str(alert_id), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["evidence"]["classes"] == [str(i) for i in range(10)] and len(shown["evidence"]["samples"]) == 3
    assert shown["evidence"]["deployment"]["variant_id"] == variant

    def refused(*argv, says):
        before = db.execute("SELECT COUNT(*), SUM(label IS NOT NULL) FROM monitor_quarantine").fetchone()
        status = db.execute("SELECT status FROM alerts").fetchall()
        assert cli(db_path, *argv) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err
        assert db.execute("SELECT COUNT(*), SUM(label IS NOT NULL) FROM monitor_quarantine").fetchone() == before
        assert db.execute("SELECT status FROM alerts").fetchall() == status

    refused("alerts", "show", "999", says="no alert with id 999")
    refused("alerts", "ack", "999", says="no alert with id 999")
    refused("alerts", "label", str(alert_id), "--sample", "3", "--label", "1", says="samples 0..2")
    refused("alerts", "label", str(alert_id), "--sample", "0", "--label", "cat", says="not one of the model's classes")
    refused("alerts", "mute", "999", "distance", says="no deployment with id 999")
    refused("alerts", "mute", str(dep["id"]), "vibes", says="unknown detector")
    refused("alerts", "notify", "add", "notaservice://x", says="apprise cannot parse")
    assert not notify.config_file().exists()

    from core.errors import PocketopsError

    with pytest.raises(PocketopsError, match=r"no labelled samples.*'digits' alone.*--dataset-only"):
        alerts.retrain(db, db_path, alert_id)
    assert cli(db_path, "alerts", "label", str(alert_id), "--sample", "1", "--label", "7") == 0
    assert "labelled '7'" in capsys.readouterr().out
    assert cli(db_path, "alerts", "ack", str(alert_id)) == 0
    assert "[acked]" in capsys.readouterr().out
    assert cli(db_path, "alerts", "mute", str(dep["id"]), "distance") == 0
    capsys.readouterr()

    old = db.execute("SELECT fingerprint, rows FROM datasets WHERE name = 'digits'").fetchone()
    made = alerts.retrain(db, db_path, alert_id, epochs=2)
    assert made["dataset"] == "digits-v2" and made["added_rows"] == 1
    assert db.execute("SELECT fingerprint, rows FROM datasets WHERE name = 'digits'").fetchone() == old
    from core.datasets import load_arrays
    from store import datasets as store_datasets

    fresh = load_arrays(store_datasets.by_name(db, "digits-v2"))
    assert len(fresh.y) == old[1] + 1 and fresh.y[-1] == 7
    import numpy as np

    assert np.allclose(fresh.X[-1, 0], np.asarray(inputs[1]) / 16)
    job = jobs.get(db, made["job_id"])
    assert job["kind"] == "train" and job["status"] == "queued"
    assert db.execute("SELECT epochs_total FROM runs WHERE id = ?", (made["run_id"],)).fetchone()[0] == 2

    assert cli(db_path, "alerts", "resolve", str(alert_id)) == 0
    capsys.readouterr()
    assert cli(db_path, "alerts", "list", "--json") == 0 and json.loads(capsys.readouterr().out) == []
    assert cli(db_path, "alerts", "list", "--all", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "resolved"
    pytest.importorskip("torch")
    assert cli(db_path, "alerts", "retrain", str(alert_id), "--json") == 0  # the shape `train` prints
    queued = json.loads(capsys.readouterr().out)
    assert set(queued) == {"run_id", "job_id", "status"} and queued["status"] == "queued"
    assert db.execute("SELECT d.name FROM runs r JOIN datasets d ON d.id = r.dataset_id WHERE r.id = ?",
                      (queued["run_id"],)).fetchone()[0] == "digits-v3"


def test_notify_add_list_remove_masks_urls(db, capsys):
    _, db_path = db
    assert cli(db_path, "alerts", "notify", "add", "https://hooks.example.com/T000/B000/tok3nvalue") == 0
    out = capsys.readouterr().out
    assert "tok3nvalue" not in out and "hooks.example.com/***" in out
    assert cli(db_path, "alerts", "notify", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [u["number"] for u in listed["urls"]] == [1] and "tok3n" not in json.dumps(listed)
    assert cli(db_path, "alerts", "notify", "remove", "2") != 0
    assert "no notification URL number 2" in capsys.readouterr().err
    assert cli(db_path, "alerts", "notify", "remove", "1") == 0
    capsys.readouterr()
    assert notify.urls() == []


def test_open_alert_for_budgets_is_idempotent_by_key(db, webhook, monkeypatch):
    db, _ = db
    monkeypatch.setenv("POCKETOPS_NOTIFY_URLS", f"http://127.0.0.1:{webhook.server_address[1]}/budget")
    first = store_alerts.open_alert(db, kind="budget", deployment_id=None, detector=None, value=12.0, threshold=10.0,
                                    message="gcp spend 12.00 USD over the 10.00 budget", key="budget:gcp:100:2026-12")
    again = store_alerts.open_alert(db, kind="budget", deployment_id=None, detector=None, value=13.0, threshold=10.0,
                                    message="again", key="budget:gcp:100:2026-12")
    assert first == (first[0], True) and again == (first[0], False)
    assert alerts.list_alerts(db)[0]["message"].startswith("gcp spend")
    # Its notification, queued by the caller, gets a monitor pass even with no deployment to pull.
    assert periodic.schedule_monitor(db, every=30) is None
    assert notify.queue_for(db, first[0]) == 1 and notify.queue_for(db, first[0]) == 0
    job_id = periodic.schedule_monitor(db, every=30)
    assert job_id is not None
    assert monitor.monitor_pass(db)["notifications"]["sent"] == 1
    assert webhook.got[0][1]["alert"]["kind"] == "budget"


# -- signal 9 ------------------------------------------------------------------------------------------

def test_a_monitor_pass_killed_mid_pull_stores_each_alert_once(tmp_path, webhook, monkeypatch):
    """SIGKILL the worker after it pulled but before it stored, then after it stored but before it
    notified: the next worker ends with exactly one alert, one notification sent, the cursor at the end."""
    from tests._pace import Pace
    from tests.test_kill9 import kill9, start_worker, wait_for

    db_path = tmp_path / "data" / "t.db"
    db = store.connect(db_path)
    hook = f"http://127.0.0.1:{webhook.server_address[1]}/k9"
    pace = Pace(tmp_path, hold=["monitor:pulled"])
    monkeypatch.setenv("POCKETOPS_MONITOR_S", "0.1")  # start_worker passes this process's environment on
    monkeypatch.setenv("POCKETOPS_NOTIFY_URLS", hook)
    with MonitorStandIn() as served:
        deployment(db, served.url)
        served.serve(40)
        served.alarm()
        worker = start_worker(db_path, pace)
        try:
            pace.wait_held("monitor:pulled", proc=worker)
        finally:
            kill9(worker)
        assert store_alerts.list_alerts(db) == [] and store_alerts.cursor(db, 1)["seq"] == 0

        pace.set(hold=["monitor:stored"])
        pace.clear_held()
        worker = start_worker(db_path, pace)
        try:
            pace.wait_held("monitor:stored", proc=worker)
        finally:
            kill9(worker)
        assert len(store_alerts.list_alerts(db)) == 1 and webhook.got == []

        pace.set()
        last = start_worker(db_path, pace, "--once")
        assert last.wait(timeout=300) == 0
        wait_for(lambda: webhook.got, 30, "the webhook call")
    assert len(store_alerts.list_alerts(db)) == 1
    assert [n["status"] for n in store_alerts.notifications(db)] == ["sent"] and len(webhook.got) == 1
    assert store_alerts.cursor(db, 1)["seq"] == 40
    assert db.execute("SELECT COUNT(*) FROM monitor_signals").fetchone()[0] == 40
    monitor_jobs = [j for j in jobs.list_jobs(db) if j["kind"] == "monitor"]
    assert monitor_jobs and all(j["status"] == "done" for j in monitor_jobs)
