"""The ExecuTorch variants (``executorch-fp32``, ``executorch-int8``, XNNPACK delegate): built from the
digits CNN, measured by the one harness, registered by the export job, and refused in one line where
executorch is missing.

Tests marked ``mobile`` need executorch: they run in .venv-mobile (``make test-mobile``) and skip in
the main venv (fail there under POCKETOPS_REQUIRE_MOBILE=1). The unmarked refusal test runs where
executorch is NOT installed (the main venv) and skips where it is.
"""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import store
from core import bench, quantize, runtimes
from core.atomic import sha256_file
from core.export_job import eval_data
from store import artifacts, jobs
from store import variants as store_variants
from tests._export_helpers import clone_store, load_model, trained  # noqa: F401
from tests._mobile import available, need
from tests.test_export_cli import CONTRACT_VARIANT, cli

mobile = pytest.mark.mobile
VARIANTS = ("executorch-fp32", "executorch-int8")
# Every figure the one harness gives each variant (core.bench.benchmark, peak memory from the isolated run).
FIGURES = ("load_ms", "latency_p50_ms", "latency_p95_ms", "throughput_per_s", "accuracy", "agreement",
           "max_abs_logit_diff", "peak_memory_mb", "runtime", "batch_method")


@pytest.fixture(scope="module")
def pte(trained, tmp_path_factory):  # noqa: F811
    """Both .pte variants of the digits CNN, built once: {name: (Built, export seconds)}, plus the data."""
    need("executorch")
    data = eval_data(store.connect(trained.db_path), "digits")
    model = load_model(trained, "cnn")
    source = quantize.TorchSource(model, {}, data, list(data.X_test.shape[1:]), str(data.X_test.dtype),
                                  torch.from_numpy(data.X_test[:1]))
    out = tmp_path_factory.mktemp("pte")
    built = {}
    for name in VARIANTS:
        t0 = time.perf_counter()
        b = quantize.build_torch_variant(name, source, out / f"{name}.pte", quantize.QuantizeConfig(calibration_samples=256))
        built[name] = (b, time.perf_counter() - t0)
    with torch.no_grad():
        eager = model(torch.from_numpy(data.X_test)).numpy()
    return {"built": built, "data": data, "eager": eager, "model": model}


@mobile
@pytest.mark.parametrize("name", VARIANTS)
def test_executorch_variant_exports_with_a_dynamic_batch_and_honest_meta(pte, name, capfd):
    """Each variant is a .pte with the XNNPACK delegate doing the work, a dynamic batch axis and its build facts."""
    b, _ = pte["built"][name]
    assert b.path.suffix == ".pte" and b.path.stat().st_size > 1000
    assert b.path.read_bytes()[4:8] == b"ET12", "an ExecuTorch flatbuffer"
    from executorch.version import __version__

    assert b.meta["executorch"] == __version__ and b.meta["delegate"] == "XnnpackBackend"
    assert b.meta["runtime"] == "executorch"
    assert b.meta["batch_method"] == "native" and b.meta["dynamic_batch_max"] >= 256
    assert any(op.startswith("xnnpack:") and "convolution" in op for op in b.ops), b.ops
    assert b.meta["delegated_ops"] > b.meta["non_delegated_ops"]
    if name == "executorch-int8":
        assert b.meta["calibration_samples"] == 256 and b.meta["per_channel"] is True
        assert any("quantize_per_tensor" in op for op in b.ops), b.ops
        fp32_size = pte["built"]["executorch-fp32"][0].path.stat().st_size
        assert b.path.stat().st_size < 0.8 * fp32_size, "int8 weights make the file smaller"
    assert capfd.readouterr() == ("", ""), "nothing reached stdout or stderr"


@mobile
def test_session_runs_any_batch_and_fp32_follows_torch(pte, capfd):
    """open_session on a .pte: onnxruntime's shape, batch 1/8/all natively, fp32 within 1e-4 of torch eager."""
    b, _ = pte["built"]["executorch-fp32"]
    X = pte["data"].X_test
    session = runtimes.open_session(b.path, threads=1)
    assert session.runtime == "executorch" and session.batch_method == "native"
    assert session.threads == 1
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    assert inp.name == "input" and inp.shape == ["batch", *X.shape[1:]] and inp.type == "tensor(float)"
    assert out.shape == ["batch", 10]
    for n in (1, 8, len(X)):
        got = session.run(None, {inp.name: X[:n]})[0]
        assert got.shape == (n, 10) and got.dtype == np.float32
    got = session.run(None, {inp.name: X})[0]
    assert np.max(np.abs(got - pte["eager"])) < 1e-4
    # Past the exported bound (1024) the session runs the batch in chunks of it.
    big = np.resize(X, (1100, *X.shape[1:]))
    with torch.no_grad():
        big_eager = pte["model"](torch.from_numpy(big)).numpy()
    assert np.max(np.abs(session.run(None, {inp.name: big})[0] - big_eager)) < 1e-4
    first = session.run(None, {inp.name: X[:1]})[0]
    session.run(None, {inp.name: X[1:2]})
    np.testing.assert_array_equal(first, got[:1], "an output is not overwritten by the next call")
    assert capfd.readouterr() == ("", ""), "executorch's import and cpuinfo lines are silenced"


@mobile
def test_both_variants_measured_by_the_one_harness(pte):
    """core.bench gives each .pte every figure; int8 keeps agreement >= 0.95 and accuracy within 2 points."""
    data, eager = pte["data"], pte["eager"]
    eager_acc = float(np.mean(eager.argmax(1) == data.y_test))
    cfg = bench.BenchConfig(repeats=200, throughput_repeats=40, budget_s=2.0)
    figures = {}
    for name in VARIANTS:
        b, _ = pte["built"][name]
        r = bench.benchmark(b.path, data.X_test, data.y_test, reference=eager, config=cfg)
        iso = bench.benchmark_isolated(b.path, data.X_test, data.y_test, reference=eager, config=cfg)
        r["peak_memory_mb"] = iso["peak_memory_mb"]
        figures[name] = r
        assert all(r.get(k) is not None for k in FIGURES), r
        assert r["runtime"] == "executorch" and r["batch_method"] == "native" and r["threads"] == 1
        assert r["throughput_batch"] == 8 and r["throughput_per_s"] > 0
        assert 0 < r["latency_p50_ms"] <= r["latency_p95_ms"] and r["load_ms"] > 0
        assert iso["peak_memory_mb"] > 0 and iso["runtime"] == "executorch"
        assert "ops_us" not in r, "op profiling stays onnxruntime's"
    fp32, int8 = figures["executorch-fp32"], figures["executorch-int8"]
    assert fp32["agreement"] == 1.0 and fp32["max_abs_logit_diff"] < 1e-4
    assert fp32["accuracy"] == round(eager_acc, 6)
    assert int8["agreement"] >= 0.95, int8
    assert abs(int8["accuracy"] - eager_acc) * 100 <= 2.0, (int8["accuracy"], eager_acc)
    assert 0 < int8["max_abs_logit_diff"] < 2.0, "quantized: close, but not identical"
    for name, r in figures.items():
        b, export_s = pte["built"][name]
        print(f"{name}: size {b.path.stat().st_size} B zip {quantize.zip_size(b.path)} B export {export_s:.1f} s "
              f"load {r['load_ms']} ms p50 {r['latency_p50_ms']} ms p95 {r['latency_p95_ms']} ms "
              f"thr@8 {r['throughput_per_s']}/s acc {r['accuracy']} agree {r['agreement']} "
              f"max|dlogit| {r['max_abs_logit_diff']:.3g} peak {r['peak_memory_mb']} MB")


@mobile
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export's pytree deprecation, raised by this test's own export
def test_a_batch_one_program_runs_by_loop(pte, tmp_path):
    """A .pte made elsewhere at a fixed batch of 1 still serves any batch, one call per sample, and says so."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model = pte["model"]
    X = pte["data"].X_test
    ep = torch.export.export(model, (torch.from_numpy(X[:1]),))
    path = tmp_path / "fixed.pte"
    path.write_bytes(to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
    session = runtimes.open_session(path)
    assert session.batch_method == "loop" and session.get_inputs()[0].shape[0] == "batch"
    got = session.run(None, {"input": X[:8]})[0]
    assert got.shape == (8, 10) and np.max(np.abs(got - pte["eager"][:8])) < 1e-4


@mobile
def test_export_job_registers_and_benchmarks_the_pte_variants(trained, tmp_path):  # noqa: F811
    """`export RUN --variants fp32,executorch-fp32,executorch-int8 --wait --json`: .pte variants with every figure."""
    need("executorch")
    db_path = clone_store(trained, tmp_path)
    run_id = trained.runs["cnn"]
    proc = cli(db_path, "export", str(run_id), "--variants", "fp32,executorch-fp32,executorch-int8", "--wait", "--json",
               timeout=900)
    assert proc.returncode == 0, proc.stderr
    for noise in ("cpuinfo", "threadpool", "Failed to load", "_pytree", "Warning"):
        assert noise not in proc.stdout + proc.stderr, (noise, proc.stderr[-2000:])
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [v["name"] for v in summary["variants"]] == ["fp32", "executorch-fp32", "executorch-int8"]
    db = store.connect(db_path)
    by_name = {v["name"]: v for v in summary["variants"]}
    for name in VARIANTS:
        v = by_name[name]
        assert CONTRACT_VARIANT <= set(v) and all(v[k] is not None for k in CONTRACT_VARIANT), v
        assert v["path"].endswith(".pte") and Path(v["path"]).stat().st_size == v["size_bytes"]
        assert artifacts.by_path(db, v["path"])["sha256"] == sha256_file(v["path"])
        row = store_variants.get(db, v["variant_id"])
        assert row["status"] == "benchmarked", row
        assert row["sha256"] == sha256_file(v["path"])
        meta = row["meta"]
        assert meta["runtime"] == "executorch" and 0 < meta["zip_bytes"] <= v["size_bytes"] + 200
        assert meta["build"]["delegate"] == "XnnpackBackend" and meta["build"]["batch_method"] == "native"
        assert meta["op_types"] and any(op.startswith("xnnpack:") for op in meta["op_types"])
    fp32 = by_name["fp32"]
    assert by_name["executorch-fp32"]["agreement"] == 1.0 and by_name["executorch-fp32"]["max_abs_logit_diff"] < 1e-4
    assert by_name["executorch-int8"]["agreement"] >= 0.95
    assert abs(by_name["executorch-int8"]["accuracy"] - fp32["accuracy"]) * 100 <= 2.0
    assert summary["recommended"]["name"] in by_name


def _files(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.skipif(available("executorch"), reason="executorch is installed here; the refusal is for where it is not")
def test_export_of_executorch_variant_is_refused_in_one_line_where_it_is_missing(trained, tmp_path):  # noqa: F811
    """Main venv (no executorch): one line naming the package and --on CLUSTER; nothing queued, no files."""
    db_path = clone_store(trained, tmp_path)
    before = _files(tmp_path)
    proc = cli(db_path, "export", str(trained.runs["cnn"]), "--variants", "executorch-int8")
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "executorch" in err and "--on CLUSTER" in err, err
    assert "Traceback" not in proc.stderr and proc.stdout.strip() == ""
    assert jobs.list_jobs(store.connect(db_path)) == []
    assert store_variants.list_all(store.connect(db_path)) == []
    assert _files(tmp_path) - before <= {Path("t.db-wal"), Path("t.db-shm")}, _files(tmp_path) - before


@mobile
def test_hidden_executorch_is_refused_by_the_registry_and_the_runtime(pte, monkeypatch):
    """With executorch hidden from find_spec: torch_refusal and runtimes.require give one line naming it."""
    need("executorch")
    b, _ = pte["built"]["executorch-fp32"]
    real = importlib.util.find_spec

    def hidden(name, *args, **kwargs):
        if name == "executorch" or name.startswith("executorch."):
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", hidden)
    for name in VARIANTS:
        line = quantize.torch_refusal(["fp32", name], "cnn")
        assert line and "\n" not in line, line
        assert "executorch" in line and "--on CLUSTER" in line and name in line, line
    assert quantize.torch_refusal(["fp32", "int8-static"], "cnn") is None
    with pytest.raises(runtimes.RuntimeMissing) as err:
        runtimes.require(b.path, f"loading {b.path.name}")
    text = str(err.value)
    assert "\n" not in text and "executorch" in text and "--on CLUSTER" in text, text
    with pytest.raises(runtimes.RuntimeMissing) as err:
        bench.open_session(b.path)
    assert "\n" not in str(err.value) and "executorch" in str(err.value)
