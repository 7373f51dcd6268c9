"""Line charts drawn with braille dots: a pure renderer and the widget that shows it.

Each terminal cell holds a 2×4 grid of braille dots, so a 40×8 plot has 80×32 dots: enough for
a loss curve on a phone. :func:`plot` is a pure function from points to text, so the drawing
is tested without an app; :class:`CurveChart` only adds colours and the widget's size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from textual.content import Content
from textual.widget import Widget

_BRAILLE = 0x2800
# Bit for the dot at (column dx, row dy) inside one cell.
_DOT = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
# Series colours are theme variables, so every theme (and a light one) keeps its contrast.
PALETTE = ("$accent", "$primary-lighten-2", "$success", "$error", "$warning", "$secondary")


@dataclass(frozen=True)
class Series:
    """One named line: points are (x, y); non-finite y values are skipped."""

    name: str
    points: Sequence[tuple[float, float]]


@dataclass
class Plot:
    """A rendered plot: ``rows`` of text and, per cell, the index of the series drawn there (-1: none)."""

    rows: list[str]
    owners: list[list[int]]
    y_min: float
    y_max: float
    x_min: float
    x_max: float
    gutter: int = 0
    points: int = 0
    legend: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.rows)


def fmt_value(value: float) -> str:
    """A short axis label: 3 significant digits, no exponent for everyday values."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value / 1000:.3g}k"
    if magnitude >= 0.01:
        return f"{value:.3g}"
    return f"{value:.1e}"


def _clean(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in points
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]


def lttb(points: Sequence[tuple[float, float]], n: int) -> list[tuple[float, float]]:
    """Largest-Triangle-Three-Buckets: ``n`` of ``points`` (sorted by x) that keep the curve's shape.

    The first and last points are always kept; each bucket in between keeps the point that makes
    the largest triangle with the point kept before it and the next bucket's average, so peaks and
    dips survive where every-k-th sampling would drop them. Fewer than ``n`` points come back as is.
    """
    size = len(points)
    if n >= size or size <= 2:
        return list(points)
    if n <= 2:
        return [points[0], points[-1]][:max(n, 0)]
    out = [points[0]]
    every = (size - 2) / (n - 2)
    # Prefix sums: each bucket's average in O(1), so the whole pass reads every point once.
    sum_x, sum_y = [0.0], [0.0]
    for x, y in points:
        sum_x.append(sum_x[-1] + x)
        sum_y.append(sum_y[-1] + y)
    a_x, a_y = points[0]
    for i in range(n - 2):
        start = int(i * every) + 1
        end = int((i + 1) * every) + 1
        nxt_end = min(int((i + 2) * every) + 1, size)
        if end >= nxt_end:  # the last bucket: the next "average" is the last point
            avg_x, avg_y = points[-1]
        else:
            count = nxt_end - end
            avg_x = (sum_x[nxt_end] - sum_x[end]) / count
            avg_y = (sum_y[nxt_end] - sum_y[end]) / count
        best, best_area = start, -1.0
        dx, dy = avg_x - a_x, avg_y - a_y
        for j in range(start, end):
            x, y = points[j]
            area = abs((a_x - x) * dy - (a_y - y) * dx)  # twice the triangle's area; only the order matters
            if area > best_area:
                best, best_area = j, area
        out.append(points[best])
        a_x, a_y = points[best]
    out.append(points[-1])
    return out


def _line(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """Dots on the segment between two dots (Bresenham), both ends included."""
    dots = []
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        dots.append((x0, y0))
        if x0 == x1 and y0 == y1:
            return dots
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy


def plot(series: Sequence[Series], width: int, height: int, *,
         y_range: tuple[float, float] | None = None, axis: bool = True) -> Plot:
    """Draw ``series`` into ``width``×``height`` cells (the y-axis gutter included when ``axis``).

    Consecutive points are joined, so a curve stays continuous however few points it has.
    ``y_range`` fixes the vertical scale (e.g. 0–1 for accuracy); otherwise it fits the data.
    A series with more points than the plot has dot columns is first thinned with :func:`lttb`
    (to one point per dot column), so a 100,000-point run costs little more than a short one.
    """
    cleaned = [_clean(s.points) for s in series]
    total = sum(len(pts) for pts in cleaned)
    # The widest the plot can be (no gutter): thinning never drops a point a dot column could show.
    budget = max(3, 2 * max(1, width))
    cleaned = [lttb(pts, budget) if len(pts) > budget else pts for pts in cleaned]
    every = [p for pts in cleaned for p in pts]
    if every:
        # The axes fit the points drawn: LTTB keeps the spikes, so the scale still spans them.
        xs = [p[0] for p in every]
        ys = [p[1] for p in every]
        x_min, x_max = min(xs), max(xs)
        y_min, y_max = y_range if y_range else (min(ys), max(ys))
    else:
        x_min, x_max = 0.0, 1.0
        y_min, y_max = y_range if y_range else (0.0, 1.0)
    if y_max - y_min < 1e-12:  # a flat line sits in the middle, not on an edge
        pad = abs(y_max) * 0.1 or 0.5
        y_min, y_max = y_min - pad, y_max + pad
    if x_max - x_min < 1e-12:
        x_max = x_min + 1.0

    labels = (fmt_value(y_max), fmt_value(y_min)) if axis else ("", "")
    gutter = (max(len(l) for l in labels) + 1) if axis else 0
    cols = max(1, width - gutter)
    height = max(1, height)
    dots_w, dots_h = cols * 2, height * 4
    cells = [[0] * cols for _ in range(height)]
    owners = [[-1] * cols for _ in range(height)]

    def to_dot(x: float, y: float) -> tuple[int, int]:
        fx = (x - x_min) / (x_max - x_min)
        fy = (y - y_min) / (y_max - y_min)
        fy = min(1.0, max(0.0, fy))  # a value outside a fixed range is pinned to the edge
        return round(fx * (dots_w - 1)), round((1.0 - fy) * (dots_h - 1))

    for index, pts in enumerate(cleaned):
        dots = [to_dot(x, y) for x, y in pts]
        path = dots[:1] if len(dots) == 1 else [d for a, b in zip(dots, dots[1:]) for d in _line(*a, *b)]
        for dx, dy in path:
            row, col = dy // 4, dx // 2
            cells[row][col] |= _DOT[dx % 2][dy % 4]
            owners[row][col] = index

    rows = []
    for r in range(height):
        body = "".join(chr(_BRAILLE + bits) if bits else " " for bits in cells[r])
        if axis:
            label = labels[0] if r == 0 else labels[1] if r == height - 1 else ""
            body = f"{label:>{gutter - 1}}│" + body
        rows.append(body)
    legend = [f"{s.name} {fmt_value(pts[-1][1])}" if pts else f"{s.name} –" for s, pts in zip(series, cleaned)]
    return Plot(rows=rows, owners=owners, y_min=y_min, y_max=y_max, x_min=x_min, x_max=x_max,
                gutter=gutter, points=total, legend=legend)


def to_content(result: Plot, title: str = "", palette: Sequence[str] = PALETTE) -> Content:
    """Colour a :class:`Plot` by series, with a title line that doubles as the legend."""
    parts: list[tuple[str, str] | str] = []
    if title:
        parts.append((title, "bold"))
    for index, entry in enumerate(result.legend):
        parts.append("  " if parts else "")
        parts.append((f"● {entry}", palette[index % len(palette)]))
    lines = [Content.assemble(*parts)] if parts else []
    for row_text, row_owner in zip(result.rows, result.owners):
        pieces: list[tuple[str, str] | str] = [(row_text[:result.gutter], "$text-muted")] if result.gutter else []
        for ch, owner in zip(row_text[result.gutter:], row_owner):
            pieces.append((ch, palette[owner % len(palette)]) if owner >= 0 else ch)
        lines.append(Content.assemble(*pieces))
    return Content("\n").join(lines)


class CurveChart(Widget):
    """A braille line chart of a few series; call :meth:`set_series` with new data."""

    DEFAULT_CSS = """
    CurveChart { height: 8; min-height: 4; }
    """

    def __init__(self, title: str = "", *, y_range: tuple[float, float] | None = None,
                 name: str | None = None, id: str | None = None, classes: str | None = None):
        super().__init__(name=name, id=id, classes=classes)
        self.title = title
        self.y_range = y_range
        self.series: list[Series] = []
        self._plot: tuple[tuple, Plot] | None = None  # (size, plot): a repaint without new data redraws nothing

    def set_series(self, series: Sequence[Series]) -> None:
        self.series = list(series)
        self._plot = None
        self.refresh()

    @property
    def point_count(self) -> int:
        return sum(len(s.points) for s in self.series)

    def current_plot(self) -> Plot:
        """The plot as it is drawn at the widget's current size (one line goes to the title)."""
        size = (self.content_size.width or 40, max(1, (self.content_size.height or 8) - 1))
        if self._plot is None or self._plot[0] != size:
            self._plot = (size, plot(self.series, *size, y_range=self.y_range))
        return self._plot[1]

    def render(self) -> Content:
        return to_content(self.current_plot(), self.title)
