"""Alerts from a real local deployment: the bundle's server on 127.0.0.1 with its calibrated monitor.

In-distribution traffic raises no alert; once a noisy stream starts, a monitor pass opens one
drift or confidence alert whose request_seq lies within the delay the served-side tests allow
(tests/test_monitor_served.py, from benchmarks/drift.py), with the noisy inputs quarantined.
"""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

import store
from core import alerts
from deployers import monitor, service
from deployers.local import _alive
from store import deployments as store_deployments
from tests._deploy_helpers import make_variant
from tests.test_local_server import call
from tests.test_monitor_served import NOISE_DELAY, digits_test_split

KEY = "alerts-key-98765"


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("POCKETOPS_API_KEY", raising=False)
    monkeypatch.delenv("POCKETOPS_NOTIFY_URLS", raising=False)
    monkeypatch.setenv("POCKETOPS_CONFIG_DIR", str(tmp_path / "config"))
    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    yield db, db_path
    for row in store_deployments.list_all(db):
        pid = row["meta"].get("pid")
        if pid and _alive(pid):
            os.killpg(pid, signal.SIGKILL)


def predict(url: str, batch: np.ndarray) -> None:
    status, body = call(url, "POST", "/v1/predict", json.dumps({"inputs": batch.tolist()}).encode(),
                        {"X-API-Key": KEY, "Content-Type": "application/json"})
    assert status == 200, body


def test_a_local_deployment_alerts_on_noise_and_not_before(env):
    db, db_path = env
    vid = make_variant(db, db_path)
    # The key reaches the server by its environment only; the monitor reads it from there (same user).
    row = service.deploy(db, db_path, vid, "local", {"port": 0, "api_key": KEY})
    X = digits_test_split()
    rng = np.random.default_rng(11)
    for _ in range(30):
        predict(row["url"], X[rng.integers(0, len(X), 64)])
    quiet = monitor.monitor_pass(db)
    (pulled,) = quiet["deployments"]
    assert pulled["status"] == "ok" and pulled["signals"] >= 30 * 64 and quiet["alerts_opened"] == 0
    onset = db.execute("SELECT seq FROM monitor_cursors").fetchone()[0]
    assert onset >= 30 * 64
    for _ in range(4):
        predict(row["url"], np.clip(X[rng.integers(0, len(X), 64)] + rng.normal(0, 4, (64, 1, 8, 8)), 0, 16))
    loud = monitor.monitor_pass(db)
    assert loud["alerts_opened"] >= 1, loud
    first = sorted(alerts.list_alerts(db), key=lambda a: a["request_seq"])[0]
    assert first["kind"] in ("drift", "confidence") and first["deployment_id"] == row["id"]
    assert onset < first["request_seq"] <= onset + NOISE_DELAY, first
    shown = alerts.detail(db, first["alert_id"])["evidence"]
    assert shown["samples"] and shown["classes"] == [str(i) for i in range(10)]
    assert np.asarray(shown["samples"][0]["input"]).size == 64
    assert shown["calibration"]["ert_target"] == 10_000 and shown["deployment"]["variant_id"] == vid
    # A second pass with no new traffic opens nothing more.
    assert monitor.monitor_pass(db)["alerts_opened"] == 0
    assert KEY not in json.dumps(alerts.detail(db, first["alert_id"]))
    # The quarantined input as the server received it becomes a row of a new dataset version.
    alerts.label(db, first["alert_id"], 0, "3")
    made = alerts.retrain(db, db_path, first["alert_id"], epochs=1)
    rows = dict(db.execute("SELECT name, rows FROM datasets").fetchall())
    assert made["dataset"] == "digits-v2" and rows["digits-v2"] == rows["digits"] + 1
