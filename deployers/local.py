"""Target "local": the bundle's HTTP server as its own supervised process on this phone or laptop.

The process runs ``server.py --supervise`` from the bundle in a new session (it outlives the
CLI, the dashboard and the worker); its process-group leader's pid and the port are recorded
in the deployment's meta. The API key goes to it through the environment only.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from core import pace
from deployers.base import Bundle, DeployError, Plan, Release
from deployers.runtime.server import KEY_ENV, is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


class LocalDeployer:
    """Serve a bundle from a supervised ``server.py`` process on this device."""
    target = "local"

    def __init__(self, *, python: str | None = None, startup_timeout: float = STARTUP_TIMEOUT_S, threads: int = 1):
        self.python = python or sys.executable
        self.startup_timeout = startup_timeout
        self.threads = threads
        # Called with {pid, bundle, workdir} right after a release's server process starts,
        # before waiting for it: the service records it so a kill mid-deploy leaves it known.
        self.on_started: Callable[[dict], None] | None = None

    # -- protocol ------------------------------------------------------------------------
    def plan(self, bundle: Bundle, options: dict) -> Plan:
        """The bundle's files, no cost, and the API-key requirement for a host that is not loopback."""
        host = options.get("host") or DEFAULT_HOST
        from core.runtimes import runtime_of

        rt = runtime_of(bundle.model_json.get("model_file", "model.onnx"))
        requirements = ["numpy and onnxruntime on this device (Termux: pkg install python-numpy python-onnxruntime)"
                        if rt.name == "onnxruntime" else
                        f"numpy and {rt.label} on this device (pip install '{rt.package}'; Termux: {rt.termux})"]
        if not is_loopback(host):
            requirements.append(f"an API key for host {host} (--api-key or {KEY_ENV}); clients send it as X-API-Key")
        return Plan(
            target=self.target,
            files=[{"path": p, "size_bytes": s} for p, s in bundle.files()],
            estimated_monthly_cost_usd=0.0,
            requirements=requirements,
            notes=[f"serves http://{host}:{options.get('port') or DEFAULT_PORT} from a process on this device: "
                   "no bill, but the phone does the work (battery, heat; Android may kill it in the background, "
                   "take a termux-wake-lock)"],
        )

    def deploy(self, bundle: Bundle, options: dict, previous: dict | None) -> Release:
        """Start the new release's server and stop the previous one; a failure leaves the previous one serving."""
        host = options.get("host") or DEFAULT_HOST
        prev_meta = (previous or {}).get("meta") or {}
        port = options.get("port")
        if port is None:
            port = prev_meta.get("port") or DEFAULT_PORT
        api_key = options.get("api_key") or os.environ.get(KEY_ENV) or None
        if not is_loopback(host) and not api_key:
            raise DeployError(f"serving on {host} (not loopback) needs an API key: pass --api-key or set {KEY_ENV}")
        _preflight(bundle)
        workdir = Path(options.get("workdir") or tempfile.mkdtemp(prefix="pocketops-local-"))
        port = int(port) or _free_port(host)
        prev_alive = previous is not None and _alive(prev_meta.get("pid"), prev_meta.get("bundle"))
        clash = prev_alive and int(prev_meta.get("port", -1)) == port
        if clash:
            # Same port: the old release must step aside first; if the new one does not come up,
            # the old bundle is started again so a failed deploy leaves the previous one serving.
            _terminate(prev_meta["pid"])
        try:
            release = self._start(bundle.path, host, port, api_key, workdir)
        except DeployError as exc:
            if clash:
                raise self._restart(prev_meta, host, port, api_key, workdir, exc, "previous") from exc
            raise
        if prev_alive and not clash:
            _terminate(prev_meta["pid"])  # superseded: the new release serves on its own port now
        return release

    def status(self, deployment: dict) -> Release:
        """Running if a server of this release answers /health, failed if it does not, stopped if none runs."""
        meta = deployment.get("meta") or {}
        url = deployment.get("url")
        members = _members(meta.get("pid"), meta.get("bundle"))
        if not members:
            return Release("stopped", url, {"reason": f"process {meta.get('pid')} is not running", "supervised": None})
        # The supervisor may be gone (killed with signal 9) while its server still serves.
        supervised = int(meta["pid"]) in members
        reason = None if supervised else (f"its supervisor (pid {meta['pid']}) was killed: the server still answers "
                                          "but is not restarted if it dies; deploy again or roll back to supervise it")
        try:
            _, ms = _request(url, "/health", timeout=3)
        except DeployError as exc:
            return Release("failed", url, {"reason": str(exc), "supervised": supervised})
        return Release("running", url, {"reason": reason, "supervised": supervised}, health_latency_ms=ms)

    def rollback(self, current: dict, previous: dict, previous_bundle: Bundle) -> Release:
        """Stop the current server and start the previous bundle on the same port (the current one again if that fails)."""
        meta = current.get("meta") or {}
        host = meta.get("host") or DEFAULT_HOST
        port = int(meta.get("port") or (previous.get("meta") or {}).get("port") or DEFAULT_PORT)
        api_key = os.environ.get(KEY_ENV) or _key_of(meta.get("pid"), meta.get("server_pid")) or None
        if not is_loopback(host) and not api_key:
            raise DeployError(f"rolling back a server on {host} needs its API key: set {KEY_ENV}")
        _preflight(previous_bundle)
        workdir = Path((previous.get("meta") or {}).get("workdir") or tempfile.mkdtemp(prefix="pocketops-local-"))
        running = _alive(meta.get("pid"), meta.get("bundle"))
        if running:
            _terminate(meta["pid"])
        try:
            return self._start(previous_bundle.path, host, port, api_key, workdir)
        except DeployError as exc:
            if running and meta.get("bundle"):
                raise self._restart(meta, host, port, api_key, workdir, exc, "current") from exc
            raise

    def _restart(self, meta: dict, host: str, port: int, api_key: str | None, workdir: Path,
                 exc: DeployError, which: str) -> DeployError:
        """Start the release that stepped aside again; the error to raise, carrying its new pid/port."""
        # The restarted server is that release's, recorded on its row, not the new row's to stop.
        hook, self.on_started = self.on_started, None
        try:
            again = self._start(Path(meta["bundle"]), meta.get("host", host), port, api_key,
                                Path(meta.get("workdir") or workdir))
        except DeployError as failed:
            return DeployError(f"{exc}; restarting the {which} release also failed: {failed}")
        finally:
            self.on_started = hook
        error = DeployError(f"{exc} (the {which} release was restarted on port {port})")
        error.restored = again  # service records its new pid on that release's row
        return error

    def abandon(self, deployment: dict) -> str | None:
        """Stop every server a deploy killed midway started (recorded, or found by its workdir); what was done."""
        meta = deployment.get("meta") or {}
        groups = {int(p["pid"]) for p in meta.get("started") or [] if p.get("pid")}
        for workdir in ({p.get("workdir") for p in meta.get("started") or []} | {meta.get("workdir")}) - {None}:
            # the window between starting the process and recording it: its command line names the workdir
            groups |= _groups_running(str(Path(workdir) / "ready.json"))
        stopped = sorted(g for g in groups if _members(g))
        for group in stopped:
            _terminate(group)
        return f"stopped the server it had started (process group {', '.join(map(str, stopped))})" if stopped else None

    def stop(self, deployment: dict) -> Release:
        """Stop the release's process group; DeployError if it will not stop."""
        meta = deployment.get("meta") or {}
        if _alive(meta.get("pid"), meta.get("bundle")):
            _terminate(meta["pid"])
        if _alive(meta.get("pid"), meta.get("bundle")):
            raise DeployError(f"the server (process group {meta.get('pid')}) did not stop; kill it with "
                              f"`kill -9 -{meta.get('pid')}`")
        return Release("stopped", deployment.get("url"), {"stopped_pid": meta.get("pid"), "reason": None})

    # -- process -------------------------------------------------------------------------
    def _start(self, bundle_dir: Path, host: str, port: int, api_key: str | None, workdir: Path) -> Release:
        """Start the supervised server; wait for its first successful prediction (the cold start)."""
        bundle_dir = Path(bundle_dir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        ready_file = workdir / "ready.json"
        ready_file.unlink(missing_ok=True)
        log_path = workdir / "server.log"
        env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
        if api_key:
            env[KEY_ENV] = api_key
        cmd = [self.python, str(bundle_dir / "server.py"), "--bundle", str(bundle_dir), "--host", host,
               "--port", str(port), "--threads", str(self.threads), "--ready-file", str(ready_file), "--supervise"]
        started = time.perf_counter()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                    cwd=str(bundle_dir), start_new_session=True)
        if self.on_started is not None:
            self.on_started({"pid": proc.pid, "bundle": str(bundle_dir), "workdir": str(workdir)})
        pace.hold("deploy:server-started")  # tests: a kill here must not leave the server unknown
        deadline = time.monotonic() + self.startup_timeout
        while not ready_file.exists():
            if proc.poll() is not None:
                raise DeployError(f"the local server exited with code {proc.returncode}: {_last_line(log_path)}")
            if time.monotonic() > deadline:
                _terminate(proc.pid)
                raise DeployError(f"the local server did not start within {self.startup_timeout:.0f} s; see {log_path}")
            time.sleep(0.01)
        ready = json.loads(ready_file.read_text())
        url = f"http://{_url_host(host)}:{ready['port']}"
        sample = _sample(bundle_dir)
        try:
            _request(url, "/v1/predict", {"inputs": sample}, api_key=api_key, timeout=10)
        except DeployError as exc:
            _terminate(proc.pid)
            raise DeployError(f"the local server started but its first prediction failed: {exc}") from exc
        cold_ms = (time.perf_counter() - started) * 1000
        _, health_ms = _request(url, "/health", timeout=3)
        meta = {"pid": proc.pid, "server_pid": ready["pid"], "host": host, "port": ready["port"],
                "bundle": str(bundle_dir), "workdir": str(workdir), "log": str(log_path),
                "api_key_required": bool(api_key), "load_ms": ready.get("load_ms")}
        return Release("running", url, meta, health_latency_ms=round(health_ms, 2), cold_start_ms=round(cold_ms, 1))


# -- helpers ------------------------------------------------------------------------------

def _preflight(bundle: Bundle) -> None:
    """Load the bundle in this process first: a broken model fails here, before anything is stopped."""
    from core import runtimes
    from core.optional import require

    model = (bundle.model_json or {}).get("model_file", "model.onnx")
    if runtimes.runtime_of(model).name == "onnxruntime":
        require("onnxruntime", "Serving a model locally")
    else:
        runtimes.require(model, "Serving a model locally")
    from deployers.runtime.predictor import Predictor

    try:
        predictor = Predictor(bundle.path)
        predictor.predict(_sample(Path(bundle.path)))
    except Exception as exc:  # onnxruntime raises its own exception types for a bad model file
        raise DeployError(f"bundle {bundle.path} does not load or predict: {type(exc).__name__}: {exc}") from exc


def _sample(bundle_dir: Path) -> list:
    """One input to prove the server answers: the first reference row, else zeros."""
    import numpy as np

    info = json.loads((Path(bundle_dir) / "model.json").read_text("utf-8"))
    shape = info["input"]["shape"]
    ref = Path(bundle_dir) / "reference.npz"
    if ref.is_file():
        with np.load(ref) as data:
            if len(data["X"]):
                return data["X"][:1].tolist()
    return np.zeros((1, *shape)).tolist()


def _request(url: str | None, path: str, body: dict | None = None, *, api_key: str | None = None,
             timeout: float = 5) -> tuple[dict, float]:
    """(JSON answer, latency ms) or DeployError with the server's message."""
    if not url:
        raise DeployError("no URL recorded for this deployment")
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url + path, data=data, method="GET" if body is None else "POST")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("X-API-Key", api_key)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise DeployError(f"{path} answered HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeployError(f"{url}{path} is not answering: {getattr(exc, 'reason', exc)}") from None
    return payload, (time.perf_counter() - started) * 1000


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _servers(pgid: int | None = None) -> list[tuple[int, int, str]] | None:
    """(pid, process group, command line) of each live ``server.py`` process we may read.

    Only group ``pgid`` when given (its members are found by group first: cheap, and
    ``_terminate`` polls it). None when the process table cannot be listed at all.
    """
    import psutil

    try:
        pids = psutil.pids()
    except OSError:
        return None
    found = []
    for pid in pids:
        try:
            group = os.getpgid(pid)
            if pgid is not None and group != pgid:
                continue
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.cmdline())
        except (OSError, psutil.Error):
            continue  # exited meanwhile, or not ours to read (Android shows other users' pids as denied)
        if "server.py" in cmdline:
            found.append((pid, group, cmdline))
    return found


def _members(pgid, bundle: str | None = None) -> list[int]:
    """Pids of our server processes (supervisor, server) in process group ``pgid``.

    A deploy starts the supervisor in a new session, so its pid is the group id; the server
    it runs stays in that group even when the supervisor is killed (signal 9), which is how a
    release remains visible and stoppable then. Pids are checked against the bundle in their
    command line, so a recycled pid or group id is never taken for ours.
    """
    if not pgid:
        return []
    pgid = int(pgid)
    try:
        os.waitpid(pgid, os.WNOHANG)  # reap it if it is our own exited child (else it lingers as a zombie)
    except ChildProcessError:
        pass
    servers = _servers(pgid)
    if servers is None:  # no readable process table: the kernel still knows the group
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    return [pid for pid, _group, cmdline in servers if bundle is None or str(bundle) in cmdline]


def _groups_running(marker: str) -> set[int]:
    """Process groups of server.py processes whose command line contains ``marker``."""
    return {group for _pid, group, cmdline in _servers() or [] if marker in cmdline}


def _alive(pid, bundle: str | None = None) -> bool:
    """True if the release started as process group ``pid`` still has a server process of ours."""
    return bool(_members(pid, bundle))


def _terminate(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the release's process group (supervisor + server), SIGKILL if it lingers."""
    pid = int(pid)
    deadline = time.monotonic() + timeout
    for sig, until in ((signal.SIGTERM, deadline), (signal.SIGKILL, deadline + 2)):
        if not _members(pid):
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError as exc:
            raise DeployError(f"not allowed to stop process group {pid} ({exc.strerror}); it is not ours") from None
        while time.monotonic() < until:
            if not _members(pid):
                return
            time.sleep(0.02)


def _key_of(*pids) -> str | None:
    """The API key a running server of ours got by environment (same user only; never stored)."""
    import psutil

    for pid in [*pids, *(m for p in pids if p for m in _members(p))]:
        if not pid:
            continue
        try:
            key = psutil.Process(int(pid)).environ().get(KEY_ENV)
        except (OSError, psutil.Error):
            continue
        if key is not None:
            return key
    return None


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"
