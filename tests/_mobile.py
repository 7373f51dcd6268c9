"""Skip (or, under POCKETOPS_REQUIRE_MOBILE=1, fail) tests whose app runtime is not installed here.

The main venv has no executorch or litert (their exporters pull ~1.5 GB and pin xdsl, see
docs/mobile-runtimes.md); ``make test-mobile`` runs the ``mobile`` tests in .venv-mobile with
POCKETOPS_REQUIRE_MOBILE=1, where a missing package is a failure, not a skip.
"""
from __future__ import annotations

import importlib.util
import os

import pytest

NEEDS = {
    "executorch": ("executorch.exir", "executorch.runtime", "torchao"),
    "litert": ("litert_torch", "ai_edge_litert.interpreter"),
}


def available(stack: str) -> bool:
    """Whether every module of ``stack`` ("executorch", "litert") is importable here (nothing imported)."""
    for module in NEEDS[stack]:
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except (ImportError, ValueError):
            return False
    return True


def need(stack: str) -> None:
    """Skip the calling test unless ``stack`` is installed; fail instead under POCKETOPS_REQUIRE_MOBILE=1."""
    if available(stack):
        return
    message = f"{stack} is not installed here (make test-mobile runs this in .venv-mobile)"
    if os.environ.get("POCKETOPS_REQUIRE_MOBILE") == "1":
        pytest.fail(message)
    pytest.skip(message)
