"""Serving under load: the bundle's stdlib server vs waitress and uvicorn wrapping the same predictor.

    python benchmarks/serve_load.py            # full: 60 s soak per server, 5 bursts of 500
    python benchmarks/serve_load.py --short    # CI: 10 s soak per server, 3 bursts of 500

The same bundle (a 4-feature linear ONNX model, one sample per request, keep-alive) is served on
127.0.0.1 by three processes at once:

- ``stdlib``: the bundle's own ``server.py`` with its defaults (ThreadingHTTPServer, at most 64
  handler threads, backlog 1024), i.e. what ``pocketops deploy --target local`` and the Docker
  Space run;
- ``waitress``: waitress 8 threads, backlog 1024, a 30-line WSGI adapter around ``Predictor``;
- ``uvicorn``: one worker (asyncio + h11: pure Python, as on Termux), an ASGI adapter calling the
  predictor inline (a sub-millisecond model: a thread hop would cost more than it saves).

onnxruntime runs 1 intra-op thread in every server. The load comes from one asyncio client in
this process: bursts of 500 connections opened at once (one request each), and a closed-loop
soak of 8 keep-alive connections (the highest rate each server sustains). Rounds alternate
between the servers (stdlib, waitress, uvicorn, stdlib, ...) so all see the same machine; the
figures are medians over rounds. Prints p50/p95/p99 latency, requests/s, resets, 5xx and RSS
before/after per server, then the ratios (stdlib / other) for requests/s and p99.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests._serve_helpers import HOST, burst, http_request, percentiles_ms, running_server, soak  # noqa: E402

WAITRESS_THREADS = 8
SOAK_CONNECTIONS = 8
BURST = 500

ADAPTERS = r'''
import json, sys
sys.path.insert(0, sys.argv[2])
from predictor import InputError, Predictor

PREDICTOR = Predictor(sys.argv[2], threads=1)
HEALTH = json.dumps({"status": "ok"}).encode()


def answer(method, path, body):
    """(status, payload bytes) for one request, like server.py's main routes."""
    if path == "/health":
        return 200, HEALTH
    if path != "/v1/predict" or method != "POST":
        return 404, b'{"error": "no route"}'
    try:
        inputs = json.loads(body)["inputs"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return 400, b'{"error": "bad body"}'
    try:
        return 200, json.dumps(PREDICTOR.predict(inputs)).encode()
    except InputError as exc:
        return 422, json.dumps({"error": str(exc)}).encode()


REASONS = {200: "200 OK", 400: "400 Bad Request", 404: "404 Not Found", 422: "422 Unprocessable Entity"}


def wsgi(environ, start_response):
    size = int(environ.get("CONTENT_LENGTH") or 0)
    status, payload = answer(environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["wsgi.input"].read(size))
    start_response(REASONS[status], [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    status, payload = answer(scope["method"], scope["path"], body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


port = int(sys.argv[3])
if sys.argv[1] == "waitress":
    import waitress
    waitress.serve(wsgi, host="127.0.0.1", port=port, threads=int(sys.argv[4]), backlog=1024,
                   connection_limit=2000, _quiet=True)
else:
    import uvicorn
    uvicorn.run(asgi, host="127.0.0.1", port=port, workers=1, backlog=1024, log_level="warning",
                access_log=False, loop="asyncio", http="h11", lifespan="off")
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Adapted:
    """waitress or uvicorn serving the bundle's predictor in a subprocess."""

    def __init__(self, kind: str, bundle: Path, script: Path):
        self.kind, self.port = kind, free_port()
        self.proc = subprocess.Popen([sys.executable, str(script), kind, str(bundle), str(self.port), str(WAITRESS_THREADS)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{kind} exited: {self.proc.stderr.read().decode()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} did not listen within 60 s") from None
                time.sleep(0.05)

    def rss(self) -> int:
        import psutil

        return psutil.Process(self.pid).memory_info().rss

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _bad(counts: dict) -> tuple[int, int, int]:
    """(resets, 5xx, other failures) in outcome counts."""
    resets = counts.get("reset", 0)
    fives = sum(v for k, v in counts.items() if k.isdigit() and k.startswith("5"))
    other = sum(v for k, v in counts.items() if k != "200" and k != "reset" and not (k.isdigit() and k.startswith("5")))
    return resets, fives, other


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="CI mode: 10 s soak and 3 bursts per server")
    parser.add_argument("--servers", default="stdlib,waitress,uvicorn", help="comma-separated subset")
    args = parser.parse_args()
    soak_s, bursts, rounds = (10.0, 3, 5) if args.short else (60.0, 5, 6)
    names = [n for n in args.servers.split(",") if n]
    payload = http_request("POST", "/v1/predict", json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]]}).encode())

    from tests.standins.bundles import make_bundle

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        bundle = make_bundle(Path(tmp) / "bundle", seed=5).path
        script = Path(tmp) / "adapters.py"
        script.write_text(ADAPTERS)
        servers = {}
        with contextlib.ExitStack() as stack:
            for name in names:
                if name == "stdlib":
                    servers[name] = stack.enter_context(running_server(bundle))
                else:
                    adapted = Adapted(name, bundle, script)
                    stack.callback(adapted.close)
                    servers[name] = adapted
            results = {n: {"burst_s": [], "burst_lat": [], "burst_counts": {}, "rps": [], "lat": [], "counts": {}}
                       for n in names}
            for name, srv in servers.items():  # warm-up: first allocations, thread pools, caches
                soak(srv.port, payload, seconds=1.0, connections=SOAK_CONNECTIONS)
                results[name]["rss_before"] = srv.rss()
            for _ in range(bursts):
                for name, srv in servers.items():
                    started = time.perf_counter()
                    counts, lat = burst(srv.port, BURST, payload, timeout=60)
                    results[name]["burst_s"].append(time.perf_counter() - started)
                    results[name]["burst_lat"] += lat
                    for k, v in counts.items():
                        results[name]["burst_counts"][k] = results[name]["burst_counts"].get(k, 0) + v
            for _ in range(rounds):
                for name, srv in servers.items():
                    started = time.perf_counter()
                    counts, lat = soak(srv.port, payload, seconds=soak_s / rounds, connections=SOAK_CONNECTIONS)
                    # Elapsed, not the nominal round: a request waiting out a timeout lengthens the round.
                    results[name]["rps"].append(counts.get("200", 0) / (time.perf_counter() - started))
                    results[name]["lat"] += lat
                    for k, v in counts.items():
                        results[name]["counts"][k] = results[name]["counts"].get(k, 0) + v
            for name, srv in servers.items():
                results[name]["rss_after"] = srv.rss()

    print(f"serve_load: {'short' if args.short else 'full'} mode; one sample per request; onnxruntime 1 thread; "
          f"stdlib <= 64 handler threads, waitress {WAITRESS_THREADS} threads, uvicorn 1 worker (asyncio+h11); "
          f"client: one asyncio process on the same machine ({os.cpu_count()} cores)")
    print(f"burst: {bursts} x {BURST} connections opened at once, one request each; "
          f"soak: {SOAK_CONNECTIONS} keep-alive connections back to back, {soak_s:g} s per server in {rounds} alternating rounds")
    for name in names:
        r = results[name]
        b_res, b_5xx, b_other = _bad(r["burst_counts"])
        s_res, s_5xx, s_other = _bad(r["counts"])
        bp, sp = percentiles_ms(r["burst_lat"]), percentiles_ms(r["lat"])
        print(f"{name:9s} burst: median {statistics.median(r['burst_s']) * 1000:7.0f} ms for {BURST}, "
              f"latency p50 {bp['p50']:.1f} p95 {bp['p95']:.1f} p99 {bp['p99']:.1f} ms, "
              f"resets {b_res}, 5xx {b_5xx}, other failures {b_other}")
        print(f"{name:9s} soak:  median {statistics.median(r['rps']):7.0f} requests/s, "
              f"latency p50 {sp['p50']:.2f} p95 {sp['p95']:.2f} p99 {sp['p99']:.2f} ms, "
              f"resets {s_res}, 5xx {s_5xx}, other failures {s_other}, "
              f"RSS {r['rss_before'] / 2**20:.1f} -> {r['rss_after'] / 2**20:.1f} MiB")
        failed = {k: v for k, v in {**r["burst_counts"], **r["counts"]}.items() if k != "200"}
        if failed:
            print(f"{name:9s} failures: burst {dict((k, v) for k, v in r['burst_counts'].items() if k != '200')}, "
                  f"soak {dict((k, v) for k, v in r['counts'].items() if k != '200')}")
    if "stdlib" in results:
        base = results["stdlib"]
        for name in names:
            if name == "stdlib":
                continue
            other = results[name]
            other_rps = statistics.median(other["rps"])
            # A server that answered nothing in most rounds (it stalled: see its failures line) has no
            # meaningful throughput ratio; say so rather than print a division by ~0.
            rps = (f"{statistics.median(base['rps']) / other_rps:.2f}" if other_rps > 0
                   else f"n/a ({name} answered nothing in most soak rounds)")
            p99 = percentiles_ms(base["lat"])["p99"] / max(percentiles_ms(other["lat"])["p99"], 1e-9)
            burst_ratio = statistics.median(base["burst_s"]) / max(statistics.median(other["burst_s"]), 1e-9)
            print(f"ratio stdlib/{name}: requests/s {rps}, soak p99 {p99:.2f}, burst time {burst_ratio:.2f}")
    failures = sum(sum(_bad(results[n]["burst_counts"])) + sum(_bad(results[n]["counts"])) for n in names if n == "stdlib")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
