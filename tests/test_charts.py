"""Pure renderers of the dashboard: braille curves, bars, class balance, digit previews, device strip."""
from __future__ import annotations

import math

import pytest

from tui.panels.training import RunSeries, run_cells, summary_text
from tui.widgets.bars import balance_lines, bar
from tui.widgets.chart import Series, fmt_value, plot
from tui.widgets.device import device_line
from tui.widgets.preview import preview_text, shade_lines, side_by_side

pytestmark = pytest.mark.phone  # none of these need torch or onnx (make test-phone)


def _body(result, row):
    return result.rows[row][result.gutter:]


def test_falling_curve_starts_top_left_and_ends_bottom_right():
    """A decreasing loss is drawn from the top-left corner to the bottom-right one."""
    result = plot([Series("loss", [(i, 2.0 * math.exp(-i / 5)) for i in range(30)])], 30, 6)
    assert _body(result, 0)[0] != " "
    assert _body(result, 5)[-1] != " "
    assert _body(result, 0)[-1] == " " and _body(result, 5)[0] == " "
    assert result.rows[0].split("│")[0].strip() == "2"
    assert result.rows[-1].split("│")[0].strip() == fmt_value(result.y_min)


def test_two_points_are_joined_by_a_continuous_line():
    """Points far apart are connected: every plot column between them holds a dot."""
    result = plot([Series("a", [(0, 0.0), (100, 1.0)])], 21, 5, axis=False)
    columns = ["".join(row[c] for row in result.rows) for c in range(21)]
    assert all(col.strip() for col in columns)


def test_series_keep_their_own_owner_for_colouring():
    """Cells drawn by the second series are attributed to it (so it gets its own colour)."""
    result = plot([Series("train", [(0, 0.0), (10, 0.0)]), Series("val", [(0, 1.0), (10, 1.0)])], 12, 4,
                  y_range=(0, 1), axis=False)
    assert set(result.owners[0]) == {1}
    assert set(result.owners[-1]) == {0}
    assert result.legend == ["train 0", "val 1"]


def test_fixed_range_pins_values_outside_it_to_the_edge():
    """With y fixed to 0–1, a value of 3 is drawn on the top row, not off the chart."""
    result = plot([Series("acc", [(0, 3.0), (1, 3.0)])], 10, 4, y_range=(0, 1), axis=False)
    assert result.rows[0].strip() and not "".join(result.rows[1:]).strip()


def test_empty_and_single_point_series_render_without_error():
    """No data draws an empty frame; one point draws one dot; NaN is skipped."""
    empty = plot([Series("loss", [])], 20, 4)
    assert len(empty.rows) == 4 and all(len(r) == 20 for r in empty.rows)
    assert empty.points == 0 and empty.legend == ["loss –"]
    one = plot([Series("loss", [(5, 0.7), (6, float("nan"))])], 20, 4)
    assert one.points == 1
    assert sum(ch != " " for row in one.rows for ch in row[one.gutter:]) == 1


@pytest.mark.parametrize("value,text", [(0, "0"), (2.3456, "2.35"), (0.5, "0.5"), (1234, "1.23k"), (0.0012, "1.2e-03")])
def test_axis_labels_are_short(value, text):
    """Axis labels have three significant digits at most."""
    assert fmt_value(value) == text


def test_bar_fills_in_eighths_and_keeps_its_width():
    """Bars are exact to an eighth of a cell and always pad to the requested width."""
    assert bar(0.5, 10) == "█████     "
    assert bar(0.55, 4) == "██▎ "
    assert bar(1.7, 3) == "███" and bar(-1, 3) == "   " and bar(float("nan"), 2) == "  "


def test_class_balance_scales_to_the_largest_class_and_shows_shares():
    """The biggest class gets a full bar; counts and shares are printed."""
    lines = balance_lines(["cat", "dog"], [30, 10], 40)
    assert len(lines) == 2 and all(len(l) <= 40 for l in lines)
    assert lines[0].count("█") == 26  # 40 columns minus label, count and share
    assert lines[1].startswith("dog ████████▋ ")  # 10/30 of 26 cells = 8 5/8
    assert lines[0].endswith("30  75%") and lines[1].endswith("10  25%")


def test_class_balance_summarises_classes_beyond_the_limit():
    """With more classes than rows, the largest stay and the rest are summed."""
    lines = balance_lines([str(i) for i in range(20)], list(range(1, 21)), 40, max_rows=5)
    assert len(lines) == 5 and lines[-1] == f"+16 more classes, {sum(range(1, 17))} rows"


def test_digit_preview_is_legible_block_art():
    """An 8×8 image becomes 8 lines of 16 characters: 0 is blank, 1 is a full block."""
    image = [[0.0] * 8 for _ in range(8)]
    for i in range(8):
        image[i][3] = image[i][4] = 1.0  # a vertical stroke: a "1"
    image[0][0] = 0.5
    lines = shade_lines(image)
    assert len(lines) == 8 and all(len(l) == 16 for l in lines)
    assert all(l[6:10] == "████" for l in lines)
    assert lines[0][:2] == "▒▒" and lines[1][:2] == "  "


def test_preview_scales_unnormalised_and_shrinks_large_images():
    """0–16 pixel values are scaled; a 32×32 image is averaged down to fit 16×8 characters."""
    assert shade_lines([[0, 16], [16, 0]]) == ["  ██", "██  "]
    big = shade_lines([[1.0] * 32 for _ in range(32)])
    assert len(big) <= 8 and all(len(l) <= 16 for l in big)


def test_images_side_by_side_only_as_many_as_fit():
    """Preview samples go side by side while they fit the width, the rest are left out."""
    sample = {"label": "7", "image": [[1.0] * 8 for _ in range(8)]}
    wide = preview_text([sample] * 3, 80).splitlines()
    narrow = preview_text([sample] * 3, 44).splitlines()  # 3 × 16 + 2 gaps = 52 columns do not fit
    assert wide[0].count("label: 7") == 3 and narrow[0].count("label: 7") == 2
    assert max(len(l) for l in narrow) <= 44
    assert side_by_side([["ab", "c"], ["d"]], gap=1) == ["ab d", "c"]


def test_unknown_device_values_read_unknown():
    """Telemetry the device does not give shows as 'unknown', never as 0 or None."""
    line = device_line({"cpu_percent": None, "ram_used_mb": None, "ram_total_mb": None,
                        "battery_percent": None, "charging": None, "temperature_c": None})
    assert line == "CPU unknown  RAM unknown  Battery unknown  Temp unknown"
    assert device_line(None) == line
    known = device_line({"cpu_percent": 12.4, "ram_used_mb": 2048, "ram_total_mb": 8192,
                         "battery_percent": 81, "charging": 1, "temperature_c": 36.6})
    assert known == "CPU 12%  RAM 2.0/8.0 GB  Battery 81% charging  Temp 37°C"


def test_run_series_grows_by_cursor_and_places_validation_at_epoch_end():
    """Points already seen are ignored; a val point sits at the last train step of its epoch."""
    series = RunSeries(run_id=1)
    pts = [{"id": 1, "kind": "train", "step": 10, "epoch": 1, "loss": 2.0, "accuracy": 0.2, "samples_per_s": 500.0},
           {"id": 2, "kind": "train", "step": 20, "epoch": 1, "loss": 1.0, "accuracy": 0.5, "samples_per_s": 510.0},
           {"id": 3, "kind": "val", "step": 1, "epoch": 1, "loss": 1.1, "accuracy": 0.6, "samples_per_s": None}]
    assert series.add(pts) == 3 and series.add(pts) == 0
    assert series.cursor == 3 and series.val_loss == [(20.0, 1.1)] and series.samples_per_s == 510.0
    assert [s.name for s in series.loss_series()] == ["train", "val"]


def test_run_summary_and_cells_say_what_a_user_needs():
    """The run line shows status, epochs, speed and size; a queued run without a worker says so."""
    run = {"id": 4, "dataset_name": "digits", "model": "cnn", "config": {"preset": "small"}, "status": "running",
           "epochs_done": 3, "epochs_total": 10, "params": 38_000, "size_bytes": 152_000, "metrics": {"val_accuracy": 0.913},
           "error": None}
    series = RunSeries(run_id=4, last_step=450, samples_per_s=812.0)
    text = summary_text(run, series, {}, workers=1)
    assert "Run #4" in text and "epoch 3/10" in text and "812 samples/s" in text and "38,000 params" in text
    assert "best val acc 91.3%" in text
    assert run_cells(run) == ("4", "running", "3/10", "91%", "digits cnn/small")  # the name last: phones cut it
    queued = dict(run, status="queued")
    assert "No worker is running" in summary_text(queued, RunSeries(), {}, workers=0)
    orphan = summary_text(run, RunSeries(), {}, workers=0)  # its worker was killed (signal 9)
    assert "No worker is running" in orphan and "resumes from its checkpoint" in orphan
    paused = summary_text(run, series, {"paused": "battery at 12% and not charging (minimum 20%)"}, workers=1)
    assert "Paused: battery at 12% and not charging (minimum 20%)" in paused
