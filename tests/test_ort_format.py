"""The ``ort-format`` variant: ONNX Runtime's mobile ``.ort`` file, built, measured and registered like the others."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import store
from core import export, quantize
from core.atomic import sha256_file
from core.worker import Worker
from store import artifacts, jobs
from store import variants as store_variants
from tests._export_helpers import clone_store, digits_split, exported, load_model, trained  # noqa: F401
from tests.test_export_cli import CONTRACT_VARIANT, cli
from tui.cli import main


def test_ort_format_of_the_digits_cnn_loads_and_predicts_like_fp32(trained, exported, tmp_path):  # noqa: F811
    """The .ort file loads in onnxruntime and gives fp32's logits (the same graph, optimized once)."""
    _, _, X_test, y_test = digits_split(trained.db_path)
    built = quantize.build("ort-format", exported["cnn"], tmp_path / "ort-format.ort")
    assert built.path.suffix == ".ort" and built.path.read_bytes()[4:8] == b"ORTM", "a flatbuffer with ORT's identifier"
    ref = export.onnx_logits(exported["cnn"], X_test)
    got = export.onnx_logits(built.path, X_test)
    assert got.shape == ref.shape
    assert np.max(np.abs(got - ref)) < 1e-4
    with torch.no_grad():
        eager = load_model(trained, "cnn")(torch.from_numpy(X_test)).numpy()
    assert np.max(np.abs(got - eager)) < 1e-3
    assert np.mean(got.argmax(1) == ref.argmax(1)) == 1.0
    assert built.meta["format"] == "ORT" and "NchwcTransformer" in built.meta["disabled_optimizers"]
    ops = quantize.ops_of(built)
    assert any("Conv" in op for op in ops), ops


def test_export_job_with_ort_format_registers_and_benchmarks_it(trained, tmp_path):  # noqa: F811
    """`export RUN --variants fp32,ort-format --wait --json`: the .ort variant has every figure the others have."""
    db_path = clone_store(trained, tmp_path)
    run_id = trained.runs["cnn"]
    proc = cli(db_path, "export", str(run_id), "--variants", "fp32,ort-format", "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [v["name"] for v in summary["variants"]] == ["fp32", "ort-format"]
    fp32, ort_file = summary["variants"]
    assert CONTRACT_VARIANT <= set(ort_file) and all(ort_file[k] is not None for k in CONTRACT_VARIANT), ort_file
    assert ort_file["path"].endswith(".ort")
    db = store.connect(db_path)
    assert artifacts.by_path(db, ort_file["path"])["sha256"] == sha256_file(ort_file["path"])
    assert ort_file["agreement"] == 1.0 and ort_file["max_abs_logit_diff"] < 1e-4
    assert ort_file["accuracy"] == fp32["accuracy"]
    row = store_variants.get(db, ort_file["variant_id"])
    assert row["status"] == "benchmarked" and row["meta"]["op_types"], row["meta"]
    assert summary["recommended"]["name"] in ("fp32", "ort-format")
    # Deployed, the bundle keeps the .ort extension and its predictor answers as fp32's does.
    from deployers.bundle import build_bundle
    from deployers.runtime.predictor import Predictor
    from tests._deploy_helpers import digits_samples

    bundles = {v["name"]: build_bundle(db, db_path, v["variant_id"]) for v in (fp32, ort_file)}
    assert (bundles["ort-format"].path / "model.ort").is_file()
    assert not (bundles["ort-format"].path / "model.onnx").exists()
    raw = digits_samples(16).tolist()
    got = {name: np.array(Predictor(b.path).predict(raw)["probabilities"]) for name, b in bundles.items()}
    np.testing.assert_allclose(got["ort-format"], got["fp32"], atol=1e-5)


def test_the_recommendation_can_pick_ort_format():
    """Measured faster than fp32 (beyond the tie margin), the .ort file is the pick and the reason says so."""
    from core.recommend import recommend

    rows = [{"name": "fp32", "latency_p50_ms": 0.30, "accuracy": 0.95, "size_bytes": 100_000},
            {"name": "ort-format", "latency_p50_ms": 0.20, "accuracy": 0.95, "size_bytes": 101_000}]
    rec = recommend(rows, prefer="latency")
    assert rec.name == "ort-format" and "1.5× faster than fp32" in rec.reason


def test_models_add_of_an_ort_file_then_bench(trained, exported, tmp_path, capsys):  # noqa: F811
    """An .ort file made elsewhere is registered with its extension kept (onnxruntime tells the format by it) and measured."""
    db_path = clone_store(trained, tmp_path)
    src = quantize.build("ort-format", exported["cnn"], tmp_path / "phone.ort").path
    assert main(["--db", str(db_path), "models", "add", str(src), "--dataset", "digits", "--name", "laptop-ort",
                 "--json"]) == 0
    added = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert added["path"].endswith(".ort") and added["sha256"] == sha256_file(src)
    db = store.connect(db_path)
    job_id = jobs.enqueue(db, "bench", {"variant_ids": [added["variant_id"]]})
    assert Worker(db_path).run_one(job_id)
    assert jobs.get(db, job_id)["status"] == "done"
    measured = store_variants.get(db, added["variant_id"])
    assert measured["status"] == "benchmarked" and measured["bench"]["latency_p50_ms"] > 0
    assert measured["bench"]["accuracy"] > 0.5


def test_missing_ort_converter_is_refused_at_once_in_one_line(trained, tmp_path):  # noqa: F811
    """An onnxruntime without its tools (a minimal build) refuses ort-format before a job exists."""
    db_path = clone_store(trained, tmp_path)
    proc = cli(db_path, "export", str(trained.runs["cnn"]), "--variants", "fp32,ort-format",
               prelude="sys.modules['onnxruntime.tools.convert_onnx_models_to_ort'] = None")
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "ORT-format converter" in err and "models add" in err, err
    assert jobs.list_jobs(store.connect(db_path)) == []
