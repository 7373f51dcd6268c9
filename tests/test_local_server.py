"""The local target for real: a server process on loopback, bad requests, rollback, a failed deploy."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import store
from deployers import service
from deployers.base import DeployError
from deployers.bundle import build_bundle
from deployers.local import LocalDeployer, _alive, _members
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
    # Equal to onnxruntime run in this process on the same model (pixels 0..16 scaled by 1/16).
    import onnxruntime as ort

    session = ort.InferenceSession(str(Path(row["meta"]["bundle"]) / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": samples / np.float32(16)})[0].astype(np.float64)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(got["probabilities"], expected, atol=1e-6)
    assert got["labels"] == [str(i) for i in expected.argmax(1)]
    # Digits written as 8x8 grids, one or a batch, are taken as well.
    status, grids = call(url, "POST", "/v1/predict", json.dumps({"inputs": samples[:3, 0].tolist()}).encode(), auth)
    assert status == 200 and grids["labels"] == got["labels"][:3]
    status, one = call(url, "POST", "/v1/predict", json.dumps({"inputs": samples[4, 0].tolist()}).encode(), auth)
    assert status == 200 and one["labels"] == got["labels"][4:5]

    bad = [
        ("POST", "/v1/predict", b"{not json", auth, 400, "not valid JSON"),
        ("POST", "/v1/predict", json.dumps({"inputs": [[1, 2, 3]]}).encode(), auth, 422, "wrong input shape"),
        ("POST", "/v1/predict", json.dumps({"input": []}).encode(), auth, 400, "'inputs' field"),
        ("POST", "/v1/predict", b"[" + b"0," * 600_000 + b"0]", auth, 413, "over the limit"),
        ("POST", "/v1/predict", json.dumps({"inputs": samples.tolist()}).encode(), {"X-API-Key": "wrong"}, 401, "X-API-Key"),
        ("GET", "/v1/stats", None, {}, 401, "X-API-Key"),
        ("GET", "/nope", None, auth, 404, "no route"),
        ("GET", "/v1/predict", None, auth, 405, "use POST"),
        ("PUT", "/v1/predict", b"{}", auth, 405, "not allowed"),
        ("DELETE", "/health", None, auth, 405, "use GET"),
    ]
    for method, path, body, headers, code, message in bad:
        status, answer = call(url, method, path, body, headers)
        assert (status, message in answer.get("error", "")) == (code, True), (path, status, answer)
        # ...and it keeps serving after each one.
        assert call(url, "GET", "/health")[0] == 200

    status, model = call(url, "GET", "/v1/model", headers=auth)
    assert status == 200 and model["labels"][0] == "0" and model["version"] == row["meta"]["bundle_version"]
    status, stats = call(url, "GET", "/v1/stats", headers=auth)
    assert stats["errors"] == len(bad) and stats["samples"] == 8 + 3 + 1 + 1  # + the deploy's own first prediction
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


def test_a_server_whose_supervisor_was_killed_stays_visible_and_stoppable(env):
    """Signal 9 to the supervisor leaves its server serving: status says so, stop ends it, the port is free again."""
    db, db_path, _ = env
    vid = make_variant(db, db_path)
    row = service.deploy(db, db_path, vid, "local", {"port": 0})
    supervisor, server = row["meta"]["pid"], row["meta"]["server_pid"]
    os.kill(supervisor, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while supervisor in _members(supervisor) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert call(row["url"], "GET", "/health")[0] == 200
    checked = service.status(db, row["id"])
    assert checked["status"] == "running" and checked["meta"]["supervised"] is False
    assert "supervisor" in checked["meta"]["reason"]
    stopped = service.stop(db, row["id"])
    assert stopped["status"] == "stopped" and not _alive(supervisor)
    assert server not in _members(supervisor)
    with pytest.raises(OSError):
        call(row["url"], "GET", "/health")
    again = service.deploy(db, db_path, vid, "local", {"port": row["meta"]["port"]})  # the port is free
    assert again["status"] == "running" and again["meta"].get("supervised") is not False


def test_old_rows_cannot_stop_or_roll_back_the_serving_release(env):
    """#1 (superseded) names the same port as #2: stopping or rolling back #1 would hit #2."""
    db, db_path, _ = env
    first = service.deploy(db, db_path, make_variant(db, db_path, name="fp32", seed=0), "local", {"port": 0})
    second = service.deploy(db, db_path, make_variant(db, db_path, name="int8", seed=1), "local",
                            {"port": first["meta"]["port"]})
    for action in (service.stop, service.rollback):
        with pytest.raises(DeployError, match=rf"not the release serving local: #{second['id']} v2 is"):
            action(db, first["id"])
    assert store_deployments.get(db, second["id"])["status"] == "running"
    assert call(second["url"], "GET", "/health")[0] == 200


def test_a_deploy_failing_after_the_old_server_stepped_aside_restarts_it_and_records_where(env):
    """Same port: the old release stops first; when the new one fails to start, the old one is
    started again and its row follows it (new pid), so status and stop still reach it."""
    db, db_path, _ = env
    v1 = make_variant(db, db_path, name="fp32", seed=0)
    v2 = make_variant(db, db_path, name="int8", seed=1)
    first = service.deploy(db, db_path, v1, "local", {"port": 0})

    class NewOneWontStart(LocalDeployer):
        def _start(self, bundle_dir, *args):
            if Path(bundle_dir).resolve() != Path(first["meta"]["bundle"]).resolve():
                raise DeployError("the local server exited with code 1: boom")
            return super()._start(bundle_dir, *args)

    with pytest.raises(DeployError, match="boom.*previous release was restarted.*v1 keeps serving"):
        service.deploy(db, db_path, v2, "local", {"port": first["meta"]["port"]}, deployer=NewOneWontStart())
    kept = store_deployments.get(db, first["id"])
    assert kept["status"] == "running" and kept["meta"]["pid"] != first["meta"]["pid"] and _alive(kept["meta"]["pid"])
    assert call(kept["url"], "GET", "/v1/model")[1]["variant"] == "fp32"
    assert service.status(db, first["id"])["status"] == "running"
    assert service.stop(db, first["id"])["status"] == "stopped" and not _alive(kept["meta"]["pid"])


def test_process_identity_comes_from_psutil_with_a_fallback_where_the_table_is_denied(tmp_path, monkeypatch):
    """A process in its own group is ours only if its command line is a server.py of that bundle;
    where the process table cannot be listed (as Android may deny), the group's existence decides."""
    import psutil

    from deployers import local

    script = tmp_path / "server.py"
    script.write_text("import time\ntime.sleep(120)\n")
    other = tmp_path / "other.py"
    other.write_text("import time\ntime.sleep(120)\n")
    server = subprocess.Popen([sys.executable, str(script), str(tmp_path / "bundle")], start_new_session=True)
    stranger = subprocess.Popen([sys.executable, str(other)], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not _members(server.pid) and time.monotonic() < deadline:
            time.sleep(0.02)   # until its exec shows the script in its command line
        assert _members(server.pid, str(tmp_path / "bundle")) == [server.pid]
        assert _members(server.pid, str(tmp_path / "elsewhere")) == []
        assert _members(stranger.pid) == []
        assert server.pid in local._groups_running(str(tmp_path / "bundle"))

        def denied():
            raise PermissionError(13, "Permission denied", "/proc")

        monkeypatch.setattr(psutil, "pids", denied)
        assert _members(server.pid) == [server.pid] and _members(stranger.pid) == [stranger.pid]
        assert local._groups_running(str(tmp_path / "bundle")) == set()
        stranger.kill()
        stranger.wait(timeout=10)
        assert _members(stranger.pid) == []
    finally:
        for proc in (server, stranger):
            proc.kill()
            proc.wait(timeout=10)
