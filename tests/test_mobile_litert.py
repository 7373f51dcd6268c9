"""The LiteRT (TFLite) variants ``litert-fp32`` and ``litert-int8`` of the digits CNN: built with
litert-torch, run on ai-edge-litert, measured by the one harness (core.bench), registered by the
export job — and refused in one line where the exporter or the runtime is missing.

Tests marked ``mobile`` need .venv-mobile (``make test-mobile``); the refusal test that is not
marked runs in the main venv, where litert is absent.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import store
from core import bench, quantize, runtimes
from core.atomic import sha256_file
from store import artifacts, jobs
from store import variants as store_variants
from tests._export_helpers import ROOT, clone_store, load_model, trained  # noqa: F401
from tests._mobile import available, need
from tests.test_export_cli import CONTRACT_VARIANT, cli

LITERT = ("litert-fp32", "litert-int8")
# The harness's figures every variant must carry (the CLI's contract plus throughput and memory).
FIGURES = ("load_ms", "latency_p50_ms", "latency_p95_ms", "throughput_per_s", "accuracy", "agreement",
           "max_abs_logit_diff", "peak_memory_mb")
QUICK = bench.BenchConfig(repeats=60, throughput_repeats=15, loads=2, budget_s=1.0, profile=False)


def _source(trained):  # noqa: F811  (the fixture's value, passed in)
    from core.export_job import eval_data

    data = eval_data(store.connect(trained.db_path), "digits")
    model = load_model(trained, "cnn")
    return quantize.TorchSource(model, {}, data, list(data.X_test.shape[1:]), str(data.X_test.dtype),
                                torch.from_numpy(data.X_test[:1])), model, data


def _trained(request):
    """The session's trained store, asked for only after the skip checks (training costs seconds)."""
    return request.getfixturevalue("trained")


@pytest.fixture(scope="module")
def built(request, tmp_path_factory):
    """Both LiteRT variants of the trained digits CNN, built once for this module, plus the torch logits."""
    need("litert")
    source, model, data = _source(_trained(request))
    out = tmp_path_factory.mktemp("litert")
    files = {name: quantize.build_torch_variant(name, source, out / f"{name}.tflite", quantize.QuantizeConfig())
             for name in LITERT}
    with torch.no_grad():
        eager = model(torch.from_numpy(data.X_test)).numpy()
    return files, eager, data


@pytest.mark.mobile
def test_each_litert_variant_is_a_real_tflite_file_with_what_was_decided(built):
    """Flatbuffers with TFLite's identifier; versions, op counts and (int8) the I/O quantization recorded."""
    files, _, _ = built
    for name, b in files.items():
        assert b.name == name and b.path.suffix == ".tflite"
        assert b.path.read_bytes()[4:8] == b"TFL3", f"{name}: a TFLite flatbuffer"
        assert b.meta["litert_torch"] and b.meta["ai_edge_litert"] and b.meta["runtime"] == "litert"
        assert b.ops.get("CONV_2D", 0) + b.ops.get("DEPTHWISE_CONV_2D", 0) >= 2, b.ops
        assert b.ops.get("FULLY_CONNECTED") == 2, b.ops
    meta = files["litert-int8"].meta
    assert meta["calibration_samples"] == quantize.QuantizeConfig().calibration_samples
    assert meta["input_quantization"]["dtype"] == meta["output_quantization"]["dtype"] == "int8"
    assert meta["input_quantization"]["scale"] > 0 and meta["output_quantization"]["scale"] > 0
    assert "QUANTIZE" not in files["litert-int8"].ops and "DEQUANTIZE" not in files["litert-int8"].ops, \
        "full-integer: no float islands inside"
    # ~10 kB of the tiny CNN's files is the flatbuffer's own (names, signatures): int8 saves less than 4x here
    assert files["litert-int8"].path.stat().st_size < 0.75 * files["litert-fp32"].path.stat().st_size


@pytest.mark.mobile
def test_sessions_follow_torch_eager_and_hide_int8_io(built):
    """open_session: float32 in and out at any batch size; fp32 within 1e-4 of torch, int8 close enough."""
    files, eager, data = built
    X, y = data.X_test, data.y_test
    got = {}
    for name, b in files.items():
        session = runtimes.open_session(b.path, threads=1)
        assert session.runtime == "litert"
        inp, out = session.get_inputs()[0], session.get_outputs()[0]
        assert inp.shape == ["batch", *X.shape[1:]] and inp.type == out.type == "tensor(float)"
        assert out.shape == ["batch", eager.shape[1]]
        whole = session.run(None, {inp.name: X})[0]
        assert whole.dtype == np.float32 and whole.shape == eager.shape
        assert session.batch_method in ("resized", "loop")
        ones = np.concatenate([session.run(None, {inp.name: X[i:i + 1]})[0] for i in range(len(X))])
        np.testing.assert_array_equal(ones, whole)  # a batch answers as its samples do one by one
        got[name] = whole
    assert np.max(np.abs(got["litert-fp32"] - eager)) < 1e-4
    agreement = np.mean(got["litert-int8"].argmax(1) == eager.argmax(1))
    assert agreement >= 0.95, agreement
    acc_fp32, acc_int8 = np.mean(eager.argmax(1) == y), np.mean(got["litert-int8"].argmax(1) == y)
    assert abs(acc_int8 - acc_fp32) <= 0.02, (acc_fp32, acc_int8)
    diff, spread = float(np.max(np.abs(got["litert-int8"] - eager))), float(np.ptp(eager))
    assert 0 < diff < 0.15 * spread, ("int8 differs from fp32, but not wildly", diff, spread)


@pytest.mark.mobile
def test_the_session_runs_without_torch_or_pocketops(built, tmp_path):
    """What a deploy bundle has: runtime_tflite.py alone, numpy and ai-edge-litert; torch blocked, no core on the path."""
    files, _, data = built
    np.save(tmp_path / "x.npy", data.X_test[:16])
    code = textwrap.dedent(f"""
        import importlib.util, json, sys
        sys.modules["torch"] = None  # importing torch now fails
        import numpy as np
        spec = importlib.util.spec_from_file_location("runtime_tflite", {str(ROOT / "core" / "runtime_tflite.py")!r})
        mod = sys.modules["runtime_tflite"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        x = np.load("x.npy")
        out = {{}}
        for path in sys.argv[1:]:
            session = mod.TfliteSession(path, 1)
            out[path] = session.run(None, {{session.get_inputs()[0].name: x}})[0].tolist()
        assert not any(m == "core" or m.startswith(("core.", "store", "tui")) for m in sys.modules), "pocketops imported"
        print(json.dumps(out))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    paths = [str(b.path) for b in files.values()]
    proc = subprocess.run([sys.executable, "-c", code, *paths], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", "LiteRT's C++ lines stay off stderr: " + proc.stderr
    got = json.loads(proc.stdout)
    for path in paths:
        here = runtimes.open_session(path).run(None, {"x": data.X_test[:16]})[0]
        np.testing.assert_array_equal(np.array(got[path], dtype=np.float32), here)


@pytest.mark.mobile
def test_the_one_harness_measures_both_litert_variants(built):
    """core.bench.benchmark in this process and benchmark_isolated in a fresh one: every figure present."""
    files, eager, data = built
    X, y = data.X_test, data.y_test
    for name, b in files.items():
        here = bench.benchmark(b.path, X, y, reference=eager, config=QUICK)
        isolated = bench.benchmark_isolated(b.path, X, y, reference=eager, config=QUICK)
        for figures in (here, isolated):
            assert figures["runtime"] == "litert" and figures["batch_method"] in ("resized", "loop")
            missing = [k for k in FIGURES if figures.get(k) is None]
            assert not missing, (name, missing, figures)
            assert figures["throughput_batch"] == 8 and figures["throughput_per_s"] > 0
            assert figures["latency_p95_ms"] >= figures["latency_p50_ms"] > 0 and figures["load_ms"] > 0
            assert "ops_us" not in figures  # the op profiler is onnxruntime's own
        assert isolated["peak_memory_mb"] > 0
        assert isolated["accuracy"] == here["accuracy"] == round(float(np.mean(
            runtimes.open_session(b.path).run(None, {"x": X})[0].argmax(1) == y)), 6)
        if name == "litert-fp32":
            assert isolated["agreement"] == 1.0 and isolated["max_abs_logit_diff"] < 1e-4
        else:
            assert isolated["agreement"] >= 0.95 and 0 < isolated["max_abs_logit_diff"] < 0.15 * float(np.ptp(eager))


@pytest.mark.mobile
def test_export_job_registers_and_benchmarks_the_tflite_variants(request, tmp_path):
    """`export RUN --variants fp32,litert-fp32,litert-int8 --wait --json`: .tflite variants like the others."""
    need("litert")
    trained = _trained(request)  # noqa: F811
    db_path = clone_store(trained, tmp_path)
    proc = cli(db_path, "export", str(trained.runs["cnn"]), "--variants", "fp32,litert-fp32,litert-int8",
               "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "XNNPACK" not in proc.stdout + proc.stderr and "[START]" not in proc.stdout + proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [v["name"] for v in summary["variants"]] == ["fp32", "litert-fp32", "litert-int8"]
    db = store.connect(db_path)
    fp32 = summary["variants"][0]
    for v in summary["variants"][1:]:
        assert CONTRACT_VARIANT <= set(v) and all(v[k] is not None for k in CONTRACT_VARIANT), v
        assert v["throughput_per_s"] > 0 and v["peak_memory_mb"] is not None
        assert v["path"].endswith(".tflite") and Path(v["path"]).stat().st_size == v["size_bytes"]
        art = artifacts.by_path(db, v["path"])
        assert art["sha256"] == sha256_file(v["path"]) and art["kind"] == "tflite"
        row = store_variants.get(db, v["variant_id"])
        assert row["status"] == "benchmarked" and row["sha256"] == art["sha256"]
        assert row["meta"]["runtime"] == "litert" and row["bench"]["runtime"] == "litert"
        assert 0 < row["meta"]["zip_bytes"] <= row["size_bytes"] + 512
        assert row["meta"]["build"]["litert_torch"] and row["meta"]["op_types"]
    fp32_lt, int8_lt = summary["variants"][1:]
    assert fp32_lt["agreement"] == 1.0 and fp32_lt["max_abs_logit_diff"] < 1e-4
    assert fp32_lt["accuracy"] == fp32["accuracy"]
    assert int8_lt["agreement"] >= 0.95 and abs(int8_lt["accuracy"] - fp32["accuracy"]) <= 0.02
    assert int8_lt["size_bytes"] < 0.75 * fp32_lt["size_bytes"]
    int8_row = store_variants.get(db, int8_lt["variant_id"])
    assert int8_row["meta"]["build"]["input_quantization"]["dtype"] == "int8"


def _assert_refused_cleanly(proc, db_path: Path, tmp_path: Path) -> None:
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "litert-torch" in err and "ai-edge-litert" in err and "--on CLUSTER" in err, err
    assert "Traceback" not in err and proc.stdout.strip() == ""
    assert jobs.list_jobs(store.connect(db_path)) == []
    made = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith("t.db")]
    assert made == [], made


def test_litert_variants_are_refused_in_one_line_where_litert_is_absent(request, tmp_path):
    """The main venv (no litert): `export RUN --variants litert-int8` names both packages and --on CLUSTER."""
    if available("litert"):
        pytest.skip("litert-torch is installed here; test_refusal_when_litert_is_hidden covers this venv")
    trained = _trained(request)  # noqa: F811
    db_path = clone_store(trained, tmp_path)
    proc = cli(db_path, "export", str(trained.runs["cnn"]), "--variants", "litert-int8")
    _assert_refused_cleanly(proc, db_path, tmp_path)


HIDDEN = ("litert_torch", "ai_edge_litert")


@pytest.mark.mobile
def test_refusal_when_litert_is_hidden(request, tmp_path, monkeypatch):
    """Installed but hidden: the variant refusal and the runtime refusal are one line naming the package."""
    need("litert")
    trained = _trained(request)  # noqa: F811
    real = importlib.util.find_spec

    def hiding(name, *args, **kwargs):
        if name.split(".")[0] in HIDDEN:
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", hiding)
    line = quantize.torch_refusal(["fp32", "litert-int8"], "cnn")
    assert line is not None and "\n" not in line
    assert "litert-torch" in line and "ai-edge-litert" in line and "--on CLUSTER" in line, line
    assert quantize.torch_refusal(["fp32", "int8-static"], "cnn") is None, "ONNX variants are not refused"
    tflite = tmp_path / "made-elsewhere.tflite"
    tflite.write_bytes(b"TFL3 is not needed: the runtime is refused before the file is read")
    for opening in (lambda: runtimes.require(tflite, "loading made-elsewhere.tflite"),
                    lambda: runtimes.open_session(tflite, 1), lambda: bench.open_session(tflite, 1)):
        with pytest.raises(runtimes.RuntimeMissing) as info:
            opening()
        message = str(info.value)
        assert "\n" not in message and "ai-edge-litert" in message and "--on CLUSTER" in message, message
    monkeypatch.undo()
    # The CLI in a process where both are hidden: the same line, nothing queued, no files.
    (tmp_path / "store").mkdir()
    db_path = clone_store(trained, tmp_path / "store")
    proc = cli(db_path, "export", str(trained.runs["cnn"]), "--variants", "litert-int8",
               prelude="".join(f"sys.modules[{m!r}] = None\n" for m in HIDDEN))
    _assert_refused_cleanly(proc, db_path, tmp_path / "store")
