"""The served API as one WSGI application: the bundle's ``server.py`` runs it (on the phone and in a
Docker Space) and the Cloud Run function's ``main.py`` mounts it, so routes, status codes and error
bodies are written once. Stdlib only, plus the bundle's predictor (numpy + onnxruntime).

    app = make_app("path/to/bundle", api_key=os.environ.get("POCKETOPS_API_KEY"))
    # any WSGI server: app(environ, start_response)

Routes (``protected``: needs the ``X-API-Key`` header when a key is set)::

    GET  /health, /     open       {"status": "ok", "version", "uptime_s"}
    GET  /v1/model      protected  what the bundle serves (labels, input spec, variant)
    GET  /v1/stats      protected  rolling statistics; "http" too where the server counts answers
    POST /v1/predict    protected  {"inputs": [...]} -> labels, probabilities, top, latency_ms
    GET  /v1/monitor    protected  ?since=SEQ&limit=N: per-request drift signals, events, quarantined inputs

Every request is answered in this order, the same on every server:

1. The path is ``PATH_INFO`` (percent-escapes decoded, as WSGI defines it); leading slashes fold
   into one (``//health`` is ``/health``, as the stdlib server does), a trailing slash does not
   fold: ``/health/`` and ``/v1/model/`` are unknown paths (one spelling per route).
2. Unknown path: 404 for GET and POST; any other method 405 with ``Allow: GET, POST`` (no route
   takes it anywhere).
3. A protected route without the right key: 401, whatever the method (a client without the key
   learns nothing about the route beyond its existence).
4. A method the route does not take: 405 with ``Allow`` naming the methods it does. HEAD is not
   served (405, empty body), nor OPTIONS.
5. The route's handler. ``POST /v1/predict`` refuses a ``Transfer-Encoding`` body or a missing
   ``Content-Length`` with 411, a malformed or conflicting length with 400, a body over
   ``max_body`` with 413 (before reading it), a body shorter than announced with 400, one that
   does not arrive in time with 408 (the server raises :class:`ApiError` from ``wsgi.input``),
   a body that is not JSON or has no ``inputs`` with 400, inputs the model cannot take with 422.
   An unexpected failure in a handler is a 500 with one line (and one line on stderr).

Every answer is JSON (``Content-Type: application/json``, ``Cache-Control: no-store``); every
error is ``{"error": message, "status": code}`` and counts as an error in ``/v1/stats``.

Extending: ``app.add_route(method, path, handler, protected=True)`` adds a route (the handler
takes a :class:`Request` and returns a JSON-able dict, or raises :class:`ApiError`); functions in
``app.after_predict`` are called as ``hook(request, inputs, result)`` after every successful
prediction (a failing hook is logged, never fails the request).
"""
from __future__ import annotations

import hmac
import json
import os
import sys
import time
from http import HTTPStatus
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import parse_qs


def _predictor():
    """The predictor module, imported on first use: importing this module stays stdlib-only and cheap."""
    try:  # inside the pocketops package
        from . import predictor
    except ImportError:  # inside a bundle: predictor.py sits beside this file (its directory is on sys.path)
        import predictor  # type: ignore[no-redef]
    return predictor


MAX_BODY_BYTES = 1 << 20
KEY_HEADER = "X-API-Key"
API_METHODS = ("GET", "POST")
# A server that checks body framing itself (the bundle's server.py) puts (status, message) here
# when the Content-Length headers are unusable; the app answers it only where a route reads a body.
BODY_ERROR = "pocketops.body_error"


class ApiError(Exception):
    """An answer other than 200: raised by handlers (and by a server's ``wsgi.input``: 408 for a slow body)."""

    def __init__(self, status: int, message: str, *, allow: str | None = None, counted: bool = True):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.allow = allow
        self.counted = counted  # False where the predictor already counted the error (422)


class Request:
    """What a handler sees of one request: method, path, query, headers and the WSGI environ."""

    __slots__ = ("environ", "method", "path")

    def __init__(self, environ: dict, method: str, path: str):
        self.environ = environ
        self.method = method
        self.path = path

    def header(self, name: str, default: str = "") -> str:
        """A request header's value (WSGI's ``HTTP_*`` keys)."""
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        return self.environ.get(key, default)

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, the last value of each."""
        return {k: v[-1] for k, v in parse_qs(self.environ.get("QUERY_STRING", "")).items()}


Handler = Callable[[Request], dict]


class Route:
    """One path: its handlers by method, and whether it needs the key."""

    __slots__ = ("path", "handlers", "protected")

    def __init__(self, path: str, protected: bool):
        self.path = path
        self.handlers: dict[str, Handler] = {}
        self.protected = protected

    @property
    def allow(self) -> str:
        """The methods it takes, as an ``Allow`` header says them."""
        return ", ".join(self.handlers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Api:
    """The WSGI application around one predictor (thread-safe: the predictor locks its own counters)."""

    def __init__(self, predictor, *, api_key: str | None = None, max_body: int = MAX_BODY_BYTES,
                 server_stats: Callable[[], dict] | None = None):
        self.predictor = predictor
        self._input_error = _predictor().InputError
        self.api_key = api_key or None
        self.max_body = int(max_body)
        self.server_stats = server_stats  # the server's own counts, served as "http" in /v1/stats
        self.started = time.time()
        self.routes: dict[str, Route] = {}
        self._hint: str | None = None
        self.after_predict: list[Callable[[Request, object, dict], None]] = []
        self.add_route("GET", "/health", self.health, protected=False)
        self.add_route("GET", "/", self.health, protected=False)  # an alias, left out of the 404 hint
        self.add_route("GET", "/v1/model", self.model)
        self.add_route("GET", "/v1/stats", self.stats)
        self.add_route("POST", "/v1/predict", self.predict)
        self.add_route("GET", "/v1/monitor", self.monitor)

    # -- the route table -----------------------------------------------------------------
    def add_route(self, method: str, path: str, handler: Handler, *, protected: bool = True) -> None:
        """Serve ``method path`` with ``handler(request) -> dict``; ``protected``: only with the key."""
        if not path.startswith("/") or (path != "/" and path.endswith("/")):
            raise ValueError(f"route path must start with '/' and not end with one: {path!r}")
        route = self.routes.setdefault(path, Route(path, protected))
        if route.protected != protected:
            raise ValueError(f"{path}: every method of a route is protected or none is")
        route.handlers[method.upper()] = handler
        self._hint = None  # rebuilt on the next 404

    def _route_hint(self) -> str:
        if self._hint is None:
            self._hint = ", ".join(f"{m} {r.path}" for r in self.routes.values() if r.path != "/" for m in r.handlers)
        return self._hint

    # -- WSGI ----------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        status, headers, body = self.respond(environ)
        start_response(f"{status} {_phrase(status)}", headers)
        return [body]

    def respond(self, environ: dict) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) for one request, in the order the module docstring gives."""
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO") or "/"
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        request = Request(environ, method, path)
        try:
            route = self.routes.get(path)
            if route is None:
                if method in API_METHODS:
                    raise ApiError(404, f"no route {method} {path[:200]}; try {self._route_hint()}")
                raise ApiError(405, f"{method[:20]} is not a method of this API; use {' or '.join(API_METHODS)} "
                                    f"({self._route_hint()})", allow=", ".join(API_METHODS))
            if route.protected and not self._authorized(environ):
                raise ApiError(401, f"missing or wrong {KEY_HEADER} header")
            handler = route.handlers.get(method)
            if handler is None:
                raise ApiError(405, f"{method[:20]} {path} is not allowed; use {route.allow} ({self._route_hint()})",
                               allow=route.allow)
            return self._json(200, handler(request), method)
        except ApiError as exc:
            return self._error(exc, method)
        except Exception as exc:  # noqa: BLE001 - the last line of defence of a public server
            print(f"pocketops serve: {method[:20]} {path[:200]!r} failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
            return self._error(ApiError(500, f"internal error ({type(exc).__name__}); the server keeps serving"), method)

    def error_response(self, status: int, message: str, method: str = "GET") -> tuple[int, list[tuple[str, str]], bytes]:
        """An error answer in the API's shape, counted: for a server's own refusals (bad request line, 408)."""
        return self._error(ApiError(status, message), method)

    def _error(self, exc: ApiError, method: str):
        if exc.counted:
            self.predictor.record_error()
        status, headers, body = self._json(exc.status, {"error": exc.message, "status": exc.status}, method)
        if exc.allow:
            headers.append(("Allow", exc.allow))
        return status, headers, body

    @staticmethod
    def _json(status: int, payload: dict, method: str):
        body = b"" if method == "HEAD" else json.dumps(payload).encode("utf-8")
        return status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                         ("Cache-Control", "no-store")], body

    def _authorized(self, environ: dict) -> bool:
        if not self.api_key:
            return True
        # WSGI gives header values as latin-1 text: back to the bytes the client sent.
        given = environ.get("HTTP_X_API_KEY", "").encode("latin-1", "replace")
        return hmac.compare_digest(given, self.api_key.encode("utf-8"))

    # -- request bodies ------------------------------------------------------------------
    def read_body(self, request: Request) -> bytes:
        """The request body, bounded by ``max_body``; ApiError 411/400/413/408 when it cannot be had."""
        environ = request.environ
        if environ.get("HTTP_TRANSFER_ENCODING"):
            raise ApiError(411, "chunked bodies are not supported; send a Content-Length header")
        if BODY_ERROR in environ:
            raise ApiError(*environ[BODY_ERROR])
        length = environ.get("CONTENT_LENGTH", "").strip()
        if not length:
            raise ApiError(411, "send a Content-Length header with the JSON body")
        # Digits only: int() would also take "-1" (read to EOF), "+5", "1_000" and surrounding spaces.
        if not (length.isascii() and length.isdigit()) or len(length) > 18:
            raise ApiError(400, f"Content-Length must be a number of bytes, found {length[:40]!r}")
        size = int(length)
        if size > self.max_body:
            raise ApiError(413, f"body of {size} bytes is over the limit of {self.max_body} bytes; send fewer samples")
        stream, chunks, got = environ["wsgi.input"], [], 0
        while got < size:
            chunk = stream.read(size - got)
            if not chunk:
                raise ApiError(400, f"body ended after {got} of the {size} bytes Content-Length announced")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def read_json(self, request: Request):
        """The request body parsed as JSON; ApiError 400 when it is not."""
        raw = self.read_body(request)
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            # ValueError: bad UTF-8, bad JSON, an integer of more than 4300 digits; RecursionError: deep nesting.
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            raise ApiError(400, f"body is not valid JSON ({reason}); send {{\"inputs\": [...]}}") from None

    # -- the routes ----------------------------------------------------------------------
    def health(self, request: Request) -> dict:
        """Liveness and the version served (no key needed)."""
        return {"status": "ok", "version": self.predictor.info.get("version"),
                "uptime_s": round(time.time() - self.started, 1)}

    def model(self, request: Request) -> dict:
        """What the bundle serves."""
        return self.predictor.model_info()

    def stats(self, request: Request) -> dict:
        """The predictor's rolling statistics, plus the server's answer counts where it keeps them."""
        data = self.predictor.stats()
        if self.server_stats is not None:
            data["http"] = self.server_stats()
        return data

    def monitor(self, request: Request) -> dict:
        """Drift monitoring since ``since`` (see monitor.py); 400 naming a bad ``since`` or ``limit``."""
        monitor = getattr(self.predictor, "monitor", None)
        if monitor is None:
            raise ApiError(404, "this server runs without drift monitoring")
        module = _predictor()._monitor
        try:
            since, limit = module.parse_query(request.environ.get("QUERY_STRING", ""))
        except module.QueryError as exc:
            raise ApiError(400, str(exc)) from None
        return monitor.snapshot(since, limit)

    def predict(self, request: Request) -> dict:
        """Predictions for ``{"inputs": [...]}``; the ``after_predict`` hooks see each one."""
        body = self.read_json(request)
        if not isinstance(body, dict) or "inputs" not in body:
            raise ApiError(400, "body must be a JSON object with an 'inputs' field: {\"inputs\": [...]}")
        try:
            result = self.predictor.predict(body["inputs"])
        except self._input_error as exc:
            raise ApiError(422, str(exc), counted=False) from None
        for hook in self.after_predict:
            try:
                hook(request, body["inputs"], result)
            except Exception as exc:  # noqa: BLE001 - monitoring must not fail a prediction already made
                print(f"pocketops serve: after_predict hook {getattr(hook, '__name__', hook)!r} failed: "
                      f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return result


def make_app(bundle_dir: str | os.PathLike, *, threads: int = 1, api_key: str | None = None,
             max_body: int = MAX_BODY_BYTES) -> Api:
    """Load the bundle's predictor and return the API around it."""
    return Api(_predictor().Predictor(Path(bundle_dir), threads=threads), api_key=api_key, max_body=max_body)
