"""pocketops bundle as a Cloud Run function (2nd gen, functions-framework): the bundle's own API.

The function mounts the WSGI application of the bundle's ``api.py`` (beside this file), the one
the local server and the Docker Space run: ``GET /health``, ``GET /v1/model``, ``GET /v1/stats``,
``POST /v1/predict`` answer with the same status codes and error bodies everywhere (the order of
checks is documented in ``api.py``). With a ``POCKETOPS_API_KEY`` environment variable,
``/v1/*`` needs the ``X-API-Key`` header.

    functions-framework --target=handle --source=main.py --port=8080
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import functions_framework
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wrappers import Response

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # functions-framework loads this file by path, not as a package

from api import make_app  # noqa: E402  (the bundle's API and predictor, copied beside us)

# Loaded once per instance, at import: a broken bundle fails the deploy instead of the first request.
APP = make_app(HERE, threads=int(os.environ.get("POCKETOPS_THREADS", "1")),
               api_key=os.environ.get("POCKETOPS_API_KEY") or None,
               max_body=int(os.environ.get("POCKETOPS_MAX_BODY", str(1 << 20))))


class _Body:
    """The request body as ``wsgi.input``: Flask's own stream (it reads what the app left, after it),
    with a client that went away mid-body read as the end of the body (a 400), not a crash."""

    def __init__(self, stream):
        self.stream = stream

    def read(self, size: int = -1) -> bytes:
        try:
            return self.stream.read(size)
        except ClientDisconnected:
            return b""


@functions_framework.http
def handle(request):
    """Answer one request with the bundle's WSGI application."""
    return Response.from_app(APP, {**request.environ, "wsgi.input": _Body(request.stream)})
