"""Sample previews: small greyscale images drawn with shade characters, text, feature rows."""
from __future__ import annotations

from typing import Any, Sequence

from textual.content import Content
from textual.widget import Widget

_SHADES = " ░▒▓█"


def _as_rows(image: Any) -> list[list[float]]:
    rows = image.tolist() if hasattr(image, "tolist") else image
    return [[float(v) for v in row] for row in rows]


def _shrink(pixels: list[list[float]], max_w: int, max_h: int) -> list[list[float]]:
    """Average blocks of pixels so the image fits ``max_w``×``max_h`` pixels."""
    h, w = len(pixels), len(pixels[0]) if pixels else 0
    step = max(1, -(-w // max_w), -(-h // max_h))
    if step == 1:
        return pixels
    out = []
    for top in range(0, h, step):
        row = []
        for left in range(0, w, step):
            block = [pixels[y][x] for y in range(top, min(h, top + step)) for x in range(left, min(w, left + step))]
            row.append(sum(block) / len(block))
        out.append(row)
    return out


def shade_lines(image: Any, *, max_width: int = 16, max_height: int = 8) -> list[str]:
    """A 2-D image with values in [0, 1] as lines of ``░▒▓█``, two characters per pixel.

    Two characters per pixel keep the aspect ratio of a terminal cell (about 1:2), so an 8×8
    digit is 16×8 characters and reads like the digit it is.
    """
    pixels = _as_rows(image)
    if not pixels or not pixels[0]:
        return []
    pixels = _shrink(pixels, max(1, max_width // 2), max_height)
    lo = min(min(r) for r in pixels)
    hi = max(max(r) for r in pixels)
    if hi > 1.0 or lo < 0.0:  # not normalised (e.g. 0–16 or 0–255): scale to the image's range
        span = (hi - lo) or 1.0
        pixels = [[(v - lo) / span for v in r] for r in pixels]
    last = len(_SHADES) - 1
    return ["".join(_SHADES[min(last, max(0, round(v * last)))] * 2 for v in row) for row in pixels]


def side_by_side(blocks: Sequence[list[str]], gap: int = 2) -> list[str]:
    """Lay out blocks of lines left to right, padding each to its own width."""
    blocks = [b for b in blocks if b]
    if not blocks:
        return []
    widths = [max(len(line) for line in b) for b in blocks]
    height = max(len(b) for b in blocks)
    return [(" " * gap).join((b[i] if i < len(b) else "").ljust(w) for b, w in zip(blocks, widths)).rstrip()
            for i in range(height)]


def sample_lines(sample: dict, *, width: int = 40) -> list[str]:
    """One preview sample (``label`` plus ``image``, ``text`` or ``features``) as lines."""
    label = f"label: {sample.get('label')}"
    if sample.get("image") is not None:
        return [label, *shade_lines(sample["image"])]
    if sample.get("text"):
        text = " ".join(str(sample["text"]).split())
        cut = text if len(text) <= width * 2 else text[: width * 2 - 1] + "…"
        return [label, *[cut[i:i + width] for i in range(0, len(cut), width)]]
    if sample.get("features"):
        items = [f"{k}={_short(v)}" for k, v in dict(sample["features"]).items()]
        return [label, *_wrap(items, width)]
    return [label]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _wrap(items: list[str], width: int) -> list[str]:
    lines, line = [], ""
    for item in items:
        if line and len(line) + 1 + len(item) > width:
            lines.append(line)
            line = item
        else:
            line = f"{line} {item}" if line else item
    if line:
        lines.append(line)
    return lines


def preview_text(samples: list[dict], width: int) -> str:
    """Samples side by side when they are images (as many as fit ``width``), else one under another."""
    if samples and all(s.get("image") is not None for s in samples):
        blocks = [sample_lines(s) for s in samples]
        fitting: list[list[str]] = []
        for block in blocks:
            if fitting and max(len(line) for line in side_by_side(fitting + [block])) > width:
                break
            fitting.append(block)
        return "\n".join(side_by_side(fitting))
    return "\n\n".join("\n".join(sample_lines(s, width=max(20, width))) for s in samples)


class SamplePreview(Widget):
    """A dataset's preview samples, laid out for the widget's width; call :meth:`set_samples`."""

    DEFAULT_CSS = """
    SamplePreview { height: auto; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.samples: list[dict] = []
        self.message = ""

    def set_samples(self, samples: list[dict], message: str = "") -> None:
        self.samples, self.message = list(samples), message
        self.refresh(layout=True)

    def text_for(self, width: int) -> str:
        return self.message or preview_text(self.samples, width)

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self.text_for(width).splitlines()) or 1

    def render(self) -> Content:
        return Content(self.text_for(self.content_size.width or 40))
