"""A test-only pace hook: hold a job at a named point until the test lets it go.

Kill/resume tests must catch a job at a precise moment ("mid epoch 2", "server started but
the row still deploying") on a machine 10x faster or 3x slower than the one they were written
on. With ``POCKETOPS_TEST_PACE_FILE`` unset (always, outside tests) :func:`hold` returns at
once after one environment lookup. When set, the file holds a JSON plan:

    {"train:step": 120, "hold": ["deploy:server-started"]}

- a point called with a ``step`` holds while ``step >= plan[point]``;
- a point called without one holds while its name is listed in ``plan["hold"]``.

While held, the job writes ``<pace file>.held`` (JSON: point, step, pid) so the test can wait
for it, and keeps calling ``check`` so SIGTERM and cancel still stop it at that point. The
test releases it by rewriting the plan (or removing the file).
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable

ENV = "POCKETOPS_TEST_PACE_FILE"
POLL_S = 0.02


def active() -> bool:
    """True when a test set a pace file for this process."""
    return bool(os.environ.get(ENV))


def _plan(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            plan = json.load(handle)
    except (OSError, ValueError):
        return {}  # missing, or caught mid-rewrite: no hold (tests write it atomically)
    return plan if isinstance(plan, dict) else {}


def _holds(plan: dict, point: str, step: int | None) -> bool:
    if step is None:
        return point in (plan.get("hold") or [])
    limit = plan.get(point)
    return isinstance(limit, int) and step >= limit


def hold(point: str, *, step: int | None = None, check: Callable[[], None] | None = None,
         on_hold: Callable[[], None] | None = None) -> None:
    """Block at ``point`` while the test's plan says so (no-op unless POCKETOPS_TEST_PACE_FILE is set)."""
    path = os.environ.get(ENV)
    if not path or not _holds(_plan(path), point, step):
        return
    if on_hold is not None:
        on_hold()
    from core.atomic import write_text

    write_text(path + ".held", json.dumps({"point": point, "step": step, "pid": os.getpid()}))
    while _holds(_plan(path), point, step):
        if check is not None:
            check()
        time.sleep(POLL_S)
