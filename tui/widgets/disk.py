"""The disk-use line: bytes of the data directory's files by kind, in one line at any width ≥ 40."""
from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from core.fmt import compact_bytes, fmt_bytes

# (key in store.retention.disk_use, long label, short label)
KINDS = (("datasets", "datasets", "data"), ("checkpoints", "checkpoints", "ckpt"),
         ("variants", "variants", "onnx"), ("bundles", "bundles", "bndl"))


def short_bytes(n: int) -> str:
    """At most 4 characters: ``0``, ``812B``, ``9.5K``, ``34M``, ``1.2G``."""
    return compact_bytes(n, letter=True) if n else "0"


def disk_line(use: dict | None, width: int = 40) -> str:
    """``disk: datasets 1.2 MB · checkpoints …`` when it fits ``width``, else a short form (≤ 35 columns)."""
    if use is None:
        return "disk: …"
    long = "disk: " + " · ".join(f"{label} {fmt_bytes(use.get(key, 0))}" for key, label, _ in KINDS)
    if len(long) <= width:
        return long
    # "data 999M ckpt 999M onnx 999M bndl 999M" is 39 columns at most, without the inner spaces 35.
    medium = " ".join(f"{short} {short_bytes(use.get(key, 0))}" for key, _, short in KINDS)
    if len(medium) <= width:
        return medium
    return " ".join(f"{short}{short_bytes(use.get(key, 0))}" for key, _, short in KINDS)


class DiskUse(Widget):
    """One line of disk use; call :meth:`set_use` with ``store.retention.disk_use``'s dict."""

    DEFAULT_CSS = """
    DiskUse { height: 1; color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.use: dict | None = None

    def set_use(self, use: dict | None) -> None:
        if use != self.use:
            self.use = use
            self.refresh()

    @property
    def text(self) -> str:
        return disk_line(self.use, self.size.width or 40)

    def render(self) -> Content:
        return Content(self.text)
