"""Sizes for people, in one place for the dashboard, the headless commands and core's messages.

Multiples are binary, as ``ls -h`` and ``df -h`` count them: 1 KB = 1024 bytes, 1 MB = 1024 KB.
Pure functions, stdlib only (the dashboard imports this module on start-up).
"""
from __future__ import annotations

UNITS = ("B", "KB", "MB", "GB", "TB")


def scale(n: float, *, below: float = 1024) -> tuple[float, str]:
    """``n`` bytes as (value, unit) in the largest unit that keeps the value under ``below``."""
    value = float(n)
    for unit in UNITS[:-1]:
        if abs(value) < below:
            return value, unit
        value /= 1024
    return value, UNITS[-1]


def fmt_bytes(n: int | float | None, *, unknown: str = "?") -> str:
    """``812 B``, ``207.0 KB``, ``1.4 MB``; ``unknown`` when ``n`` is None."""
    if n is None:
        return unknown
    value, unit = scale(n)
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


def compact_bytes(n: int | float | None, *, unknown: str = "–", letter: bool = False) -> str:
    """At most 5 characters for a table column: ``812B``, ``9.5KB``, ``209KB``, ``34MB``.

    ``letter`` keeps only the unit's first letter (``9.5K``, ``34M``): at most 4 characters.
    """
    if n is None:
        return unknown
    value, unit = scale(n, below=999.5)   # 1000 KB reads 1.0MB: never a fourth digit
    unit = unit[0] if letter else unit
    if unit == "B":
        return f"{value:.0f}B"
    return f"{value:.1f}{unit}" if value < 9.95 else f"{value:.0f}{unit}"


def fmt_used_of(used: int | float, total: int | float) -> str:
    """``2.0/8.0 GB``: a part and its whole in the whole's unit (both in bytes)."""
    value, unit = scale(total)
    factor = value / total if total else 1.0
    return f"{used * factor:.1f}/{value:.1f} {unit}"
