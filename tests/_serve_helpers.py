"""A real bundle server process on 127.0.0.1 and raw clients for it (load, soak and fuzz tests, benchmarks/serve_load.py).

The server is started exactly as a bundle runs it (``server.py`` from the bundle directory,
``--port 0`` and a ready file); the clients speak HTTP/1.1 over plain sockets so that they can
send what no HTTP library would (duplicate headers, truncated bodies, garbage) and so that a
reset is seen as a reset.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"


@dataclass
class RunningServer:
    """A started server: its process, port and how to reach it."""

    proc: subprocess.Popen
    port: int
    pid: int
    log: Path

    def rss(self) -> int:
        """Resident memory of the server process in bytes."""
        import psutil

        return psutil.Process(self.pid).memory_info().rss

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def running_server(bundle_dir: Path, *args: str, env: dict | None = None, start_timeout: float = 90.0):
    """``server.py`` of ``bundle_dir`` serving on 127.0.0.1 (any free port) until the block ends."""
    bundle_dir = Path(bundle_dir)
    ready = bundle_dir / f"ready-{os.getpid()}-{time.monotonic_ns()}.json"
    log = ready.with_suffix(".log")
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(bundle_dir / "server.py"), "--bundle", str(bundle_dir),
                                 "--host", HOST, "--port", "0", "--ready-file", str(ready), *args],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + start_timeout
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready within {start_timeout:g} s: {log.read_text()[-2000:]}")
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        yield RunningServer(proc, int(info["port"]), int(info["pid"]), log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_function(source_dir: Path, *, env: dict | None = None, start_timeout: float = 30.0):
    """The Cloud Run function's source (an extracted deploy zip) under functions-framework on
    127.0.0.1, as Cloud Run starts it; yields ``(process, port)`` once ``/health`` answers 200."""
    from deployers.gcp import ENTRY_POINT

    source_dir = Path(source_dir)
    port = free_port()
    framework = Path(sys.executable).parent / "functions-framework"
    log = source_dir.parent / f"{source_dir.name}-function.log"  # a file, not a pipe nobody drains
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(framework), f"--target={ENTRY_POINT}", f"--source={source_dir / 'main.py'}",
                                 f"--host={HOST}", f"--port={port}"], cwd=source_dir, env={**os.environ, **(env or {})},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                if call(port, "GET", "/health", timeout=10).status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"functions-framework exited: {log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"functions-framework did not answer /health within {start_timeout:g} s")
            time.sleep(0.1)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def http_request(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    """One well-formed HTTP/1.1 request as bytes (Content-Length set when there is a body)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    headers = dict(headers or {})
    if body or method == "POST":
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Content-Length", str(len(body)))
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Response:
    status: int | None        # None: the connection ended without a (complete) response
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None  # "reset", "eof", "timeout" when status is None

    def json(self):
        return json.loads(self.body)


def _read_one(f) -> Response:
    """One response from a buffered socket file: status line, headers, a Content-Length body."""
    try:
        status = 100
        while status == 100:  # "100 Continue" (Expect: 100-continue), then the real answer
            line = f.readline(65537)
            if not line:
                return Response(None, error="eof")
            parts = line.decode("latin-1").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                return Response(None, error=f"not a status line: {line[:80]!r}")
            status = int(parts[1])
            headers: dict[str, str] = {}
            while True:
                h = f.readline(65537)
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
        body = f.read(int(headers.get("content-length", "0")))
        return Response(status, headers, body)
    except ConnectionResetError:
        return Response(None, error="reset")
    except TimeoutError:
        return Response(None, error="timeout")


def read_response(sock: socket.socket) -> Response:
    """Read one response from a blocking socket."""
    with sock.makefile("rb") as f:
        return _read_one(f)


def raw_exchange(port: int, data: bytes, *, timeout: float = 30.0, shut_write: bool = False) -> Response:
    """Send ``data`` on a new connection and read one response (``shut_write``: then half-close)."""
    return raw_exchange_all(port, data, timeout=timeout, shut_write=shut_write, limit=1)[0]


def raw_exchange_all(port: int, data: bytes, *, timeout: float = 30.0, shut_write: bool = True,
                     limit: int = 1000) -> list[Response]:
    """Send ``data`` (it may hold several pipelined requests) and read every response until the
    server closes; the last item is the end (status None: "eof", "reset" or "timeout")."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if shut_write:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking everything: its answer is still readable
        answers: list[Response] = []
        with sock.makefile("rb") as f:
            while len(answers) < limit:
                answers.append(_read_one(f))
                if answers[-1].status is None:
                    break
        return answers


def call(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None, **kw) -> Response:
    """A well-formed request on its own connection."""
    return raw_exchange(port, http_request(method, path, body, headers), **kw)


# -- asyncio load client ---------------------------------------------------------------------------

async def _read_async(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    line = await reader.readline()
    if not line:
        raise asyncio.IncompleteReadError(b"", None)
    status = int(line.split(b" ", 2)[1])
    length, close = 0, False
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b""):
            break
        k, _, v = h.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"connection" and v.strip().lower() == b"close":
            close = True
    return status, close, await reader.readexactly(length)


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "eof"
    return type(exc).__name__


async def _one_shot(port: int, payload: bytes, timeout: float, start: asyncio.Event) -> tuple[str, float]:
    await start.wait()
    t0 = time.perf_counter()
    writer = None
    try:
        async def go():
            nonlocal writer
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(payload)
            await writer.drain()
            return await _read_async(reader)
        status, _, _ = await asyncio.wait_for(go(), timeout)
        return str(status), time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - every failure is an outcome to count
        return _outcome(exc), time.perf_counter() - t0
    finally:
        if writer is not None:
            writer.close()


def burst(port: int, n: int, payload: bytes, *, timeout: float = 120.0) -> tuple[dict[str, int], list[float]]:
    """``n`` connections opened at the same moment, one request each: outcome counts and latencies (s)."""
    async def main():
        start = asyncio.Event()
        tasks = [asyncio.create_task(_one_shot(port, payload, timeout, start)) for _ in range(n)]
        await asyncio.sleep(0)  # every task is waiting on the start line
        start.set()
        return await asyncio.gather(*tasks)
    results = asyncio.run(main())
    counts: dict[str, int] = {}
    for outcome, _ in results:
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts, [lat for outcome, lat in results if outcome == "200"]


def soak(port: int, payload: bytes, *, seconds: float, connections: int, timeout: float = 30.0
         ) -> tuple[dict[str, int], list[float]]:
    """``connections`` keep-alive clients sending back to back for ``seconds`` (closed loop: the
    rate is the highest the server sustains); outcome counts and latencies (s)."""
    async def client(until: float, counts: dict, latencies: list):
        reader = writer = None
        while time.monotonic() < until:
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
                writer.write(payload)
                await writer.drain()
                status, close, _ = await asyncio.wait_for(_read_async(reader), timeout)
                key = str(status)
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                if close:
                    writer.close()
                    writer = None
            except Exception as exc:  # noqa: BLE001
                key = _outcome(exc)
                if writer is not None:
                    writer.close()
                writer = None
            counts[key] = counts.get(key, 0) + 1
        if writer is not None:
            writer.close()

    async def main():
        counts: dict[str, int] = {}
        latencies: list[float] = []
        until = time.monotonic() + seconds
        await asyncio.gather(*(client(until, counts, latencies) for _ in range(connections)))
        return counts, latencies
    return asyncio.run(main())


def percentiles_ms(latencies: list[float]) -> dict[str, float]:
    """p50/p95/p99 of latencies given in seconds, in milliseconds."""
    if not latencies:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50": round(statistics.median(latencies) * 1000, 2), "p95": round(q[94] * 1000, 2),
            "p99": round(q[98] * 1000, 2)}
