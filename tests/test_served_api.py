"""One request table against both ways a bundle is served: the bundle's ``server.py`` (phone, Docker
Space) and the Cloud Run function (its deploy zip under functions-framework). Both run the WSGI
application of ``deployers/runtime/api.py``, so every status, ``Allow`` header and error body must
be the same, byte for byte; the three answers that used to differ are rows of the table.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from deployers.gcp import build_source_zip, safe_extract
from tests._serve_helpers import call, http_request, raw_exchange, running_function, running_server
from tests.standins.bundles import LABELS, make_bundle, reference_predict

KEY = "table-key-5"
AUTH = {"X-API-Key": KEY}
MAX_BODY = 1 << 20  # both servers' default
X = np.random.default_rng(4).normal(size=(2, 4))
VALID = json.dumps({"inputs": X.tolist()}).encode()


def raw(text: str) -> bytes:
    """A request as sent, for what http_request would fix (no Content-Length, chunked)."""
    return text.replace("\n", "\r\n").encode("latin-1")


# (name, request: (method, path, headers, body) or raw bytes, status, Allow header, text the error holds)
TABLE = [
    ("health", ("GET", "/health", {}, b""), 200, None, None),
    ("root is health", ("GET", "/", {}, b""), 200, None, None),
    ("escaped path", ("GET", "/%68ealth", {}, b""), 200, None, None),
    ("leading slashes fold", ("GET", "//health", {}, b""), 200, None, None),
    # Divergence 2: the local server answered 404, the function 200.
    ("trailing slash", ("GET", "/health/", {}, b""), 404, None, "no route GET /health/"),
    ("trailing slash, protected", ("GET", "/v1/model/", AUTH, b""), 404, None, "no route"),
    ("model", ("GET", "/v1/model", AUTH, b""), 200, None, None),
    ("model without key", ("GET", "/v1/model", {}, b""), 401, None, "X-API-Key"),
    ("stats without key", ("GET", "/v1/stats", {"X-API-Key": "wrong"}, b""), 401, None, "X-API-Key"),
    # Divergence 1: the local server answered 404, the function 405.
    ("POST to a GET route", ("POST", "/v1/model", AUTH, b"{}"), 405, "GET", "use GET"),
    ("POST to a GET route without key", ("POST", "/v1/model", {}, b"{}"), 401, None, "X-API-Key"),
    # Divergence 3: the local server answered 405, the function 401.
    ("GET predict without key", ("GET", "/v1/predict", {}, b""), 401, None, "X-API-Key"),
    ("GET predict", ("GET", "/v1/predict", AUTH, b""), 405, "POST", "use POST"),
    ("PUT predict", ("PUT", "/v1/predict", AUTH, b"{}"), 405, "POST", "not allowed"),
    ("DELETE health", ("DELETE", "/health", {}, b""), 405, "GET", "use GET"),
    ("OPTIONS model", ("OPTIONS", "/v1/model", AUTH, b""), 405, "GET", "not allowed"),
    ("HEAD health", ("HEAD", "/health", {}, b""), 405, "GET", None),
    ("unknown GET", ("GET", "/nope", AUTH, b""), 404, None, "no route GET /nope"),
    ("unknown POST", ("POST", "/v1/nothing", AUTH, b"{}"), 404, None, "no route POST /v1/nothing"),
    ("unknown method, unknown path", ("PUT", "/nope", {}, b""), 405, "GET, POST", "not a method of this API"),
    ("predict", ("POST", "/v1/predict", AUTH, VALID), 200, None, None),
    ("predict with a query", ("POST", "/v1/predict?explain=0", AUTH, VALID), 200, None, None),
    ("predict, wrong key", ("POST", "/v1/predict", {"X-API-Key": "nope"}, VALID), 401, None, "X-API-Key"),
    ("not JSON", ("POST", "/v1/predict", AUTH, b"{not json"), 400, None, "not valid JSON"),
    ("no inputs", ("POST", "/v1/predict", AUTH, b'{"input": []}'), 400, None, "'inputs' field"),
    ("deep nesting", ("POST", "/v1/predict", AUTH, b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"), 400, None,
     "nested too deeply"),
    ("wrong shape", ("POST", "/v1/predict", AUTH, b'{"inputs": [[1, 2, 3]]}'), 422, None, "wrong input shape"),
    ("too big", ("POST", "/v1/predict", AUTH, b" " * (MAX_BODY + 1)), 413, None, "over the limit"),
    ("no Content-Length", raw(f"POST /v1/predict HTTP/1.1\nHost: 127.0.0.1\nX-API-Key: {KEY}\n\n"), 411, None,
     "Content-Length"),
    ("chunked", raw(f"POST /v1/predict HTTP/1.1\nHost: 127.0.0.1\nX-API-Key: {KEY}\nTransfer-Encoding: chunked\n\n"
                    "2\n{}\n0\n\n"), 411, None, "chunked"),
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The same bundle served both ways, with the same API key: {"local": port, "gcp": port}."""
    tmp = tmp_path_factory.mktemp("served-api")
    bundle = make_bundle(tmp / "bundle", seed=2)
    source = tmp / "source"
    safe_extract(build_source_zip(bundle), source)
    env = {"POCKETOPS_API_KEY": KEY, "POCKETOPS_HOME": str(tmp / "home")}
    with running_server(bundle.path, env=env) as local, running_function(source, env=env) as (_, gcp_port):
        yield {"local": local.port, "gcp": gcp_port}, bundle
        assert local.proc.poll() is None and "Traceback" not in local.log_text(), local.log_text()[-2000:]


def _ask(port: int, request):
    data = request if isinstance(request, bytes) else http_request(request[0], request[1], request[3], request[2])
    return raw_exchange(port, data)


def test_the_same_table_gets_the_same_answers_from_both(servers):
    ports, bundle = servers
    labels = [LABELS[i] for i in reference_predict(bundle, X).argmax(axis=1)]
    for name, request, status, allow, text in TABLE:
        answers = {where: _ask(port, request) for where, port in ports.items()}
        for where, answer in answers.items():
            what = (name, where, answer)
            assert answer.status == status, what
            assert answer.headers.get("content-type") == "application/json", what
            assert answer.headers.get("cache-control") == "no-store", what
            assert answer.headers.get("allow") == allow, what
            if not isinstance(request, bytes) and request[0] == "HEAD":
                assert answer.body == b"", what
                continue
            body = answer.json()
            if status >= 400:
                assert body["status"] == status and text in body["error"], what
            elif name.startswith("predict"):
                assert body["labels"] == labels, what
            elif "health" in name or name.startswith(("root", "escaped", "leading")):
                assert body["status"] == "ok" and body["version"] == bundle.version, what
            elif name == "model":
                assert body["labels"] == LABELS and body["version"] == bundle.version, what
        if status >= 400:  # error bodies, word for word
            assert answers["local"].body == answers["gcp"].body, name
        elif name.startswith("predict"):
            got = {where: {k: v for k, v in a.json().items() if k != "latency_ms"} for where, a in answers.items()}
            assert got["local"] == got["gcp"], name
    # Both counted the same: every refusal as an error, every prediction as a request.
    stats = {where: call(port, "GET", "/v1/stats", headers=AUTH).json() for where, port in ports.items()}
    errors = sum(1 for _, _, status, _, _ in TABLE if status >= 400)
    for where, s in stats.items():
        assert s["errors"] == errors, (where, s)
        assert s["requests"] == errors + 2 and s["samples"] == 2 * len(X), (where, s)
        assert s["predicted"] == stats["local"]["predicted"] and s["latency_ms"]["window"] == 2, (where, s)
    assert "http" in stats["local"]  # the local server's own counts (the function has Cloud Run's)
