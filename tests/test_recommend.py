"""The recommendation is a pure function of the benchmark table: crafted tables, no models."""
from __future__ import annotations

import pytest

from core.recommend import recommend

pytestmark = pytest.mark.phone  # none of these need torch or onnx (make test-phone)


def row(name, p50, acc, size, vid=None, **extra):
    return {"name": name, "variant_id": vid, "latency_p50_ms": p50, "accuracy": acc, "size_bytes": size, **extra}


FP32 = row("fp32", 0.023, 0.950, 154_000, 1, ops_us={"Conv": 15.0, "Gemm": 4.0})


def test_fastest_within_budget_wins_and_the_reason_gives_figures():
    table = [FP32, row("fp16", 0.024, 0.950, 80_000, 2), row("int8-static", 0.016, 0.946, 47_000, 4)]
    rec = recommend(table, torch_latency_p50_ms=0.135)
    assert (rec.name, rec.variant_id) == ("int8-static", 4)
    assert "fastest variant within the 1-point accuracy budget" in rec.reason
    assert "1.4× faster than fp32" in rec.reason
    assert "0.31× its size" in rec.reason
    assert "accuracy -0.4 points" in rec.reason
    assert "8.4× faster than torch eager" in rec.reason


def test_int8_that_is_slower_is_not_recommended_and_the_slow_op_is_named():
    """The issue's example: dynamic int8 with ConvInteger is ~5× slower than fp32 on this device."""
    table = [FP32, row("int8-dynamic", 0.1127, 0.950, 47_000, 3,
                       ops_us={"ConvInteger": 80.0, "DynamicQuantizeLinear": 9.0, "Gemm": 4.0})]
    rec = recommend(table)
    assert rec.name == "fp32"
    assert "int8-dynamic is 4.9× slower than fp32 on this device: ConvInteger" in rec.reason


def test_no_int8_variant_within_budget():
    table = [FP32, row("fp16", 0.023, 0.950, 80_000, 2), row("int8-dynamic", 0.015, 0.920, 47_000, 3),
             row("int8-static", 0.016, 0.900, 47_000, 4)]
    rec = recommend(table, budget_points=1.0)
    assert rec.name in ("fp32", "fp16")
    assert "int8-dynamic loses 3.0 points of accuracy (budget 1)" in rec.reason
    assert "int8-static loses 5.0 points" in rec.reason
    assert "no int8 variant is within the 1-point budget" in rec.reason
    looser = recommend(table, budget_points=3.0)
    assert looser.name == "int8-dynamic", "a larger budget admits the faster int8 variant"


def test_prefer_size_takes_the_smallest_within_budget():
    table = [FP32, row("fp16", 0.023, 0.950, 80_000, 2), row("int8-static", 0.030, 0.948, 47_000, 4),
             row("int8-dynamic", 0.020, 0.930, 40_000, 3)]
    rec = recommend(table, prefer="size")
    assert rec.name == "int8-static"
    assert rec.reason.startswith("int8-static is the smallest variant within the 1-point accuracy budget")
    assert "1.3× slower than fp32" in rec.reason


def test_equal_speed_within_noise_prefers_the_smaller_file():
    table = [FP32, row("fp16", 0.0235, 0.950, 80_000, 2)]
    rec = recommend(table)
    assert rec.name == "fp16"
    assert "as fast as fp32 (within 5%)" in rec.reason and "0.52× its size" in rec.reason


def test_zero_budget_still_admits_equal_accuracy():
    table = [FP32, row("int8-static", 0.010, 0.950, 47_000, 4), row("int8-dynamic", 0.009, 0.9499, 47_000, 3)]
    assert recommend(table, budget_points=0).name == "int8-static"


def test_nothing_measured_yet_and_unmeasured_rows_are_ignored():
    rec = recommend([row("fp32", None, None, 154_000, 1)])
    assert rec.name is None and rec.reason == "no variant has been benchmarked yet"
    rec = recommend([FP32, row("int8-static", None, None, 47_000, 4)])
    assert rec.name == "fp32"


def test_without_fp32_the_most_accurate_variant_is_the_reference():
    table = [row("custom-a", 0.02, 0.90, 100_000, 7), row("custom-b", 0.01, 0.85, 50_000, 8)]
    rec = recommend(table)
    assert rec.name == "custom-a"
    assert "custom-b loses 5.0 points" in rec.reason


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="prefer"):
        recommend([FP32], prefer="accuracy")
    with pytest.raises(ValueError, match="budget"):
        recommend([FP32], budget_points=-1)


def test_derived_rows_carry_ratios_for_the_panel():
    rec = recommend([FP32, row("int8-static", 0.0115, 0.94, 38_500, 4)])
    derived = {r["name"]: r for r in rec.rows}
    assert derived["int8-static"]["speedup"] == pytest.approx(2.0)
    assert derived["int8-static"]["size_ratio"] == pytest.approx(0.25)
    assert derived["int8-static"]["drop_points"] == pytest.approx(1.0)
    assert derived["fp32"]["eligible"] and derived["int8-static"]["eligible"]
