"""The bundle's HTTP server (stdlib only + the API and predictor): the same file serves on the phone and in a Docker Space.

    python server.py --bundle . --host 127.0.0.1 --port 8765

It runs the WSGI application of ``api.py`` (routes ``GET /health``, ``GET /v1/model``,
``GET /v1/stats``, ``POST /v1/predict``; their order of checks and status codes are documented
there, and the Cloud Run function mounts the same application). Binding to anything but
loopback requires an API key, read from the ``POCKETOPS_API_KEY`` environment variable (never
from the command line, which other users of the machine can read) and checked against the
``X-API-Key`` header on ``/v1/*``; ``--public-without-key`` opts out explicitly (e.g. a public
demo Space). Every bad request gets a 4xx JSON ``{"error": message, "status": code}`` and the
server keeps serving. This file keeps what is transport: request lines, deadlines, which
``Content-Length`` counts, keep-alive, and unread bodies (drained, then the connection closes).

Bounded for a public demo: a listen backlog of 1024 (a burst queues, it is not reset), at most
64 connections handled at once (the others wait in the backlog, never a 503), a 15 s socket
timeout, 5 s keep-alive idle time, and 30 s for a whole request (else 408). See ``--help``.

``--supervise`` runs the server as a child process and restarts it when it dies (crash,
out-of-memory kill), with backoff; SIGTERM to the supervisor stops both, at any moment.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

CONFIG_ERROR = 2   # exit code for problems a restart will not fix (no key, port taken)


def _backoff_s(restarts: int) -> float:
    """Seconds to wait before restart number ``restarts``; ``POCKETOPS_RESTART_BACKOFF_S`` sets the base (tests, slow phones)."""
    base = float(os.environ.get("POCKETOPS_RESTART_BACKOFF_S", "0.2"))
    return min(base * 2 ** restarts, max(5.0, base))


def supervise(argv: list[str], *, max_restarts: int = 5, window_s: float = 60.0) -> int:
    """Run this server as a child, restarting it when it dies unexpectedly (bounded, with backoff).

    A SIGTERM/SIGINT at any moment stops it: during the backoff no new child is started, and a
    child started while the signal was being handled is terminated at once.
    """
    child: list[subprocess.Popen] = []
    stopping: list[bool] = []

    def stop(*_):
        stopping.append(True)
        if child and child[0].poll() is None:
            child[0].terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts: list[float] = []
    while not stopping:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv])
        child[:] = [proc]
        if stopping and proc.poll() is None:
            # The signal came while Popen ran: its handler saw no (or the previous) child to stop.
            proc.terminate()
        code = proc.wait()
        if stopping:
            return 0
        if code in (0, CONFIG_ERROR):  # a configuration error a restart will not fix
            return code
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < window_s] + [now]
        if len(restarts) > max_restarts:
            print(f"pocketops serve: server died {len(restarts)} times within {window_s:.0f} s; giving up", file=sys.stderr)
            return code or 1
        print(f"pocketops serve: server exited with {code}; restarting", file=sys.stderr, flush=True)
        # Short sleeps, not one long one: a stop during the backoff must end it (sleep resumes after a handler).
        until = time.monotonic() + _backoff_s(len(restarts))
        while not stopping and (left := until - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))
    return 0


if __name__ == "__main__" and "--supervise" in sys.argv[1:]:
    # The supervisor only restarts the server: it stays light (no http.server, numpy or
    # onnxruntime), which keeps the cold start of a deploy close to the server's own.
    sys.exit(supervise([a for a in sys.argv[1:] if a != "--supervise"]))

import argparse  # noqa: E402  (after the supervisor's fast path on purpose)
import functools  # noqa: E402
import ipaddress  # noqa: E402
import json  # noqa: E402
import select  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
from http import HTTPStatus  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import unquote  # noqa: E402

try:  # inside the pocketops package
    from . import api  # noqa: E402
except ImportError:  # inside a bundle: api.py and predictor.py sit beside this file
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import api  # type: ignore[no-redef]  # noqa: E402

BODY_ERROR = api.BODY_ERROR
MAX_BODY_BYTES = api.MAX_BODY_BYTES
DRAIN_FACTOR = 8
KEY_ENV = "POCKETOPS_API_KEY"
# Limits that keep slow or idle clients from holding the server (all overridable on the command line).
MAX_CONNECTIONS = 64     # handler threads; more connections wait in the listen backlog
BACKLOG = 1024           # listen queue (capped by the kernel's somaxconn): a burst queues instead of being reset
IO_TIMEOUT_S = 15.0      # one socket read/write, and a new connection's wait for its first byte
KEEPALIVE_S = 5.0        # idle time between two requests on a kept-alive connection
REQUEST_TIMEOUT_S = 30.0  # a whole request (line, headers and body) from its first byte
FIRST_BYTE_GRACE_S = 2.0  # a new connection silent this long yields its slot when others wait


def listen_backlog(wanted: int = BACKLOG) -> int:
    """``wanted``, capped by the kernel's limit where it can be read (Linux, Android)."""
    try:
        return max(1, min(wanted, int(Path("/proc/sys/net/core/somaxconn").read_text().strip())))
    except (OSError, ValueError):
        return wanted


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded(route):
    """Answer 500 (one line, no traceback to the client) when the adapter fails unexpectedly; the server keeps serving."""
    @functools.wraps(route)
    def run(self):
        try:
            route(self)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - the last line of defence of a public server
            print(f"pocketops serve: {self.command} {self.path[:200]!r} failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
            self.close_connection = True
            if not self._answered:
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(exc).__name__}); the server keeps serving")
    return run


class _Body:
    """``wsgi.input``: the announced body, read under the request deadline (408 when it is late)."""

    __slots__ = ("handler", "left")

    def __init__(self, handler: "Handler", length: int):
        self.handler = handler
        self.left = length

    def read(self, size: int = -1) -> bytes:
        handler = self.handler
        size = self.left if size is None or size < 0 else min(size, self.left)
        if size <= 0:
            return b""
        try:
            data = handler.rfile.read(size)
        except TimeoutError:
            handler.timed_out = True
            data = b""
        if handler.timed_out:  # the watchdog cut the read at the request deadline
            raise api.ApiError(HTTPStatus.REQUEST_TIMEOUT, handler.timeout_message())
        self.left -= len(data)
        if not self.left or len(data) < size:  # all of it, or the client's end: the request is in
            handler.server.reading(handler, False)
        return data


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 on a socket -> one call of the WSGI app (``server.app``) -> one answer.

    The transport rules stay here: request-line and header errors, deadlines (408), which
    Content-Length counts, keep-alive, and closing a connection whose body was left unread.
    """

    server_version = "pocketops-serve/1"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in one write; with Nagle on, a second small write would wait for
    # the client's delayed ACK (~40 ms on Linux) on every kept-alive request.
    disable_nagle_algorithm = True

    # -- plumbing ------------------------------------------------------------------------
    def setup(self) -> None:
        self.timeout = self.server.io_timeout  # StreamRequestHandler.setup applies it to the socket
        self.timed_out = False  # set by the server's watchdog when a request takes longer than request_timeout
        self._requests_seen = 0
        self._answered = False
        super().setup()

    def handle_one_request(self) -> None:
        # Wait for the next request's first byte with a bound (keep-alive idle time after the first one),
        # then give the whole request a deadline the watchdog enforces: slow headers or bodies end in 408.
        first = self._requests_seen == 0
        idle = self.server.io_timeout if first else self.server.keepalive
        if not self._wait_for_request(idle, grace=FIRST_BYTE_GRACE_S if first else 0.0):
            self.close_connection = True
            return
        self._requests_seen += 1
        self._answered = False
        self.server.reading(self, True)
        try:
            super().handle_one_request()
        finally:
            self.server.reading(self, False)

    def _wait_for_request(self, idle: float, grace: float) -> bool:
        """True once the next request's first byte is here; False after ``idle`` seconds, at EOF, or,
        once silent for ``grace`` seconds, as soon as every handler is busy and another connection
        waits (an idle client yields its slot; a new one gets the grace to send its first request)."""
        sock = self.connection
        try:
            sock.settimeout(0)
            try:
                if self.rfile.peek(1):  # already buffered (a pipelined request) or on the socket
                    return True
            finally:
                sock.settimeout(self.server.io_timeout)
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            now = time.monotonic()
            until, patient_until = now + idle, now + grace
            while (left := until - time.monotonic()) > 0:
                if poller.poll(min(left, 0.5) * 1000):
                    return bool(self.rfile.peek(1))  # data, or b"" at EOF: returns at once either way
                if time.monotonic() >= patient_until and self.server.crowded():
                    return False
        except OSError:  # reset by the client, or timed out on a half-sent first line
            pass
        return False

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok and self.timed_out:  # the request line or headers were cut by the deadline
            self._timeout_answer()
            return False
        if ok and self.request_version == "HTTP/0.9":  # "GET /path" alone: no headers, no status line back
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not supported; send 'GET /path HTTP/1.1'")
            return False
        if ok and self.command and not hasattr(self, "do_" + self.command):
            # The stdlib answers an unknown method with 501; the app answers every method (405).
            self.run_app()
            return False
        return ok

    def send_response(self, code, message=None) -> None:
        self._answered = True
        self.server.count(int(code))
        super().send_response(code, message)

    def send_error(self, code, message=None, explain=None) -> None:
        """The stdlib's own refusals (bad request line, header too long, ...) as the API's JSON errors, counted."""
        code = int(code)
        if code == HTTPStatus.NOT_IMPLEMENTED:  # unknown method: the app's 405
            self.run_app()
            return
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # a broken request line: still answer with a status line and headers
        if self.timed_out:  # the line is broken because the deadline cut it
            self._timeout_answer()
            return
        text = message or (HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "error")
        if code >= 500:  # 505 for "HTTP/2.0" on this socket: the client's mistake, not a server failure
            text, code = f"{text}; speak HTTP/1.1", HTTPStatus.BAD_REQUEST
        self._error(code, text)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            sys.stderr.write("%s %s\n" % (self.address_string(), format % args))

    def _write(self, status: int, headers: list, body: bytes, *, close: bool, reason: str | None = None) -> None:
        if not close and self.server.crowded():
            close = True  # every handler is busy and connections wait: free this one for them
        self.send_response(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self._headers_buffer.append(b"\r\n")
        if body and self.command != "HEAD":
            self._headers_buffer.append(body)  # one write for headers and body (see disable_nagle_algorithm)
        self.flush_headers()

    def _error(self, status: int, message: str) -> None:
        """A transport-level refusal in the API's shape; the connection closes after it."""
        self._write(*self.server.app.error_response(int(status), message, self.command or "GET"), close=True)

    def timeout_message(self) -> str:
        return (f"request not received within {self.server.request_timeout:g} s; "
                "send the headers and body without pauses")

    def _timeout_answer(self) -> None:
        self._error(HTTPStatus.REQUEST_TIMEOUT, self.timeout_message())

    # -- the request as WSGI -------------------------------------------------------------
    def _environ(self) -> tuple[dict, _Body | None]:
        """The WSGI environ of this request and its body reader (None: no usable Content-Length)."""
        path, _, query = self.path.partition("?")
        host, port = self.server.server_address[:2]
        environ = {
            "REQUEST_METHOD": self.command, "SCRIPT_NAME": "", "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query, "SERVER_NAME": str(host), "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version, "REMOTE_ADDR": self.client_address[0],
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_LENGTH":
                continue
            key = key if key == "CONTENT_TYPE" else "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        body = None
        lengths = self.headers.get_all("Content-Length") or []
        values = {v.strip() for v in lengths}
        if len(values) > 1:  # two different lengths: which body is meant is ambiguous (request smuggling)
            environ[BODY_ERROR] = (HTTPStatus.BAD_REQUEST, f"conflicting Content-Length headers {sorted(values)}; send one")
        elif values:
            length = values.pop()
            environ["CONTENT_LENGTH"] = length
            if length.isascii() and length.isdigit() and len(length) <= 18:
                body = _Body(self, int(length))
            elif not length:
                environ[BODY_ERROR] = (HTTPStatus.BAD_REQUEST, "Content-Length must be a number of bytes, found ''")
        environ["wsgi.input"] = body if body is not None else _NO_BODY
        return environ, body

    @_guarded
    def run_app(self) -> None:
        """Answer this request with the WSGI app; a body it left unread is drained (bounded) and the connection closed."""
        environ, body = self._environ()
        unframed = body is None and ("Content-Length" in self.headers or "Transfer-Encoding" in self.headers)
        if body is None or not body.left:
            self.server.reading(self, False)  # no body to wait for: the request is in
        answer: list = []

        def start_response(status, headers, exc_info=None):
            answer[:] = [status, headers]
            return _no_write

        chunks = self.server.app(environ, start_response)
        try:
            out = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        status, reason = answer[0].split(" ", 1)
        left = body.left if body is not None else 0
        code = int(status)
        self._write(code, answer[1], out, reason=reason,
                    close=unframed or left > 0 or code == HTTPStatus.REQUEST_TIMEOUT or code >= 500)
        if left and left <= self.server.app.max_body * DRAIN_FACTOR and not self.timed_out:
            # Discard (never buffer) a moderately oversized or unread body so the client, still
            # sending it, can read our answer; past DRAIN_FACTOR x the limit just hang up.
            try:
                while left > 0 and not self.timed_out:
                    chunk = self.rfile.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    left -= len(chunk)
            except (TimeoutError, OSError):
                pass

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = run_app  # noqa: N815 - stdlib names


class _NoBody:
    """``wsgi.input`` of a request without a usable Content-Length: empty."""

    def read(self, size: int = -1) -> bytes:
        return b""


_NO_BODY = _NoBody()


def _no_write(data: bytes) -> None:
    raise NotImplementedError("this server takes the app's answer as its return value, not through write()")

LINGER_S = 1.0
LINGER_BYTES = 256 * 1024


def _linger(sock: socket.socket) -> None:
    """Read what the client still sends before closing: closing with unread bytes makes the kernel
    send a reset, which can destroy our answer (a 400 or 414) before the client has read it."""
    try:
        sock.settimeout(0.1)
        until, left = time.monotonic() + LINGER_S, LINGER_BYTES
        while left > 0 and time.monotonic() < until:
            chunk = sock.recv(min(left, 65536))
            if not chunk:
                return  # the client closed too
            left -= len(chunk)
    except OSError:  # nothing more within 0.1 s (TimeoutError), or already reset
        pass


class Server(ThreadingHTTPServer):
    """The stdlib threading server with bounds: a deep listen backlog, at most ``max_connections``
    handler threads (the rest wait in the backlog, so a burst queues and is never refused), socket,
    keep-alive and whole-request timeouts (a watchdog cuts requests that outlive theirs)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, app: "api.Api", *, verbose: bool = False,
                 max_connections: int = MAX_CONNECTIONS, backlog: int = BACKLOG, io_timeout: float = IO_TIMEOUT_S,
                 keepalive: float = KEEPALIVE_S, request_timeout: float = REQUEST_TIMEOUT_S):
        self.request_queue_size = listen_backlog(backlog)  # read by server_activate's listen()
        self.max_connections = max(1, int(max_connections))
        self.io_timeout = io_timeout
        self.keepalive = keepalive
        self.request_timeout = request_timeout
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._active = 0
        self._lock = threading.Lock()
        self._deadlines: dict[Handler, float] = {}
        self._statuses: dict[int, int] = {}
        self._closing = threading.Event()
        super().__init__(address, Handler)
        self.app = app  # the WSGI application every request is handed to
        if app.server_stats is None:
            app.server_stats = self.http_stats  # served as "http" in /v1/stats
        self.verbose = verbose
        self._watchdog = threading.Thread(target=self._watch, name="request-deadlines", daemon=True)
        self._watchdog.start()

    # -- bounded handler threads ---------------------------------------------------------
    def get_request(self):
        # Take a handler slot BEFORE accepting: while all are busy, new connections wait in the
        # kernel's backlog (their requests are buffered there too) instead of getting a thread each.
        while not self._slots.acquire(timeout=0.2):
            if self._closing.is_set():
                raise OSError("server is shutting down")
        try:
            request = super().get_request()
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._active += 1
        return request

    def shutdown_request(self, request) -> None:
        # Called exactly once for every accepted connection (handled, refused or failed to start).
        try:
            try:
                request.shutdown(socket.SHUT_WR)  # our answer is complete: FIN after it
            except OSError:
                pass
            _linger(request)
            self.close_request(request)
        finally:
            with self._lock:
                self._active -= 1
            self._slots.release()

    def crowded(self) -> bool:
        """All handler slots are taken and a connection is waiting to be accepted."""
        if self._active < self.max_connections:
            return False
        poller = select.poll()
        try:
            poller.register(self.socket, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return False

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # the client went away: nothing to report
        print(f"pocketops serve: connection from {client_address[0]} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)

    # -- request deadlines ---------------------------------------------------------------
    def reading(self, handler: Handler, started: bool) -> None:
        """Start (or end) the deadline of the request ``handler`` is reading."""
        with self._lock:
            if started:
                self._deadlines[handler] = time.monotonic() + self.request_timeout
            else:
                self._deadlines.pop(handler, None)

    def _watch(self) -> None:
        tick = min(0.25, self.request_timeout / 4)
        while not self._closing.wait(tick):
            now = time.monotonic()
            with self._lock:
                late = [h for h, deadline in self._deadlines.items() if deadline <= now]
                for handler in late:
                    del self._deadlines[handler]
                    handler.timed_out = True
                    try:  # wakes the handler's blocked read with EOF; it answers 408 and closes
                        handler.connection.shutdown(socket.SHUT_RD)
                    except OSError:
                        pass

    # -- counts --------------------------------------------------------------------------
    def count(self, status: int) -> None:
        with self._lock:
            self._statuses[status] = self._statuses.get(status, 0) + 1

    def http_stats(self) -> dict:
        """Every answer sent so far by status (this answer not included), and the connection limits."""
        with self._lock:
            statuses = dict(sorted(self._statuses.items()))
            active = self._active
        return {"responses": sum(statuses.values()), "by_status": {str(k): v for k, v in statuses.items()},
                "connections": active, "max_connections": self.max_connections, "backlog": self.request_queue_size}

    def shutdown(self) -> None:
        self._closing.set()
        super().shutdown()

    def server_close(self) -> None:
        self._closing.set()
        super().server_close()


def serve(bundle: str | os.PathLike, host: str = "127.0.0.1", port: int = 8765, *, api_key: str | None = None,
          threads: int = 1, max_body: int = MAX_BODY_BYTES, public_without_key: bool = False,
          ready_file: str | None = None, verbose: bool = False, max_connections: int = MAX_CONNECTIONS,
          backlog: int = BACKLOG, io_timeout: float = IO_TIMEOUT_S, keepalive: float = KEEPALIVE_S,
          request_timeout: float = REQUEST_TIMEOUT_S) -> None:
    """Load the bundle and serve until SIGTERM/SIGINT."""
    if not is_loopback(host) and not api_key and not public_without_key:
        print(f"pocketops serve: binding to {host} (not loopback) needs an API key: "
              f"set {KEY_ENV} (pocketops deploy --api-key) or pass --public-without-key", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR)
    started = time.perf_counter()
    app = api.make_app(bundle, threads=threads, api_key=api_key, max_body=max_body)
    predictor = app.predictor
    try:
        httpd = Server((host, port), app, verbose=verbose,
                       max_connections=max_connections, backlog=backlog, io_timeout=io_timeout,
                       keepalive=keepalive, request_timeout=request_timeout)
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


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, found {text}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="server.py", description="Serve a pocketops bundle over HTTP.")
    parser.add_argument("--bundle", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8765")))
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--max-body", type=int, default=MAX_BODY_BYTES, help="largest request body in bytes")
    parser.add_argument("--max-connections", type=_positive(int), default=MAX_CONNECTIONS,
                        help="connections handled at once; more wait in the listen backlog")
    parser.add_argument("--backlog", type=_positive(int), default=BACKLOG, help="listen queue (capped by somaxconn)")
    parser.add_argument("--timeout", type=_positive(float), default=IO_TIMEOUT_S,
                        help="seconds one socket read or write may take")
    parser.add_argument("--keepalive", type=_positive(float), default=KEEPALIVE_S,
                        help="seconds an idle kept-alive connection is held open")
    parser.add_argument("--request-timeout", type=_positive(float), default=REQUEST_TIMEOUT_S,
                        help="seconds a whole request (headers and body) may take to arrive")
    parser.add_argument("--ready-file", default=None, help="write pid/port as JSON here once serving")
    parser.add_argument("--public-without-key", action="store_true", help="allow a non-loopback host without an API key")
    parser.add_argument("--supervise", action="store_true", help="restart the server if it dies")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.supervise:
        return supervise([a for a in argv if a != "--supervise"])
    serve(args.bundle, args.host, args.port, api_key=os.environ.get(KEY_ENV) or None, threads=args.threads,
          max_body=args.max_body, public_without_key=args.public_without_key, ready_file=args.ready_file,
          verbose=args.verbose, max_connections=args.max_connections, backlog=args.backlog,
          io_timeout=args.timeout, keepalive=args.keepalive, request_timeout=args.request_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
