"""The Cloud Run function's source, extracted from the deploy zip, runs under functions-framework and answers."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from deployers.gcp import build_source_zip, safe_extract
from tests._serve_helpers import running_function
from tests.standins.bundles import LABELS, make_bundle, reference_predict

API_KEY = "test-key-7"


def _request(url: str, *, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _announce_only(url: str, length: int, headers: dict) -> int:
    """POST announcing ``length`` bytes and sending none: the API answers 413 from the header alone.

    (Sending the 2 MB too races the server, which answers and closes before reading them: the
    client's write then fails with a broken pipe on a busy machine.)"""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("POST", parts.path)
        for name, value in {**headers, "Content-Type": "application/json", "Content-Length": str(length)}.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def function(tmp_path_factory):
    """functions-framework serving the extracted source zip on loopback, with an API key set."""
    tmp = tmp_path_factory.mktemp("gcf")
    bundle = make_bundle(tmp / "bundle", seed=3)
    source = tmp / "source"
    safe_extract(build_source_zip(bundle), source)
    env = {"POCKETOPS_API_KEY": API_KEY, "POCKETOPS_HOME": str(tmp / "home")}
    try:
        with running_function(source, env=env) as (_, port):
            yield f"http://127.0.0.1:{port}", bundle
    except RuntimeError as exc:  # it did not start: the reason, not a traceback of the helper
        pytest.fail(str(exc))


def test_function_predicts_like_onnxruntime_in_process(function):
    url, bundle = function
    x = np.random.default_rng(11).normal(size=(5, 4))
    status, answer = _request(url + "/v1/predict", data=json.dumps({"inputs": x.tolist()}).encode(),
                              headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    assert status == 200
    expected = reference_predict(bundle, x)
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-5)
    assert answer["labels"] == [LABELS[i] for i in expected.argmax(axis=1)]


def test_function_serves_model_and_stats_routes(function):
    url, bundle = function
    status, health = _request(url + "/health")
    assert status == 200 and health["version"] == bundle.version
    status, model = _request(url + "/v1/model", headers={"X-API-Key": API_KEY})
    assert status == 200 and model["labels"] == LABELS and model["input"]["shape"] == [4]
    status, stats = _request(url + "/v1/stats", headers={"X-API-Key": API_KEY})
    assert status == 200 and {"requests", "errors", "latency_ms", "confidence_histogram", "distance"} <= set(stats)


def test_function_refuses_bad_requests_and_keeps_serving(function):
    url, _ = function
    key = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    assert _request(url + "/v1/predict", data=b"{not json", headers=key)[0] == 400
    status, answer = _request(url + "/v1/predict", data=json.dumps({"inputs": [[1, 2, 3]]}).encode(), headers=key)
    assert status == 422 and "wrong input shape" in answer["error"]
    assert _request(url + "/v1/predict", data=b'{"inputs": []}', headers={"X-API-Key": "wrong"})[0] == 401
    assert _announce_only(url + "/v1/predict", 2 << 20, key) == 413
    assert _request(url + "/v1/nothing", headers=key)[0] == 404
    status, answer = _request(url + "/v1/predict", headers=key)  # a GET: predictions are POSTed
    assert status == 405 and "use POST" in answer["error"]
    status, stats = _request(url + "/v1/stats", headers=key)
    assert status == 200 and stats["errors"] >= 4
    status, _ = _request(url + "/v1/predict", data=json.dumps({"inputs": [[0, 0, 0, 0]]}).encode(), headers=key)
    assert status == 200


def test_function_refuses_deep_nesting_and_huge_numbers_with_4xx(function):
    """These reached Flask as a 500 (RecursionError, a >4300-digit int) or onnxruntime (an int beyond float range)."""
    url, _ = function
    key = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    assert _request(url + "/v1/predict", data=b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", headers=key)[0] == 400
    assert _request(url + "/v1/predict", data=b'{"inputs": [[' + b"9" * 5000 + b", 1, 2, 3]]}", headers=key)[0] == 400
    status, answer = _request(url + "/v1/predict", data=b'{"inputs": [[' + b"9" * 400 + b", 1, 2, 3]]}", headers=key)
    assert status == 422 and "numbers" in answer["error"]
    assert _request(url + "/v1/predict", data=json.dumps({"inputs": [[0, 0, 0, 0]]}).encode(), headers=key)[0] == 200
