"""Formatting shared by the dashboard and the headless commands (no Textual here)."""
from __future__ import annotations


def fmt_bytes(n: int | float | None) -> str:
    """A size for people: ``812 B``, ``207.0 KB``, ``1.4 MB``; ``?`` when unknown."""
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
