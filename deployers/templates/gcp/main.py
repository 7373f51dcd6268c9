"""pocketops bundle as a Cloud Run function (2nd gen, functions-framework): the local server's routes.

``GET /health``, ``GET /v1/model``, ``POST /v1/predict`` (JSON ``{"inputs": [...]}``) and
``GET /v1/stats``, answered by the bundle's own predictor, which sits beside this file. With a
``POCKETOPS_API_KEY`` environment variable, ``/v1/*`` needs the ``X-API-Key`` header.

    functions-framework --target=handle --source=main.py --port=8080
"""
from __future__ import annotations

import hmac
import json
import os
import sys
import time
from pathlib import Path

import functions_framework

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # functions-framework loads this file by path, not as a package

from predictor import InputError, Predictor  # noqa: E402  (the bundle's predictor, copied beside us)

MAX_BODY_BYTES = int(os.environ.get("POCKETOPS_MAX_BODY", str(1 << 20)))
STARTED = time.time()
# Loaded once per instance, at import: a broken bundle fails the deploy instead of the first request.
PREDICTOR = Predictor(HERE, threads=int(os.environ.get("POCKETOPS_THREADS", "1")))


def _json(payload: dict, status: int = 200):
    return json.dumps(payload), status, {"Content-Type": "application/json", "Cache-Control": "no-store"}


def _error(status: int, message: str):
    PREDICTOR.record_error()
    return _json({"error": message, "status": status}, status)


def _authorized(request) -> bool:
    key = os.environ.get("POCKETOPS_API_KEY")
    if not key:
        return True
    given = request.headers.get("X-API-Key", "")
    return hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8"))


@functions_framework.http
def handle(request):
    """Route one request the way the bundle's server.py does."""
    path = request.path.rstrip("/") or "/"
    if request.method == "GET" and path in ("/", "/health"):
        return _json({"status": "ok", "version": PREDICTOR.info.get("version"),
                      "uptime_s": round(time.time() - STARTED, 1)})
    if path.startswith("/v1/") and not _authorized(request):
        return _error(401, "missing or wrong X-API-Key header")
    if request.method == "GET" and path == "/v1/model":
        return _json(PREDICTOR.model_info())
    if request.method == "GET" and path == "/v1/stats":
        return _json(PREDICTOR.stats())
    routes = {"/": "GET", "/health": "GET", "/v1/model": "GET", "/v1/stats": "GET", "/v1/predict": "POST"}
    if path in routes and request.method != routes[path]:
        body, status, headers = _error(405, f"{request.method} {path} is not allowed; use {routes[path]}")
        return body, status, {**headers, "Allow": routes[path]}
    if path != "/v1/predict":
        return _error(404, f"no route {request.method} {path}; try /health, /v1/model, /v1/stats, POST /v1/predict")
    size = request.content_length
    if size is not None and size > MAX_BODY_BYTES:
        return _error(413, f"body of {size} bytes is over the limit of {MAX_BODY_BYTES} bytes; send fewer samples")
    raw = request.get_data(cache=False)
    if len(raw) > MAX_BODY_BYTES:  # chunked bodies carry no Content-Length
        return _error(413, f"body is over the limit of {MAX_BODY_BYTES} bytes; send fewer samples")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # also an integer of > 4300 digits, and deep nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        return _error(400, f"body is not valid JSON ({reason}); send {{\"inputs\": [...]}}")
    if not isinstance(body, dict) or "inputs" not in body:
        return _error(400, "body must be a JSON object with an 'inputs' field: {\"inputs\": [...]}")
    try:
        return _json(PREDICTOR.predict(body["inputs"]))
    except InputError as exc:
        return _json({"error": str(exc), "status": 422}, 422)
