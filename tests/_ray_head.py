"""A real local Ray head for the cluster tests: ``ray start --head --block`` with token auth, on
127.0.0.1 only, one CPU and a bounded object store, stopped (and every process it started
killed by pid) when the session ends.

``ray stop --force`` would kill every Ray process on the machine by name, including heads
that are not ours; instead each process of this head carries a marker in its environment and
teardown ends exactly those, by pid. Readiness is the dashboard answering ``/api/version`` with our
token, never a fixed sleep.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

START_DEADLINE_S = 240.0  # ~30 s on 2 busy cores; generous for a machine 3x slower
MARKER = "POCKETOPS_TEST_RAY_HEAD"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_executable() -> str | None:
    """The ``ray`` CLI beside this Python (the venv's ray[default]), or None."""
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else shutil.which("ray")


@dataclass
class RayHead:
    """A running head: its dashboard address, token, and how long it took to start."""

    address: str
    token: str
    temp_dir: Path
    marker: str
    proc: subprocess.Popen
    start_s: float
    stop_s: float | None = None

    def processes(self):
        """Every live process of this head (found by the marker in its environment)."""
        import psutil

        found = []
        for p in psutil.process_iter(["pid"]):
            try:
                if p.environ().get(MARKER) == self.marker:
                    found.append(p)
            except (psutil.Error, OSError):
                continue
        return found

    def stop(self) -> float:
        """Stop the head: SIGTERM to each of its processes (found by pid through the marker),
        SIGKILL to any still alive after a few seconds. Seconds taken.

        (SIGTERM to `ray start --block` alone takes ~35 s here: it stops its processes one by
        one with grace periods; a test head has nothing to save.)"""
        import psutil

        t0 = time.monotonic()
        procs = self.processes()
        if self.proc.poll() is None:
            procs.append(psutil.Process(self.proc.pid))
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=5)
        # Then SIGKILL whatever of the head is still there, again until nothing is: the raylet starts
        # its dashboard and runtime-env agents again when they die, and one started after a single
        # pass outlived the head (an orphan at ~60 % CPU, seen slowing the benchmarks after the tests).
        deadline = time.monotonic() + 60
        while True:
            left = self.processes()
            if not left or time.monotonic() > deadline:
                break
            for p in left:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(left, timeout=5)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.stop_s = time.monotonic() - t0
        return self.stop_s


def version_answer(address: str, token: str | None, timeout: float = 2.0) -> int | None:
    """The HTTP status of ``/api/version`` (None while nothing answers)."""
    req = urllib.request.Request(address + "/api/version")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def start_head(log_path: Path | None = None) -> RayHead:
    """Start a head and wait for its Jobs API; raises RuntimeError (with the log's tail) if it cannot."""
    ray = ray_executable()
    if ray is None:
        raise RuntimeError("no `ray` CLI beside this Python; install the cluster extra: pip install -e '.[cluster]'")
    # Ray's unix sockets live under the temp dir: keep its path short (108-byte socket path limit).
    temp_dir = Path(tempfile.mkdtemp(prefix="pr", dir="/tmp"))
    token, marker = secrets.token_hex(16), secrets.token_hex(8)
    dash = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
    env.update({
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, MARKER: marker,
        # The job's `python` is the cluster's: this venv's, with torch and onnx (as on a real cluster).
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
    })
    cmd = [ray, "start", "--head", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--port={free_port()}",
           f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
           "--object-store-memory=80000000", "--include-dashboard=true", "--disable-usage-stats",
           f"--temp-dir={temp_dir}"]
    log = open(log_path or temp_dir / "head.log", "wb")  # removed with the temp dir at stop
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    head = RayHead(address=f"http://127.0.0.1:{dash}", token=token, temp_dir=temp_dir, marker=marker, proc=proc, start_s=0.0)
    deadline = t0 + START_DEADLINE_S
    while True:
        status = version_answer(head.address, token)
        if status == 200:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            log.close()
            tail = Path(log.name).read_text(errors="replace")[-1500:]
            head.stop()
            raise RuntimeError(f"the Ray head did not answer /api/version within {START_DEADLINE_S:.0f} s "
                               f"(exit {proc.poll()}): {tail}")
        time.sleep(0.25)  # polling an observable state, not waiting a fixed time
    head.start_s = time.monotonic() - t0
    return head
