"""benchmarks/quantization.py's own rules: which variants it skips and why, and each runtime's fastest within the budget."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def qbench():
    spec = importlib.util.spec_from_file_location("bench_quantization", ROOT / "benchmarks" / "quantization.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quantization"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_quantization", None)


def row(name: str, runtime: str, p50: float, acc: float, size: int = 1000) -> dict:
    return {"name": name, "runtime": runtime, "latency_p50_ms": p50, "accuracy": acc, "size_bytes": size}


def test_fastest_per_runtime_keeps_to_the_budget(qbench):
    from core.recommend import Prefs

    rows = [row("fp32", "onnxruntime", 0.030, 0.95), row("int8-static", "onnxruntime", 0.020, 0.90),
            row("executorch-fp32", "executorch", 0.025, 0.95), row("executorch-int8", "executorch", 0.015, 0.948),
            row("litert-int8", "litert", 0.010, 0.92)]
    best = qbench.fastest_per_runtime(rows, Prefs(budget_points=1.0))
    # int8-static loses 5 points and litert-int8 3: neither counts; executorch-int8 loses 0.2.
    assert {k: v["name"] for k, v in best.items()} == {"onnxruntime": "fp32", "executorch": "executorch-int8"}
    wide = qbench.fastest_per_runtime(rows, Prefs(budget_points=5.0))
    assert {k: v["name"] for k, v in wide.items()} == {"onnxruntime": "int8-static", "executorch": "executorch-int8",
                                                      "litert": "litert-int8"}


def test_variants_that_cannot_be_built_here_are_skipped_with_a_reason(qbench):
    keep, skipped = qbench.available(["fp32", "int8-static", "pruned-int8"], "mlp")
    assert keep == ["fp32", "int8-static"]
    assert [name for name, _ in skipped] == ["pruned-int8"]
    assert "cnn models only" in skipped[0][1]
    keep, skipped = qbench.available(qbench.MODELS["cnn"][2], "cnn")
    assert set(keep) | {n for n, _ in skipped} == set(qbench.MODELS["cnn"][2])
    for name, why in skipped:
        assert why and "\n" not in why, name
