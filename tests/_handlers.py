"""Job handlers used by the worker tests (registered into core.worker.HANDLERS by the tests)."""
from __future__ import annotations

import time

from core.errors import PocketopsError


def ok(ctx):
    ctx.progress(step=1)
    return {"echo": ctx.payload.get("x")}


def user_error(ctx):
    raise PocketopsError("dataset 'nope' does not exist; add it with `pocketops datasets add`")


def bug(ctx):
    raise KeyError("missing")


def slow(ctx):
    """Runs until cancelled or stopped, checking at safe points like a trainer does."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ctx.check()
        time.sleep(0.05)
    return {"timed_out": True}


def sleepy(ctx):
    """Busy for ``payload["s"]`` seconds (longer than a test's idle exit), checking like a trainer."""
    deadline = time.monotonic() + float(ctx.payload.get("s", 1.0))
    while time.monotonic() < deadline:
        ctx.check()
        time.sleep(0.05)
    return {"slept": ctx.payload.get("s", 1.0)}
