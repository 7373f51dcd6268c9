"""Serving and registering the app runtimes' files: a .tflite (LiteRT) and a .pte (ExecuTorch) variant
answer through the bundle's one WSGI API like the fp32 ONNX model; the static page and Cloud Run
refuse them at plan time; `models add` takes them, made elsewhere.

The tests that export and run the files are marked ``mobile`` (they need executorch and litert,
which live in .venv-mobile: ``make test-mobile``); the refusals work on crafted variant rows and
run everywhere.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

import store
from core import runtimes
from core.atomic import sha256_file
from deployers import service
from deployers.base import DeployError
from deployers.local import _alive
from store import deployments as store_deployments
from store import jobs
from store import variants as store_variants
from tests import _mobile
from tests._export_helpers import clone_store, exported, load_model, trained  # noqa: F401
from tui.cli import main

# The first 8 bytes of each kind of file: enough for the identifier check, nothing loads them.
HEADERS = {".tflite": b"\x1c\x00\x00\x00TFL3", ".pte": b"<\x00\x00\x00ET12"}


def _call(url: str, method: str, path: str, body: dict | None = None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _crafted(db, db_path: Path, suffix: str, name: str) -> int:
    """A variant row whose file has the runtime's identifier (no model behind it: refusals never load it)."""
    from core.datasets import ensure_builtin

    ensure_builtin(db, db_path)
    path = Path(db_path).parent / "models" / f"{name}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(HEADERS[suffix] + bytes(64))
    return store_variants.insert(db, name=name, path=str(path), sha256=sha256_file(path), size_bytes=path.stat().st_size,
                                 meta={"dataset": "digits", "runtime": runtimes.runtime_of(path).name})


class Tripwire:
    """A deployer that fails the test if anything reaches it (the refusal must come first)."""

    target = "tripwire"

    def __getattr__(self, name):
        raise AssertionError(f"the deployer was reached ({name}) before the refusal")


# -- refusals (crafted rows, any environment) ---------------------------------------------------

@pytest.mark.parametrize("target, why", [("spaces-static", "onnxruntime-web"), ("gcp", "numpy and onnxruntime only")])
@pytest.mark.parametrize("suffix, label", [(".tflite", "LiteRT"), (".pte", "ExecuTorch")])
def test_static_page_and_cloud_run_refuse_app_runtime_variants_at_plan_time(tmp_path, target, why, suffix, label):
    """One line naming the targets that serve it, before any bundle, row, job or network call."""
    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    vid = _crafted(db, db_path, suffix, "app")
    for attempt in (lambda: service.plan(db, vid, target, {}, deployer=Tripwire()),
                    lambda: service.deploy(db, db_path, vid, target, {}, deployer=Tripwire())):
        with pytest.raises(DeployError) as caught:
            attempt()
        message = str(caught.value)
        assert len(message.splitlines()) == 1, message
        assert f"variant {vid} (app) is {'an' if label[0] in 'AEIOU' else 'a'} {label} model ({suffix})" in message, message
        assert why in message and "--target local or --target spaces-docker" in message, message
    assert store_deployments.list_all(db) == []
    assert not (tmp_path / "t-files" / "bundles").exists()


def test_deploy_cli_refuses_a_tflite_variant_for_the_static_page_in_one_line(tmp_path, capsys):
    db_path = tmp_path / "t.db"
    vid = _crafted(store.connect(db_path), db_path, ".tflite", "lite")
    assert main(["--db", str(db_path), "deploy", str(vid), "--target", "spaces-static", "--dry-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "spaces-static cannot serve it" in err and "--target local" in err, err


def test_the_static_page_and_function_source_refuse_a_tflite_bundle(tmp_path):
    """Called directly (as the deployers' own plan and deploy do), the page and the zip refuse it too."""
    from deployers.base import Bundle
    from deployers.gcp import source_files
    from deployers.static import build_static_site

    bundle = Bundle(path=tmp_path, variant_id=1, version="v1-litert-fp32-00000000", model_json={"model_file": "model.tflite"})
    for build in (lambda: build_static_site(bundle, tmp_path / "site"), lambda: source_files(bundle)):
        with pytest.raises(DeployError, match="is a LiteRT model"):
            build()
    assert not (tmp_path / "site").exists()


def test_docker_requirements_name_the_runtime_the_model_needs():
    """The Space installs ai-edge-litert for a .tflite, executorch + CPU torch for a .pte, onnxruntime only for ONNX."""
    from deployers.cloud_common import TEMPLATES, pinned_requirements

    template = TEMPLATES / "docker" / "requirements.txt"
    reqs = {rt: [line for line in pinned_requirements(template, rt).splitlines() if line and not line.startswith("#")]
            for rt in ("onnxruntime", "litert", "executorch")}
    names = {rt: [line.split("=")[0].split(">")[0] for line in lines] for rt, lines in reqs.items()}
    assert names["onnxruntime"] == ["numpy", "onnxruntime"]
    assert names["litert"] == ["numpy", "ai-edge-litert"]
    assert names["executorch"] == ["numpy", "--extra-index-url https://download.pytorch.org/whl/cpu", "torch", "executorch"]


@pytest.mark.skipif(runtimes.missing("litert") is None, reason="LiteRT is installed here: the refusal cannot be seen")
def test_local_deploy_of_a_tflite_variant_without_litert_is_refused_in_one_line(tmp_path):
    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    vid = _crafted(db, db_path, ".tflite", "lite")
    with pytest.raises(runtimes.RuntimeMissing) as caught:
        service.deploy(db, db_path, vid, "local", {"port": 0}, deployer=Tripwire())
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"deploying variant {vid} (lite) to local needs LiteRT")
    assert "pip install 'ai-edge-litert'" in message
    assert store_deployments.list_all(db) == []


@pytest.mark.skipif(runtimes.missing("litert") is None and runtimes.missing("executorch") is None,
                    reason="LiteRT and ExecuTorch are installed here: the registration note cannot be seen")
def test_models_add_without_the_runtime_registers_with_a_one_line_note(tmp_path, capsys):
    """Where the runtime is missing the file is registered all the same (sha256, size, zip size, runtime)."""
    db_path = tmp_path / "t.db"
    src_dir = tmp_path / "laptop"
    src_dir.mkdir()
    for suffix, rt in ((".tflite", "litert"), (".pte", "executorch")):
        if runtimes.missing(rt) is None:
            continue
        src = src_dir / f"made-elsewhere{suffix}"
        src.write_bytes(HEADERS[suffix] + bytes(range(256)) * 8)
        assert main(["--db", str(db_path), "models", "add", str(src), "--dataset", "digits", "--name", rt]) == 0
        out = capsys.readouterr().out.strip()
        package = runtimes.RUNTIMES[rt].package
        assert len(out.splitlines()) == 1 and f"benchmarking or serving it needs {runtimes.RUNTIMES[rt].label} ({package})" in out
        assert main(["--db", str(db_path), "models", "add", str(src), "--dataset", "digits", "--name", rt, "--json"]) == 0
        added = _last_json(capsys.readouterr().out)
        row = store_variants.get(store.connect(db_path), added["variant_id"])
        assert row["sha256"] == sha256_file(src) and row["size_bytes"] == src.stat().st_size
        assert row["meta"]["runtime"] == rt and row["meta"]["dataset"] == "digits"
        assert 0 < row["meta"]["zip_bytes"] < src.stat().st_size  # the repeated bytes compress
        assert Path(row["path"]).suffix == suffix
        # Benchmarking it here is refused at once, in one line, before any job.
        assert main(["--db", str(db_path), "models", "bench", str(added["variant_id"])]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"needs {runtimes.RUNTIMES[rt].label}" in err and package in err, err
    assert jobs.list_jobs(store.connect(db_path)) == []


@pytest.mark.parametrize("suffix", [".tflite", ".pte"])
def test_models_add_refuses_a_file_that_is_not_what_its_suffix_says(tmp_path, capsys, suffix):
    db_path = tmp_path / "t.db"
    bad = tmp_path / f"random{suffix}"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    assert main(["--db", str(db_path), "models", "add", str(bad), "--dataset", "digits"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"random{suffix}: not a" in err and "identifier" in err, err
    assert not db_path.exists() or store_variants.list_all(store.connect(db_path)) == []


# -- the real files (mobile) ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def made_elsewhere(request, tmp_path_factory):
    """The trained digits CNN as fp32 .onnx, .tflite (litert-torch) and .pte (ExecuTorch, XNNPACK), as a laptop
    makes them with the documented calls, plus the litert-int8 variant from pocketops' own builder."""
    _mobile.need("litert")  # before training: where the stacks are absent nothing is trained for nothing
    _mobile.need("executorch")
    trained, exported = request.getfixturevalue("trained"), request.getfixturevalue("exported")  # noqa: F811
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    import litert_torch

    out = tmp_path_factory.mktemp("laptop")
    model = load_model(trained, "cnn").eval()
    example = (torch.zeros(1, 1, 8, 8),)
    with torch.no_grad():
        litert_torch.convert(model, example).export(str(out / "digits.tflite"))
        program = to_edge_transform_and_lower(torch.export.export(model, example), partitioner=[XnnpackPartitioner()])
        (out / "digits.pte").write_bytes(program.to_executorch().buffer)
    from core import quantize
    from core.export_job import eval_data

    data = eval_data(store.connect(trained.db_path), "digits")
    source = quantize.TorchSource(model, {}, data, [1, 8, 8], "float32", torch.from_numpy(data.X_test[:1]))
    int8 = quantize.build_torch_variant("litert-int8", source, out / "digits-int8.tflite").path
    return {"fp32": exported["cnn"], "litert-fp32": out / "digits.tflite", "executorch-fp32": out / "digits.pte",
            "litert-int8": int8}


@pytest.fixture(scope="module")
def registered(trained, made_elsewhere, tmp_path_factory):  # noqa: F811
    """A store with the three files added by `models add --dataset digits`: name -> variant id."""
    db_path = clone_store(trained, tmp_path_factory.mktemp("store"))
    ids = {}
    for name, path in made_elsewhere.items():
        assert main(["--db", str(db_path), "models", "add", str(path), "--dataset", "digits", "--name", name,
                     "--json"]) == 0
    db = store.connect(db_path)
    for row in store_variants.list_all(db):
        ids[row["name"]] = row["id"]
    yield db_path, ids
    for row in store_deployments.list_all(db):
        pid = (row["meta"] or {}).get("pid")
        if pid and _alive(pid):
            os.killpg(pid, signal.SIGKILL)


@pytest.mark.mobile
def test_local_deploys_of_tflite_and_pte_answer_like_the_fp32_onnx(registered):
    """Real servers on 127.0.0.1: /v1/predict gives fp32 ONNX's labels on 50 digits (the int8 .tflite: nearly all),
    /v1/model names the runtime, /v1/monitor sees the traffic."""
    from tests._deploy_helpers import digits_samples

    db_path, ids = registered
    db = store.connect(db_path)
    samples = digits_samples(50, start=300).tolist()
    answers, rows = {}, {}
    for name in ("fp32", "litert-fp32", "executorch-fp32", "litert-int8"):
        row = service.deploy(db, db_path, ids[name], "local", {"port": 0, "name": f"line-{name}"})
        assert row["status"] == "running" and row["url"].startswith("http://127.0.0.1:"), row
        rows[name] = row
        status, answers[name] = _call(row["url"], "POST", "/v1/predict", {"inputs": samples})
        assert status == 200, answers[name]
        status, model = _call(row["url"], "GET", "/v1/model")
        assert status == 200 and model["runtime"] == runtimes.runtime_of(store_variants.get(db, ids[name])["path"]).name
        status, monitor = _call(row["url"], "GET", "/v1/monitor?since=0")
        assert status == 200 and len(monitor["signals"]) >= 50, monitor  # + the deploy's own first prediction
        assert monitor["detectors"], "calibrated on the held-out split, as for an ONNX bundle"
        assert monitor["signals"][-1]["distance"] is not None
    bundles = {name: Path(rows[name]["meta"]["bundle"]) for name in rows}
    assert (bundles["litert-fp32"] / "model.tflite").is_file() and (bundles["litert-fp32"] / "runtime_tflite.py").is_file()
    assert (bundles["executorch-fp32"] / "model.pte").is_file() and (bundles["executorch-fp32"] / "runtime_pte.py").is_file()
    assert not (bundles["fp32"] / "runtime_tflite.py").exists() and (bundles["fp32"] / "runtimes.py").is_file()
    expected = answers["fp32"]
    assert len(expected["labels"]) == 50 and len(set(expected["labels"])) >= 5, "a model worth comparing"
    for name in ("litert-fp32", "executorch-fp32"):
        assert answers[name]["labels"] == expected["labels"], name
        np.testing.assert_allclose(answers[name]["probabilities"], expected["probabilities"], atol=1e-4)
    # int8 input and output, quantized inside the adapter: 0.985 agreement on the 269 test digits (docs/mobile-runtimes.md)
    agree = np.mean(np.array(answers["litert-int8"]["labels"]) == np.array(expected["labels"]))
    assert agree >= 0.9, agree
    assert not np.allclose(answers["litert-int8"]["probabilities"], expected["probabilities"], atol=1e-4), "really int8"
    for row in rows.values():
        assert service.stop(db, row["id"])["status"] == "stopped"


@pytest.mark.mobile
def test_docker_space_bundle_of_a_tflite_and_a_pte_installs_their_runtime(registered, tmp_path):
    """The staged Space: the model file by its suffix, its adapter, and requirements naming its runtime pinned here."""
    import subprocess
    import sys
    from importlib import metadata

    from tests._deploy_helpers import digits_samples
    from deployers.bundle import build_bundle
    from deployers.spaces import DockerSpaceDeployer

    db_path, ids = registered
    db = store.connect(db_path)
    want = {"litert-fp32": ("model.tflite", [f"ai-edge-litert=={metadata.version('ai-edge-litert')}"]),
            "executorch-fp32": ("model.pte", ["--extra-index-url https://download.pytorch.org/whl/cpu",
                                              f"torch=={metadata.version('torch')}",
                                              f"executorch=={metadata.version('executorch').split('+')[0]}"])}
    for name, (model_file, lines) in want.items():
        bundle = build_bundle(db, db_path, ids[name], out_dir=tmp_path / name / "bundle", register=False)
        staged = tmp_path / name / "space"
        staged.mkdir()
        DockerSpaceDeployer().stage_files(bundle, {}, staged)
        assert (staged / model_file).is_file() and (staged / "Dockerfile").is_file()
        reqs = (staged / "requirements.txt").read_text().splitlines()
        assert all(line in reqs for line in lines), reqs
        assert not any(line.startswith("onnxruntime") for line in reqs), reqs
        assert json.loads((staged / "model.json").read_text())["model_file"] == model_file
        # What the Space runs: the staged files alone (pocketops installed or not, none of it is imported).
        code = ("import sys, json; sys.path.insert(0, sys.argv[1]); from predictor import Predictor; "
                "p = Predictor(sys.argv[1]); print(json.dumps(p.predict(json.loads(sys.argv[2]))['labels'])); "
                "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('core', 'store', 'deployers'))))")
        sample = json.dumps(digits_samples(4, start=10).tolist())
        out = subprocess.run([sys.executable, "-c", code, str(staged), sample], capture_output=True, text=True,
                             cwd=tmp_path, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        labels, imported = (json.loads(line) for line in out.stdout.strip().splitlines()[-2:])
        assert len(labels) == 4 and imported == [], imported


@pytest.mark.mobile
def test_models_add_of_a_tflite_and_a_pte_then_bench_here(registered, made_elsewhere, tmp_path, capsys):
    """Added files keep their suffix, carry sha256/size/zip size/runtime, and a bench job measures them here."""
    from core.quantize import zip_size
    from core.worker import Worker

    db_path, ids = registered
    db = store.connect(db_path)
    for name, rt in (("litert-fp32", "litert"), ("executorch-fp32", "executorch")):
        row = store_variants.get(db, ids[name])
        src = made_elsewhere[name]
        assert row["sha256"] == sha256_file(src) and row["size_bytes"] == src.stat().st_size
        assert row["path"].endswith(src.suffix) and row["meta"]["runtime"] == rt
        assert row["meta"]["zip_bytes"] == zip_size(src) and row["meta"]["classes"]
    job_id = jobs.enqueue(db, "bench", {"variant_ids": [ids["litert-fp32"], ids["executorch-fp32"]]})
    assert Worker(db_path).run_one(job_id)
    assert jobs.get(db, job_id)["status"] == "done", jobs.get(db, job_id)["error"]
    for name in ("litert-fp32", "executorch-fp32"):
        measured = store_variants.get(db, ids[name])
        assert measured["status"] == "benchmarked" and measured["bench"]["latency_p50_ms"] > 0, measured
        assert measured["bench"]["accuracy"] > 0.5
    # A file that carries the identifier but no program its runtime can load: one line, nothing registered.
    fake = tmp_path / "fake.pte"
    fake.write_bytes(HEADERS[".pte"] + np.random.default_rng(1).bytes(2048))
    before = len(store_variants.list_all(db))
    capsys.readouterr()
    assert main(["--db", str(db_path), "models", "add", str(fake), "--dataset", "digits"]) == 1
    # (under capsys the runtime's own import and log lines land here too; on a terminal the adapter keeps them off)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pocketops:")]
    assert len(err) == 1 and "fake.pte" in err[0] and "cannot load" in err[0], err
    assert len(store_variants.list_all(db)) == before
