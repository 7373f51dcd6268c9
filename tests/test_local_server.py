"""The local target for real: a server process on loopback, bad requests, rollback, a failed deploy."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import store
from deployers import service
from deployers.base import DeployError
from deployers.bundle import build_bundle
from deployers.local import _alive
from deployers.runtime.predictor import Predictor
from store import deployments as store_deployments
from tests._deploy_helpers import digits_samples, make_variant

KEY = "test-key-1234567"


def call(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


@pytest.fixture()
def env(tmp_path):
    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    started: list[dict] = []
    yield db, db_path, started
    for row in store_deployments.list_all(db):
        pid = row["meta"].get("pid")
        if pid and _alive(pid):
            os.killpg(pid, signal.SIGKILL)


def test_server_answers_like_onnxruntime_and_survives_bad_requests(env, monkeypatch):
    db, db_path, _ = env
    vid = make_variant(db, db_path)
    row = service.deploy(db, db_path, vid, "local", {"port": 0, "api_key": KEY})
    assert row["status"] == "running" and row["cold_start_ms"] > 0 and row["health_latency_ms"] > 0
    assert KEY not in json.dumps(row) and KEY not in json.dumps(store_deployments.list_all(db))
    url, auth = row["url"], {"X-API-Key": KEY, "Content-Type": "application/json"}

    samples = digits_samples(8, start=100)
    status, got = call(url, "POST", "/v1/predict", json.dumps({"inputs": samples.tolist()}).encode(), auth)
    assert status == 200
    expected = Predictor(row["meta"]["bundle"]).predict(samples.tolist())
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-6)
    assert got["labels"] == expected["labels"]

    bad = [
        ("POST", "/v1/predict", b"{not json", auth, 400, "not valid JSON"),
        ("POST", "/v1/predict", json.dumps({"inputs": [[1, 2, 3]]}).encode(), auth, 422, "wrong input shape"),
        ("POST", "/v1/predict", json.dumps({"input": []}).encode(), auth, 400, "'inputs' field"),
        ("POST", "/v1/predict", b"[" + b"0," * 600_000 + b"0]", auth, 413, "over the limit"),
        ("POST", "/v1/predict", json.dumps({"inputs": samples.tolist()}).encode(), {"X-API-Key": "wrong"}, 401, "X-API-Key"),
        ("GET", "/v1/stats", None, {}, 401, "X-API-Key"),
        ("GET", "/nope", None, auth, 404, "no route"),
    ]
    for method, path, body, headers, code, message in bad:
        status, answer = call(url, method, path, body, headers)
        assert (status, message in answer.get("error", "")) == (code, True), (path, status, answer)
        # ...and it keeps serving after each one.
        assert call(url, "GET", "/health")[0] == 200

    status, model = call(url, "GET", "/v1/model", headers=auth)
    assert status == 200 and model["labels"][0] == "0" and model["version"] == row["meta"]["bundle_version"]
    status, stats = call(url, "GET", "/v1/stats", headers=auth)
    assert stats["errors"] >= 6 and stats["samples"] == 8 + 1  # + the deploy's own first prediction
    assert service.status(db, row["id"])["status"] == "running"


def test_non_loopback_needs_a_key(env, monkeypatch):
    db, db_path, _ = env
    monkeypatch.delenv("POCKETOPS_API_KEY", raising=False)
    vid = make_variant(db, db_path)
    with pytest.raises(DeployError, match="needs an API key"):
        service.deploy(db, db_path, vid, "local", {"host": "0.0.0.0", "port": 0})
    assert [r["status"] for r in store_deployments.list_all(db)] == ["failed"]
    # The server itself refuses too, whoever starts it.
    bundle = build_bundle(db, db_path, vid)
    proc = subprocess.run([sys.executable, str(bundle.path / "server.py"), "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, timeout=30, env={k: v for k, v in os.environ.items() if k != "POCKETOPS_API_KEY"})
    assert proc.returncode == 2 and "needs an API key" in proc.stderr


def test_rollback_restores_previous_version_and_failed_deploy_keeps_serving(env):
    db, db_path, _ = env
    v1 = make_variant(db, db_path, name="fp32", seed=0)
    v2 = make_variant(db, db_path, name="int8", seed=1)
    broken = make_variant(db, db_path, name="broken", broken=True)
    first = service.deploy(db, db_path, v1, "local", {"port": 0})
    port = first["meta"]["port"]
    second = service.deploy(db, db_path, v2, "local", {"port": port})
    assert second["url"] == first["url"] and second["version"] == 2
    assert call(second["url"], "GET", "/v1/model")[1]["variant"] == "int8"
    assert store_deployments.get(db, first["id"])["status"] == "superseded"
    assert not _alive(first["meta"]["pid"])

    with pytest.raises(DeployError, match=r"failed: .*cannot load this model.*v2 keeps serving"):
        service.deploy(db, db_path, broken, "local", {"port": port})
    failed = store_deployments.list_all(db)[0]
    assert failed["status"] == "failed" and "cannot load" in failed["error"]
    assert store_deployments.get(db, second["id"])["status"] == "running"
    assert call(second["url"], "GET", "/v1/model")[1]["variant"] == "int8"

    rolled = service.rollback(db, second["id"])
    assert rolled["status"] == "running" and rolled["version"] == 4 and rolled["variant_id"] == v1
    assert rolled["meta"]["rolled_back_from"] == second["id"] and rolled["url"] == first["url"]
    assert call(rolled["url"], "GET", "/v1/model")[1]["variant"] == "fp32"
    assert store_deployments.get(db, second["id"])["status"] == "rolled-back"
    assert not _alive(second["meta"]["pid"])

    stopped = service.stop(db, rolled["id"])
    assert stopped["status"] == "stopped" and not _alive(rolled["meta"]["pid"])
    with pytest.raises(OSError):
        call(rolled["url"], "GET", "/health")
    assert service.status(db, rolled["id"])["status"] == "stopped"


def test_supervisor_restarts_a_killed_server(env):
    db, db_path, _ = env
    row = service.deploy(db, db_path, make_variant(db, db_path), "local", {"port": 0})
    os.kill(row["meta"]["server_pid"], signal.SIGKILL)  # what Android's phantom process killer does
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if call(row["url"], "GET", "/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    assert service.status(db, row["id"])["status"] == "running"
