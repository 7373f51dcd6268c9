"""LTTB downsampling of chart curves: n points out, ends and peaks kept, long runs drawn like short ones."""
from __future__ import annotations

import math

from tui.widgets.chart import Series, lttb, plot


def _noisy_wave(n: int) -> list[tuple[float, float]]:
    return [(float(i), math.sin(i / (n / 12)) + 0.05 * math.sin(i * 7.3)) for i in range(n)]


def test_returns_exactly_n_points_in_x_order_with_first_and_last_kept():
    points = _noisy_wave(10_000)
    out = lttb(points, 200)
    assert len(out) == 200
    assert out[0] == points[0] and out[-1] == points[-1]
    assert [p[0] for p in out] == sorted(p[0] for p in out)
    assert set(out) <= set(points)  # picks points; never invents them


def test_keeps_isolated_peaks_and_dips_that_every_kth_point_would_drop():
    points = [(float(i), 1.0) for i in range(50_000)]
    points[12_345] = (12_345.0, 9.0)   # one spike
    points[37_001] = (37_001.0, -7.0)  # one dip
    out = lttb(points, 100)
    assert (12_345.0, 9.0) in out and (37_001.0, -7.0) in out
    every_kth = points[::len(points) // 100]
    assert max(y for _, y in every_kth) == 1.0  # the naive method loses the spike: the test discriminates


def test_short_series_and_tiny_budgets_are_returned_as_they_can_be():
    points = _noisy_wave(10)
    assert lttb(points, 10) == points and lttb(points, 50) == points
    assert lttb(points, 2) == [points[0], points[-1]]
    assert lttb(points, 1) == [points[0]] and lttb([], 5) == []


def test_a_100k_point_run_draws_the_same_shape_as_its_downsampled_curve():
    """plot() thins a long series before drawing: the same picture as drawing LTTB's points, spike included."""
    points = [(float(i), 0.5 + 0.1 * math.sin(i / 5000)) for i in range(100_000)]
    points[60_000] = (60_000.0, 3.0)
    full = plot([Series("train", points)], 40, 8)
    thinned = plot([Series("train", lttb(points, 2 * 40))], 40, 8)
    assert full.rows == thinned.rows and full.points == 100_000
    assert full.y_max == 3.0  # the spike sets the scale
    top = full.rows[0][full.gutter:]
    assert top.strip() != "" and len(top.strip()) <= 2  # the spike reaches the top row, and only it


def test_a_long_runs_curves_stay_bounded_and_keep_their_peak():
    """RunSeries thins each curve past MAX_CURVE_POINTS, polls of 5,000 points at a time as the panel reads them."""
    from tui.panels.training import MAX_CURVE_POINTS, RunSeries

    series = RunSeries(run_id=1)
    n = 100_000
    for start in range(0, n, 5000):
        series.add([{"id": i + 1, "kind": "train", "step": i + 1, "epoch": 1 + i // 10_000,
                     "loss": 5.0 if i == 43_210 else 1.0 / (1 + i / 1000), "accuracy": None}
                    for i in range(start, start + 5000)])
    assert series.cursor == n and series.last_step == n
    assert MAX_CURVE_POINTS // 2 <= len(series.train_loss) <= MAX_CURVE_POINTS
    assert series.train_loss[0] == (1.0, 1.0) and series.train_loss[-1][0] == float(n)
    assert (43_211.0, 5.0) in series.train_loss
