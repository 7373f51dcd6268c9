"""Argument types shared by `python -m core.worker` and the CLI (stdlib only: cheap to import)."""
from __future__ import annotations

import argparse


def seconds_arg(text: str) -> float:
    """argparse type: a duration in seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, found {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, found {text}")
    return value
