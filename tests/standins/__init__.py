"""Loopback stand-ins for the cloud HTTP APIs that the real client libraries talk to in tests."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class StandIn:
    """A ThreadingHTTPServer on 127.0.0.1 with an in-memory state; use as a context manager."""

    handler_class: type[BaseHTTPRequestHandler]

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []      # (method, path) seen, for assertions
        self.fail: dict[str, int] = {}                  # route name -> HTTP status to answer instead
        # route name -> the error text of that failure; "{authorization}" becomes the request's
        # Authorization header, as a careless proxy or server echoes it (for the secrets tests).
        self.fail_message: dict[str, str] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class)
        self.server.daemon_threads = True
        self.server.standin = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class JsonHandler(BaseHTTPRequestHandler):
    """Shared plumbing: body, query, JSON answers; quiet logs."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body go out in two writes: avoid the 40 ms delayed-ACK stall

    @property
    def standin(self):
        return self.server.standin  # type: ignore[attr-defined]

    def log_message(self, format, *args):  # noqa: A002 - keep pytest output clean
        pass

    def body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._chunked_body()   # httpx streams a file object (an LFS PUT) this way
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _chunked_body(self) -> bytes:
        data = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass   # trailers
                return bytes(data)
            data += self.rfile.read(size)
            self.rfile.readline()   # the CRLF after each chunk

    def split(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        return parts.path, parse_qs(parts.query)

    def send(self, status: int, payload=None, *, raw: bytes | None = None,
             content_type: str = "application/json", headers: dict | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload if payload is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def failing(self, route: str) -> bool:
        """Answer the configured failure for ``route`` (if any) and say so."""
        status = self.standin.fail.get(route)
        if status is None:
            return False
        message = self.standin.fail_message.get(route, f"stand-in told to fail {route}")
        message = message.replace("{authorization}", self.headers.get("Authorization") or "")
        self.send(status, {"error": message},
                  headers={"X-Error-Message": message} if route in self.standin.fail_message else None)
        return True
