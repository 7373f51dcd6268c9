"""`pocketops cluster` and `--on` without a Ray head: bad input is one line and changes nothing,
tokens never reach the store, unreachable and too-old clusters are one line."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import store
from core.rayjobs import ClusterError, RayJobs, parse_version, ray_token

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.phone  # the phone side of a cluster needs neither ray, torch nor onnx (make test-phone)


def cli(db_path, *args, env=None, timeout=60):
    import os

    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "tui.cli", "--db", str(db_path), *args], capture_output=True, text=True,
                          env=full, timeout=timeout, cwd=ROOT)


def one_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_add_list_remove_and_the_token_never_reaches_the_store(tmp_path):
    db_path = tmp_path / "p.db"
    r = cli(db_path, "cluster", "add", "lab", "--address", "http://127.0.0.1:9/", "--token-env", "LAB_TOKEN",
            env={"LAB_TOKEN": "s3cr3t-token-value"})
    assert r.returncode == 0, r.stderr
    listed = cli(db_path, "cluster", "list", "--json", env={"LAB_TOKEN": "s3cr3t-token-value"})
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [{"name": "lab", "address": "http://127.0.0.1:9", "reachable": False, "ray_version": None}]
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("p.db*"))
    assert b"LAB_TOKEN" in raw and b"s3cr3t-token-value" not in raw
    assert "exists already" in one_line(cli(db_path, "cluster", "add", "lab", "--address", "http://127.0.0.1:9"))
    assert cli(db_path, "cluster", "remove", "lab").returncode == 0
    assert "no cluster named 'lab'" in one_line(cli(db_path, "cluster", "remove", "lab"))
    assert json.loads(cli(db_path, "cluster", "list", "--json").stdout) == []


@pytest.mark.parametrize("args, expected", [
    (("bad name", "--address", "http://h:8265"), "cluster name 'bad name'"),
    (("lab", "--address", "h:8265"), "--address 'h:8265'"),
    (("lab", "--address", "http://h:8265", "--token-env", "abc-def=1"), "--token-env 'abc-def=1'"),
])
def test_bad_cluster_input_is_one_line_and_adds_nothing(tmp_path, args, expected):
    db_path = tmp_path / "p.db"
    assert expected in one_line(cli(db_path, "cluster", "add", *args))
    assert store.connect(db_path).execute("SELECT COUNT(*) FROM clusters").fetchone()[0] == 0


def test_on_an_unknown_cluster_is_one_line_and_queues_nothing(tmp_path):
    db_path = tmp_path / "p.db"
    line = one_line(cli(db_path, "train", "--dataset", "digits", "--model", "mlp", "--on", "nowhere"))
    assert "no cluster named 'nowhere'" in line and "cluster add nowhere" in line
    db = store.connect(db_path)
    assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_token_lookup_follows_rays_order(tmp_path, monkeypatch):
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ray_token() == (None, "~/.ray/auth_token")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-default\n")
    assert ray_token() == ("from-default", "~/.ray/auth_token")
    (tmp_path / "t").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert ray_token() == ("from-path", "$RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert ray_token() == ("from-env", "$RAY_AUTH_TOKEN")
    assert ray_token("MINE") == (None, "$MINE")  # the cluster's own variable wins, even unset
    monkeypatch.setenv("MINE", "mine")
    assert ray_token("MINE") == ("mine", "$MINE")
    assert "mine" not in repr(RayJobs("c", "http://127.0.0.1:1", "mine"))


def test_versions_parse():
    assert parse_version("2.60.0") == (2, 60, 0)
    assert parse_version("2.52.0rc1") == (2, 52, 0)
    assert parse_version("3.0.0.dev0") == (3, 0, 0)
    assert parse_version("nightly") == ()


def test_unreachable_address_is_one_line_in_under_10_s(tmp_path):
    db_path = tmp_path / "p.db"
    # A socket that accepts connections (the kernel's backlog) but never answers: the worst case.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        for name, port in (("silent", silent.getsockname()[1]), ("closed", closed_port)):
            assert cli(db_path, "cluster", "add", name, "--address", f"http://127.0.0.1:{port}").returncode == 0
            t0 = time.monotonic()
            line = one_line(cli(db_path, "cluster", "check", name))
            assert time.monotonic() - t0 < 10
            assert f"cluster {name!r} at http://127.0.0.1:{port} is unreachable" in line
    finally:
        silent.close()


class _OldRay(BaseHTTPRequestHandler):
    """A loopback stand-in for a Ray dashboard from before token auth."""

    version = "2.8.1"

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = json.dumps({"version": "4", "ray_version": self.version}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def old_ray():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OldRay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_cluster_whose_ray_is_too_old_is_one_line(tmp_path, old_ray):
    db_path = tmp_path / "p.db"
    assert cli(db_path, "cluster", "add", "old", "--address", old_ray, "--token-env", "OLD_TOKEN").returncode == 0
    line = one_line(cli(db_path, "cluster", "check", "old", env={"OLD_TOKEN": "t"}))
    assert "cluster 'old' runs Ray 2.8.1" in line and "≥ 2.52" in line and "token auth" in line
    with pytest.raises(ClusterError, match="Ray 2.8.1.*≥ 2.9"):  # without a token: the Jobs API's own minimum
        RayJobs("old", old_ray).version()


def test_the_phone_side_never_imports_ray_or_torch():
    code = ("import sys; import core.remote_job, core.clusters, core.rayjobs, tui.commands.cluster, core.worker; "
            "bad = [m for m in ('ray', 'torch', 'textual') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr


class _RejectingRay(BaseHTTPRequestHandler):
    """A loopback stand-in for a current Ray dashboard that takes the package but rejects the job."""

    REASON = "runtime_env: working_dir package exceeds the 100 MiB limit"

    def _send(self, status: int, payload) -> None:
        body = (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        if self.path == "/api/version":
            self._send(200, {"version": "4", "ray_version": "2.60.0"})
        else:  # no such job yet, no such package yet
            self._send(404, {"error": "not found"})

    def do_PUT(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(200, {"ok": True})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(400, self.REASON.encode())

    def log_message(self, *args):
        pass


def test_a_job_the_cluster_rejects_fails_with_its_reason_in_one_line(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RejectingRay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        db_path = tmp_path / "p.db"
        address = f"http://127.0.0.1:{server.server_address[1]}"
        assert cli(db_path, "cluster", "add", "picky", "--address", address).returncode == 0
        r = cli(db_path, "train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--on", "picky", "--wait",
                timeout=120)
        line = one_line(r)
        assert "cluster 'picky' rejected the job" in line and _RejectingRay.REASON in line, line
    finally:
        server.shutdown()
        server.server_close()
    import store
    from store import jobs, runs

    db = store.connect(db_path)
    [run] = runs.list_all(db)
    assert run["status"] == "failed" and _RejectingRay.REASON in (run["error"] or "")
    assert jobs.get(db, 1)["status"] == "failed"
