"""Horizontal bars in eighth-blocks: class balance, progress, load."""
from __future__ import annotations

from typing import Sequence

from textual.content import Content
from textual.widget import Widget

_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(fraction: float, width: int) -> str:
    """A bar ``width`` cells wide filled to ``fraction`` (clamped to 0–1), in 1/8-cell steps."""
    if width <= 0:
        return ""
    fraction = min(1.0, max(0.0, fraction if fraction == fraction else 0.0))  # NaN counts as empty
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    text = "█" * full + (_EIGHTHS[rest] if rest else "")
    return text.ljust(width)


def balance_lines(labels: Sequence[str], counts: Sequence[int], width: int, *, max_rows: int | None = None) -> list[str]:
    """One line per class: ``label bar count (share)``, bars scaled to the largest class.

    With more classes than ``max_rows`` the largest ones are kept and the rest summed on a last line.
    """
    pairs = list(zip((str(l) for l in labels), (int(c) for c in counts)))
    if not pairs:
        return ["no classes"]
    total = sum(c for _, c in pairs) or 1
    hidden: list[tuple[str, int]] = []
    if max_rows is not None and len(pairs) > max_rows:
        keep = sorted(pairs, key=lambda p: -p[1])[: max(1, max_rows - 1)]
        hidden = [p for p in pairs if p not in keep]
        pairs = [p for p in pairs if p in keep]
    label_w = min(12, max(len(l) for l, _ in pairs))
    count_w = max(len(str(c)) for _, c in pairs)
    bar_w = max(3, width - label_w - count_w - 9)
    biggest = max(c for _, c in pairs) or 1
    lines = [
        f"{label[:label_w]:<{label_w}} {bar(count / biggest, bar_w)} {count:>{count_w}} {100 * count / total:3.0f}%"
        for label, count in pairs
    ]
    if hidden:
        lines.append(f"+{len(hidden)} more classes, {sum(c for _, c in hidden)} rows")
    return lines


class BalanceBars(Widget):
    """Class balance of a dataset as bars; call :meth:`set_counts`."""

    DEFAULT_CSS = """
    BalanceBars { height: auto; }
    """

    def __init__(self, *, max_rows: int = 12, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.labels: list[str] = []
        self.counts: list[int] = []
        self.max_rows = max_rows

    def set_counts(self, labels: Sequence[str], counts: Sequence[int]) -> None:
        self.labels, self.counts = list(labels), list(counts)
        self.refresh(layout=True)

    def lines(self) -> list[str]:
        return balance_lines(self.labels, self.counts, self.content_size.width or 40, max_rows=self.max_rows)

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(balance_lines(self.labels, self.counts, width, max_rows=self.max_rows))

    def render(self) -> Content:
        return Content.assemble(*[(line + "\n", "$accent") for line in self.lines()]).rstrip()
