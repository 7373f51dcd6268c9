"""The bundle's HTTP server (stdlib only + the predictor): the same file serves on the phone and in a Docker Space.

    python server.py --bundle . --host 127.0.0.1 --port 8765

Routes: ``GET /health``, ``GET /v1/model``, ``POST /v1/predict`` (JSON ``{"inputs": [...]}``),
``GET /v1/stats``. Binding to anything but loopback requires an API key, read from the
``POCKETOPS_API_KEY`` environment variable (never from the command line, which other users of
the machine can read) and checked against the ``X-API-Key`` header on ``/v1/*``;
``--public-without-key`` opts out explicitly (e.g. a public demo Space). Every bad request
gets a 4xx JSON ``{"error": message}`` and the server keeps serving.

``--supervise`` runs the server as a child process and restarts it when it dies (crash,
out-of-memory kill), with backoff; SIGTERM to the supervisor stops both.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

CONFIG_ERROR = 2   # exit code for problems a restart will not fix (no key, port taken)


def supervise(argv: list[str], *, max_restarts: int = 5, window_s: float = 60.0) -> int:
    """Run this server as a child, restarting it when it dies unexpectedly (bounded, with backoff)."""
    child: list[subprocess.Popen] = []
    stopping = []

    def stop(*_):
        stopping.append(True)
        if child and child[0].poll() is None:
            child[0].terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts: list[float] = []
    while True:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv])
        child[:] = [proc]
        code = proc.wait()
        if stopping or code in (0, CONFIG_ERROR):  # asked to stop, or a configuration error a restart will not fix
            return code
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < window_s] + [now]
        if len(restarts) > max_restarts:
            print(f"pocketops serve: server died {len(restarts)} times within {window_s:.0f} s; giving up", file=sys.stderr)
            return code or 1
        print(f"pocketops serve: server exited with {code}; restarting", file=sys.stderr, flush=True)
        time.sleep(min(0.2 * 2 ** len(restarts), 5.0))



if __name__ == "__main__" and "--supervise" in sys.argv[1:]:
    # The supervisor only restarts the server: it stays light (no http.server, numpy or
    # onnxruntime), which keeps the cold start of a deploy close to the server's own.
    sys.exit(supervise([a for a in sys.argv[1:] if a != "--supervise"]))

import argparse  # noqa: E402  (after the supervisor's fast path on purpose)
import hmac  # noqa: E402
import ipaddress  # noqa: E402
import json  # noqa: E402
from http import HTTPStatus  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402


def _predictor_module():
    """The predictor, imported only by the serving process (the supervisor stays light: no numpy/onnxruntime)."""
    try:  # inside the pocketops package
        from . import predictor
    except ImportError:  # inside a bundle: predictor.py sits beside this file
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import predictor  # type: ignore[no-redef]
    return predictor

MAX_BODY_BYTES = 1 << 20
DRAIN_FACTOR = 8
KEY_ENV = "POCKETOPS_API_KEY"


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Handler(BaseHTTPRequestHandler):
    server_version = "pocketops-serve/1"
    protocol_version = "HTTP/1.1"

    # -- plumbing ------------------------------------------------------------------------
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            sys.stderr.write("%s %s\n" % (self.address_string(), format % args))

    def _send(self, status: int, payload: dict, *, close: bool = False) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, *, close: bool = False) -> None:
        self.server.predictor.record_error()
        self._send(status, {"error": message, "status": status}, close=close)

    def _authorized(self) -> bool:
        key = self.server.api_key
        if not key:
            return True
        given = self.headers.get("X-API-Key", "")
        if hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8")):
            return True
        self._error(HTTPStatus.UNAUTHORIZED, "missing or wrong X-API-Key header", close=True)
        return False

    # -- routes --------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/"):
            self._send(200, {"status": "ok", "version": self.server.predictor.info.get("version"),
                             "uptime_s": round(time.time() - self.server.started, 1)})
        elif path == "/v1/model":
            if self._authorized():
                self._send(200, self.server.predictor.model_info())
        elif path == "/v1/stats":
            if self._authorized():
                self._send(200, self.server.predictor.stats())
        elif path == "/v1/predict":
            self._not_allowed(path)
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no route GET {path}; try /health, /v1/model, /v1/stats, POST /v1/predict")

    def _not_allowed(self, path: str) -> None:
        allow = "POST" if path == "/v1/predict" else "GET"
        self.server.predictor.record_error()
        body = json.dumps({"error": f"{self.command} {path} is not allowed; use {allow} "
                                    "(GET /health, /v1/model, /v1/stats; POST /v1/predict)", "status": 405}).encode()
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", allow)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        self.send_header("Connection", "close")  # any body the client sent is left unread
        self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _other_method(self) -> None:
        self._not_allowed(self.path.split("?", 1)[0])

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other_method  # noqa: N815 - stdlib names

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path != "/v1/predict":
            self._error(HTTPStatus.NOT_FOUND, f"no route POST {path}; predictions go to POST /v1/predict", close=True)
            return
        if not self._authorized():
            return
        length = self.headers.get("Content-Length")
        if length is None:
            self._error(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length header with the JSON body", close=True)
            return
        try:
            size = int(length)
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, f"Content-Length must be a number, found {length!r}", close=True)
            return
        if size > self.server.max_body:
            # Discard (never buffer) a moderately oversized body so the client can read our answer;
            # past DRAIN_FACTOR x the limit just answer and hang up.
            if size <= self.server.max_body * DRAIN_FACTOR:
                left = size
                while left > 0:
                    chunk = self.rfile.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    left -= len(chunk)
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"body of {size} bytes is over the limit of {self.server.max_body} bytes; send fewer samples",
                        close=True)
            return
        raw = self.rfile.read(size)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"body is not valid JSON ({exc}); send {{\"inputs\": [...]}}")
            return
        if not isinstance(body, dict) or "inputs" not in body:
            self._error(HTTPStatus.BAD_REQUEST, "body must be a JSON object with an 'inputs' field: {\"inputs\": [...]}")
            return
        try:
            result = self.server.predictor.predict(body["inputs"])
        except self.server.input_error as exc:
            self._send(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": str(exc), "status": 422})
            return
        self._send(200, result)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, predictor, *, api_key: str | None, max_body: int, verbose: bool = False):
        super().__init__(address, Handler)
        self.predictor = predictor
        self.input_error = _predictor_module().InputError
        self.api_key = api_key
        self.max_body = max_body
        self.verbose = verbose
        self.started = time.time()


def serve(bundle: str | os.PathLike, host: str = "127.0.0.1", port: int = 8765, *, api_key: str | None = None,
          threads: int = 1, max_body: int = MAX_BODY_BYTES, public_without_key: bool = False,
          ready_file: str | None = None, verbose: bool = False) -> None:
    """Load the bundle and serve until SIGTERM/SIGINT."""
    if not is_loopback(host) and not api_key and not public_without_key:
        print(f"pocketops serve: binding to {host} (not loopback) needs an API key: "
              f"set {KEY_ENV} (pocketops deploy --api-key) or pass --public-without-key", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR)
    started = time.perf_counter()
    predictor = _predictor_module().Predictor(bundle, threads=threads)
    try:
        httpd = Server((host, port), predictor, api_key=api_key, max_body=max_body, verbose=verbose)
    except OSError as exc:
        print(f"pocketops serve: cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR) from None

    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    ready = {"pid": os.getpid(), "host": host, "port": httpd.server_address[1],
             "version": predictor.info.get("version"), "load_ms": round((time.perf_counter() - started) * 1000, 2)}
    if ready_file:
        tmp = f"{ready_file}.tmp"
        Path(tmp).write_text(json.dumps(ready))
        os.replace(tmp, ready_file)
    print(json.dumps({"event": "ready", **ready}), flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="server.py", description="Serve a pocketops bundle over HTTP.")
    parser.add_argument("--bundle", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8765")))
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--max-body", type=int, default=MAX_BODY_BYTES, help="largest request body in bytes")
    parser.add_argument("--ready-file", default=None, help="write pid/port as JSON here once serving")
    parser.add_argument("--public-without-key", action="store_true", help="allow a non-loopback host without an API key")
    parser.add_argument("--supervise", action="store_true", help="restart the server if it dies")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.supervise:
        return supervise([a for a in argv if a != "--supervise"])
    serve(args.bundle, args.host, args.port, api_key=os.environ.get(KEY_ENV) or None, threads=args.threads,
          max_body=args.max_body, public_without_key=args.public_without_key, ready_file=args.ready_file,
          verbose=args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
