"""The bundle server under load on 127.0.0.1: a burst queues instead of being reset, a short soak
keeps memory flat, idle and slow clients cannot hold it, and its supervisor honours a stop at any moment.

Bounded: one 500-connection burst, one ~6 s soak, a handful of slow clients (about 25 s in all on 2 cores).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deployers.runtime import server as server_module
from tests._serve_helpers import (HOST, burst, call, http_request, read_response, running_server, soak)
from tests.standins.bundles import make_bundle

SAMPLE = json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]]}).encode()
PREDICT = http_request("POST", "/v1/predict", SAMPLE)
SOAK_S = 6.0
RSS_GROWTH_BOUND = 16 << 20  # 16 MiB: the stats windows are bounded deques, anything beyond is a leak


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("serve-load") / "bundle", seed=5).path


def _stats(port: int) -> dict:
    answer = call(port, "GET", "/v1/stats")
    assert answer.status == 200, answer
    return answer.json()


def test_a_burst_of_500_connections_is_queued_never_reset(bundle):
    with running_server(bundle) as srv:
        counts, latencies = burst(srv.port, 500, PREDICT, timeout=60)
        assert counts == {"200": 500}, counts
        http = _stats(srv.port)["http"]
        assert http["by_status"] == {"200": 500}
        assert http["backlog"] == server_module.listen_backlog(1024) and http["max_connections"] == 64


def test_a_soak_answers_every_request_and_memory_stays_flat(bundle):
    with running_server(bundle) as srv:
        warm, _ = soak(srv.port, PREDICT, seconds=1.0, connections=8)  # first allocations, thread stacks
        assert set(warm) == {"200"}, warm
        before = srv.rss()
        counts, latencies = soak(srv.port, PREDICT, seconds=SOAK_S, connections=8)
        growth = srv.rss() - before
        assert set(counts) == {"200"}, counts
        assert counts["200"] >= 50, f"only {counts['200']} answers in {SOAK_S} s"
        assert growth < RSS_GROWTH_BOUND, f"RSS grew by {growth / 2**20:.1f} MiB over {counts['200']} requests"
        stats = _stats(srv.port)
        assert stats["requests"] == stats["samples"] == warm["200"] + counts["200"] and stats["errors"] == 0
        assert stats["http"]["by_status"] == {"200": warm["200"] + counts["200"]}


def _drip(sock: socket.socket, head: bytes, drip: bytes, results: list, stop: threading.Event) -> None:
    """A deliberately slow client: ``head`` at once, then ``drip`` one byte every 0.2 s, then its answer."""
    try:
        sock.sendall(head)
        for byte in drip:
            if stop.wait(0.2):  # client pacing, not a wait on the server
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break  # the server cut us off: read its answer
        results.append(read_response(sock))
    except OSError as exc:
        results.append(exc)


def test_idle_and_slow_clients_cannot_exhaust_the_server(bundle):
    """4 handler slots, all taken by 4 idle connections, and 2 clients dripping headers and a body:
    a real request is still answered, the drippers get 408 at their deadline, the idle ones are closed."""
    args = ("--max-connections", "4", "--timeout", "2", "--keepalive", "1", "--request-timeout", "3")
    with running_server(bundle, *args) as srv:
        idle = [socket.create_connection((HOST, srv.port), timeout=60) for _ in range(4)]
        stop, results, threads, slow = threading.Event(), [], [], []
        for head, drip in ((b"POST /v1/predict HTTP/1.1\r\nX-Slow: ", b"a" * 150),
                           (b"POST /v1/predict HTTP/1.1\r\nContent-Length: 200\r\n\r\n", b"1" * 150)):
            sock = socket.create_connection((HOST, srv.port), timeout=60)
            slow.append(sock)
            threads.append(threading.Thread(target=_drip, args=(sock, head, drip, results, stop), daemon=True))
            threads[-1].start()
        try:
            started = time.monotonic()
            answer = call(srv.port, "POST", "/v1/predict", SAMPLE, timeout=60)
            assert answer.status == 200 and answer.json()["labels"], answer
            assert time.monotonic() - started < 30
            for t in threads:
                t.join(timeout=60)
            assert [getattr(r, "status", r) for r in results] == [408, 408], results
            assert all("within 3 s" in r.json()["error"] for r in results)
            for sock in idle:  # closed by the server (EOF), not left hanging until our 60 s timeout
                assert sock.recv(1) == b""
        finally:
            stop.set()
            for sock in idle + slow:
                sock.close()
        # A kept-alive connection is closed after --keepalive seconds of silence.
        with socket.create_connection((HOST, srv.port), timeout=60) as sock:
            sock.sendall(PREDICT)
            assert read_response(sock).status == 200
            started = time.monotonic()
            assert sock.recv(1) == b"" and time.monotonic() - started < 30
        assert call(srv.port, "GET", "/health").status == 200
        by_status = _stats(srv.port)["http"]["by_status"]
        assert by_status.get("408") == 2 and not [s for s in by_status if s.startswith("5")], by_status


# -- the supervisor ---------------------------------------------------------------------------------

@pytest.fixture()
def own_signals():
    """supervise() installs SIGTERM/SIGINT handlers in this process: put pytest's back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


REAL_POPEN = subprocess.Popen  # supervise() is given a stand-in through server_module.subprocess (the same module)


def _child(code: str) -> subprocess.Popen:
    return REAL_POPEN([sys.executable, "-c", code])


def test_supervisor_stopped_during_its_backoff_starts_no_new_child(monkeypatch, own_signals):
    started: list[subprocess.Popen] = []
    in_backoff = threading.Event()

    def popen(cmd, *a, **kw):
        started.append(_child("raise SystemExit(1)"))  # a server that crashes at once
        return started[-1]

    def backoff(restarts: int) -> float:
        in_backoff.set()
        return 60.0

    monkeypatch.setattr(server_module.subprocess, "Popen", popen)
    monkeypatch.setattr(server_module, "_backoff_s", backoff)
    # SIGTERM from another thread once the supervisor is in its backoff (it arrives during the wait).
    killer = threading.Thread(target=lambda: in_backoff.wait(60) and os.kill(os.getpid(), signal.SIGTERM), daemon=True)
    killer.start()
    began = time.monotonic()
    assert server_module.supervise(["--port", "0"]) == 0
    assert time.monotonic() - began < 20, "the stop waited for the 60 s backoff"
    assert len(started) == 1, "a new server was started after the stop"


def test_supervisor_stopped_before_it_holds_the_child_handle_stops_that_child(monkeypatch, own_signals):
    started: list[subprocess.Popen] = []

    def popen(cmd, *a, **kw):
        proc = _child("import time; time.sleep(120)")
        started.append(proc)
        os.kill(os.getpid(), signal.SIGTERM)  # handled here, before supervise() has the handle
        return proc

    monkeypatch.setattr(server_module.subprocess, "Popen", popen)
    began = time.monotonic()
    try:
        assert server_module.supervise(["--port", "0"]) == 0
        assert time.monotonic() - began < 60, "the child ran on after the stop"
        assert len(started) == 1 and started[0].poll() is not None
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_supervisor_process_sigterm_during_backoff_exits_without_a_new_server(tmp_path):
    """End to end: a server that cannot start (no bundle) crashes, the supervisor waits out a
    (test-lengthened) backoff, SIGTERM lands in it: exit 0 promptly, exactly one server started."""
    log = tmp_path / "supervisor.log"
    server_py = Path(server_module.__file__)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(server_py), "--supervise", "--bundle", str(tmp_path / "missing"),
                                 "--port", "0"], stdout=out, stderr=out,
                                env={**os.environ, "POCKETOPS_RESTART_BACKOFF_S": "60"})
    try:
        deadline = time.monotonic() + 60
        while "restarting" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        text = log.read_text(errors="replace")
        assert text.count("restarting") == 1 and text.count("Traceback") == 1, text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
