"""The served API's WSGI application in process: its extension points (extra routes, after-predict hooks)."""
from __future__ import annotations

import io
import json
from wsgiref.util import setup_testing_defaults

import pytest

from deployers.runtime.api import Api, ApiError, make_app
from tests.standins.bundles import make_bundle

KEY = "app-key-3"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return make_app(make_bundle(tmp_path_factory.mktemp("api-app") / "bundle", seed=1).path, api_key=KEY)


def wsgi(app: Api, method: str, path: str, *, body: bytes = b"", query: str = "", key: str | None = KEY):
    """(status, headers, JSON body) of one call of the WSGI application."""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    if key is not None:
        environ["HTTP_X_API_KEY"] = key
    setup_testing_defaults(environ)
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    out = b"".join(app(environ, start_response))
    assert int(seen["headers"]["Content-Length"]) == len(out)
    return seen["status"], seen["headers"], json.loads(out) if out else None


def test_an_added_route_gets_the_same_rules_as_the_built_in_ones(app):
    def monitor(request):
        if not request.query.get("since", "0").isdigit():
            raise ApiError(400, "since must be a sequence number")
        return {"since": int(request.query.get("since", "0")), "events": []}

    app.add_route("GET", "/v1/monitor", monitor)
    assert wsgi(app, "GET", "/v1/monitor", query="since=7")[2] == {"since": 7, "events": []}
    assert wsgi(app, "GET", "/v1/monitor", key=None)[0] == 401
    status, headers, body = wsgi(app, "POST", "/v1/monitor", body=b"{}")
    assert (status, headers["Allow"]) == (405, "GET")
    assert wsgi(app, "GET", "/v1/monitor/")[0] == 404
    status, _, body = wsgi(app, "GET", "/v1/monitor", query="since=x")
    assert (status, body) == (400, {"error": "since must be a sequence number", "status": 400})
    assert "GET /v1/monitor" in wsgi(app, "GET", "/nope")[2]["error"]  # the 404 hint names it
    with pytest.raises(ValueError, match="not end with one"):
        app.add_route("GET", "/v1/monitor/", monitor)


def test_after_predict_hooks_see_each_prediction_and_cannot_fail_it(app, capsys):
    seen = []
    app.after_predict.append(lambda request, inputs, result: seen.append((request.path, inputs, result["labels"])))

    def broken(request, inputs, result):
        raise RuntimeError("monitor down")

    app.after_predict.append(broken)
    try:
        status, _, body = wsgi(app, "POST", "/v1/predict", body=b'{"inputs": [[1, 2, 3, 4]]}')
        assert status == 200 and seen == [("/v1/predict", [[1, 2, 3, 4]], body["labels"])]
        assert "after_predict hook 'broken' failed: RuntimeError: monitor down" in capsys.readouterr().err
        assert wsgi(app, "POST", "/v1/predict", body=b'{"inputs": [[1, 2, 3]]}')[0] == 422
        assert len(seen) == 1  # a refused prediction reaches no hook
    finally:
        app.after_predict.clear()


def test_a_failing_handler_is_a_one_line_500_and_counted(app, capsys):
    def boom(request):
        raise KeyError("x")

    app.add_route("GET", "/v1/boom", boom)
    errors = app.predictor.stats()["errors"]
    status, _, body = wsgi(app, "GET", "/v1/boom")
    assert (status, body["status"]) == (500, 500) and "internal error (KeyError)" in body["error"]
    assert app.predictor.stats()["errors"] == errors + 1
    assert "GET '/v1/boom' failed: KeyError" in capsys.readouterr().err
