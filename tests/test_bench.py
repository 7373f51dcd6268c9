"""Benchmarking with only onnxruntime + numpy: the figures are real, consistent and comparable."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from core import bench, export
from core.errors import PocketopsError
from tests._export_helpers import ROOT, digits_split, exported, trained  # noqa: F401  (session fixtures)

QUICK = bench.BenchConfig(threads=1, warmup=5, repeats=60, throughput_repeats=15, loads=2)


def test_benchmark_reports_every_figure(trained, exported):  # noqa: F811
    """Load time, p50 ≤ p95, throughput, accuracy that matches the logits, agreement, ops, threads."""
    _, _, X_test, y_test = digits_split(trained.db_path)
    ref = export.onnx_logits(exported["cnn"], X_test)
    r = bench.benchmark(exported["cnn"], X_test, y_test, reference=ref, config=QUICK)
    assert r["threads"] == 1 and r["samples"] == len(X_test)
    assert r["size_bytes"] == exported["cnn"].stat().st_size
    assert 0 < r["load_ms"] < 5000
    assert 0 < r["latency_p50_ms"] <= r["latency_p95_ms"]
    assert r["repeats"] >= 20
    assert r["throughput_per_s"] > 0 and r["throughput_batch"] == 8
    assert r["accuracy"] == pytest.approx(np.mean(ref.argmax(1) == y_test), abs=1e-6)
    assert r["agreement"] == 1.0 and r["max_abs_logit_diff"] == 0.0
    assert "Conv" in r["ops_us"], "the profiler names the ops a CNN runs"


def test_isolated_benchmark_measures_memory_in_its_own_process(trained, exported):  # noqa: F811
    """In a fresh process: the model's peak memory is a plausible positive figure, not the worker's torch."""
    _, _, X_test, y_test = digits_split(trained.db_path)
    r = bench.benchmark_isolated(exported["cnn"], X_test, y_test, config=QUICK)
    assert r["isolated"] is True
    assert 0 < r["peak_memory_mb"] < 200
    assert r["process_peak_mb"] < 400, "the child process must not inherit the parent's peak"
    assert "agreement" not in r, "no reference, no agreement"


def test_wrong_input_shape_is_a_clear_error(exported):  # noqa: F811
    X = np.zeros((4, 3, 8, 8), dtype=np.float32)
    with pytest.raises(PocketopsError, match=r"expects samples of shape \[1, 8, 8\].*has \[3, 8, 8\]"):
        bench.benchmark(exported["cnn"], X, config=QUICK)
    with pytest.raises(PocketopsError, match="no such ONNX file"):
        bench.open_session(exported["cnn"].parent / "missing.onnx")


def test_unreadable_model_is_a_clear_error_from_the_child_process(tmp_path, exported):  # noqa: F811
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(PocketopsError, match="onnxruntime cannot load this model"):
        bench.benchmark_isolated(bad, np.zeros((2, 1, 8, 8), np.float32), config=QUICK)


def test_compare_latency_times_every_contender_in_turns(trained, exported):  # noqa: F811
    """Several files (and an extra callable such as torch eager) get p50/p95 from the same turns."""
    _, _, X_test, _ = digits_split(trained.db_path)
    calls = []
    timed = bench.compare_latency({"a": exported["cnn"], "b": exported["mlp"]}, X_test, QUICK,
                                  extra={"slow": lambda i: calls.append(i) or sum(range(20000))})
    assert set(timed) == {"a", "b", "slow"}
    assert timed["slow"]["latency_p50_ms"] > timed["b"]["latency_p50_ms"], "the busy loop is slower than a tiny MLP"
    assert len(calls) >= QUICK.warmup + 20
    assert "throughput_per_s" in timed["a"] and "throughput_per_s" not in timed["slow"]


def test_interleaved_rotates_who_goes_first():
    order = []
    bench.interleaved_times({"x": lambda i: order.append("x"), "y": lambda i: order.append("y")},
                            warmup=0, repeats=4, rounds=2)
    assert order == ["x", "x", "y", "y", "y", "y", "x", "x"]


def test_bench_needs_neither_torch_nor_onnx(trained, exported):  # noqa: F811
    """`pocketops bench` runs with torch and onnx unimportable (a phone with only onnxruntime)."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None; sys.modules['onnxscript'] = None\n"
        "from tui.cli import main\n"
        f"sys.exit(main(['--db', {str(trained.db_path)!r}, 'bench', {str(exported['cnn'])!r}, {str(exported['mlp'])!r}, "
        "'--dataset', 'digits', '--json']))\n"
    )
    env = {**os.environ, "POCKETOPS_HOME": str(trained.db_path.parent)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [m["name"] for m in out["models"]] == ["cnn/fp32", "mlp/fp32"], "two fp32.onnx files keep distinct names"
    assert out["reference"].endswith("cnn/fp32.onnx")
    assert all(m["latency_method"] == "interleaved" for m in out["models"])
    assert out["recommended"]["name"] in ("cnn/fp32", "mlp/fp32")
    assert out["recommended"]["name"] in out["recommended"]["reason"]


def _linear_onnx(path, n_in: int, n_out: int, *, fixed_batch: bool = False):
    """A tiny Linear model exported elsewhere (a laptop): dynamic batch axis unless ``fixed_batch``."""
    import torch

    from core import export as core_export

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_in, n_out)).eval()
    if fixed_batch:
        with core_export._quiet():
            torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, input_names=["x"])
        return path
    return core_export.export_onnx(model, (1, 8, 8), path)


def test_a_model_for_other_data_is_one_clear_error_not_a_traceback(trained, tmp_path, capsys):  # noqa: F811
    """Wrong number of classes, a fixed batch axis, the wrong input type: each named, with what to do."""
    from tui.cli import main

    db = ["--db", str(trained.db_path)]
    five = _linear_onnx(tmp_path / "five.onnx", 64, 5)
    assert main([*db, "bench", str(five), "--dataset", "digits"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "five.onnx" in err and "[5] per sample, expected [10]" in err

    fixed = _linear_onnx(tmp_path / "fixed.onnx", 64, 10, fixed_batch=True)
    assert main([*db, "bench", str(fixed), "--dataset", "digits"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fixed batch size of 1" in err and "dynamic batch axis" in err

    session = bench.open_session(five)
    with pytest.raises(PocketopsError, match=r"expects tensor\(float\) \(float32\).*int64"):
        bench.check_input(session, five, np.zeros((2, 1, 8, 8), dtype=np.int64))


def test_memory_is_read_while_serving_not_during_the_accuracy_pass(trained, exported):  # noqa: F811
    """The transformer's batch-256 accuracy pass and the profiler raise the process peak; the figure
    a user reads is what serving at batch 1 and 8 takes, and the whole-run peak is kept beside it."""
    _, _, X_test, y_test = digits_split(trained.db_path)
    r = bench.benchmark_isolated(exported["transformer"], X_test, y_test, config=QUICK)
    assert "serving" in r["memory_method"]
    assert 0 < r["peak_memory_mb"] < r["run_peak_memory_mb"] < r["process_peak_mb"]
    assert r["peak_memory_mb"] < 0.6 * r["run_peak_memory_mb"], r
