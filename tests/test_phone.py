"""The phone profile: what a Termux user has without torch and onnx (``make test-phone``).

Every test here also runs in the full venv; the ones about missing packages make torch and onnx
unimportable in their subprocess (a no-op in the phone venv, where they are absent anyway).
The ONNX model is committed (tests/fixtures/digits-mlp.onnx, made by scripts/make_phone_fixture.py
on a laptop), as a Termux user would copy one over.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import store
from core.datasets import BUILTIN_FILE, ensure_builtin
from deployers.local import _alive
from store import deployments as store_deployments
from store import jobs

pytestmark = pytest.mark.phone
ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "digits-mlp.onnx"
# Made unimportable in the missing-package tests (sys.modules[name] = None raises ImportError).
HEAVY = ("torch", "onnx", "onnxscript", "onnxconverter_common")

CLI = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
from tui.cli import main
sys.exit(main({argv!r}))
"""


def cli(home: Path, *argv: str, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``pocketops ARGV`` in a fresh process on ``home``; never a traceback, whatever the outcome."""
    env = {k: v for k, v in os.environ.items() if k != "POCKETOPS_API_KEY"}
    env["POCKETOPS_HOME"] = str(home)
    proc = subprocess.run([sys.executable, "-c", CLI.format(blocked=blocked, argv=list(argv))], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def home(tmp_path):
    """A home with the built-in digits dataset; any local server started in it is killed afterwards."""
    home = tmp_path / "home"
    db_path = home / "pocketops.db"
    db = store.connect(db_path)
    ensure_builtin(db, db_path)
    yield home
    for row in store_deployments.list_all(db):
        pid = row["meta"].get("pid")
        if pid and _alive(pid):
            os.killpg(pid, signal.SIGKILL)


def test_the_committed_model_needs_no_onnx_to_load():
    """The fixture is a real trained digits model: onnxruntime alone loads and runs it."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(FIXTURE), providers=["CPUExecutionProvider"])
    with np.load(BUILTIN_FILE) as data:
        x = data["images"][:4].astype(np.float32)[:, None] / np.float32(16)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (4, 10)


def test_datasets_add_list_show(home, tmp_path):
    """A CSV becomes a dataset; list and show describe it (numpy + sqlite only)."""
    rows = ["a,b,label"] + [f"{i % 7},{(i * 3) % 5},{'yes' if i % 2 else 'no'}" for i in range(40)]
    (tmp_path / "small.csv").write_text("\n".join(rows) + "\n")
    added = last_json(cli(home, "datasets", "add", str(tmp_path / "small.csv"), "--name", "small", "--json"))
    assert (added["name"], added["kind"], added["rows"], added["classes"]) == ("small", "csv", 40, ["no", "yes"])
    listed = last_json(cli(home, "datasets", "list", "--json"))
    assert {d["name"] for d in listed["datasets"]} == {"digits", "small"}
    shown = last_json(cli(home, "datasets", "show", "small", "--json"))
    assert shown["class_counts"] == [20, 20] and shown["input_shape"] == [2]


def _add_fixture(home: Path) -> int:
    added = last_json(cli(home, "models", "add", str(FIXTURE), "--dataset", "digits", "--name", "fp32", "--json"))
    assert added["dataset"] == "digits" and added["size_bytes"] == FIXTURE.stat().st_size
    return added["variant_id"]


def test_models_add_and_bench_an_onnx_file_made_elsewhere(home):
    """`models add` checks the file against digits; `models bench` measures it on this device."""
    variant_id = _add_fixture(home)
    result = last_json(cli(home, "models", "bench", str(variant_id), "--json"))
    (measured,) = result["variants"]
    assert measured["variant_id"] == variant_id and measured["status"] == "benchmarked"
    assert 0 < measured["latency_p50_ms"] <= measured["latency_p95_ms"]
    assert measured["accuracy"] > 0.6, "a trained model, not noise (the generator printed 0.83 on the test split)"
    listed = last_json(cli(home, "models", "list", "--json"))["models"]
    assert [(m["variant_id"], m["status"]) for m in listed] == [(variant_id, "benchmarked")]


def _post(url: str, path: str, body: dict) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    assert host == "127.0.0.1"
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def test_a_local_deployment_serves_predictions(home):
    """Deploy the registered model to the local target and predict over HTTP on 127.0.0.1; then stop it."""
    variant_id = _add_fixture(home)
    deployed = last_json(cli(home, "deploy", str(variant_id), "--target", "local", "--port", "0", "--json"))
    assert (deployed["target"], deployed["status"]) == ("local", "running")
    with np.load(BUILTIN_FILE) as data:
        images, labels = data["images"][-64:], data["labels"][-64:]
    status, got = _post(deployed["url"], "/v1/predict", {"inputs": images.astype(np.float32)[:, None].tolist()})
    assert status == 200, got
    assert len(got["labels"]) == 64
    hits = np.mean([int(p) == int(t) for p, t in zip(got["labels"], labels)])
    assert hits > 0.6, f"served predictions match the digits ({hits:.2f}): the bundle scales pixels as in training"
    stopped = last_json(cli(home, "deployments", "stop", str(deployed["deployment_id"]), "--yes", "--json"))
    assert stopped["status"] == "stopped"


def test_train_fails_at_once_naming_torch_and_the_ways_forward(home):
    """Without torch, `train` exits 1 before queuing anything, with one line: the package, Termux pkg, a laptop."""
    t0 = time.monotonic()
    proc = cli(home, "train", "--dataset", "digits", "--model", "mlp", "--wait", blocked=HEAVY)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("pocketops: training needs the Python package 'torch==2.13.0'")
    assert "pkg install python-torch" in line and "laptop" in line
    assert "--on" not in line, "no cluster option exists yet"
    assert jobs.list_jobs(store.connect(home / "pocketops.db")) == [], "nothing queued that could only fail"
    assert elapsed < 60


def test_export_fails_at_once_naming_onnx_and_the_laptop(home):
    """Without onnx (no Termux build exists), `export` exits 1 with one line saying to export on a laptop."""
    proc = cli(home, "export", "1", "--wait", blocked=HEAVY)
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("pocketops: ONNX export needs the Python package 'onnx'")
    assert "no Termux build" in line and "laptop" in line and "pocketops models add" in line
    assert "--on" not in line
    assert jobs.list_jobs(store.connect(home / "pocketops.db")) == []


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("size", [(40, 20), (120, 40)], ids=["40x20", "120x40"])
async def test_the_dashboard_opens_and_every_panel_renders(home, size):
    """Every panel is shown, polls the store at least once and renders, with no error toast."""
    from tui import panels as panel_registry
    from tui.app import make_app
    from tui.widgets.polling import PollingPanel

    _add_fixture(home)
    app = make_app(home / "pocketops.db", poll_interval=0.2, sample_device=False)
    async with app.run_test(size=size) as pilot:
        deadline = time.monotonic() + 30
        while not app.ready:
            assert time.monotonic() < deadline, "the store was not set up in time"
            await pilot.pause(0.05)
        infos = panel_registry.discover()
        assert [i.name for i in infos][:2] == ["datasets", "training"]
        for info in infos:
            await app.action_show_panel(info.name)
            panel = app.current_panel
            assert panel.id == info.widget_id
            if isinstance(panel, PollingPanel):
                start = panel.polls
                deadline = time.monotonic() + 30
                while panel.polls <= start:
                    assert time.monotonic() < deadline, f"{info.name} did not poll"
                    await pilot.pause(0.05)
            await pilot.pause()
            assert panel.region.width > 0 and panel.region.height > 0, f"{info.name} has no room"
            assert any(w.region.area > 0 for w in panel.query("*")), f"{info.name} shows nothing"
            assert app.export_screenshot().startswith("<svg"), "the whole screen renders"
        errors = [message for severity, message in app.notices if severity == "error"]
        assert errors == []
