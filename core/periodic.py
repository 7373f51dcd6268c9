"""Periodic jobs the worker queues by itself: today one, ``monitor`` every ``$POCKETOPS_MONITOR_S`` seconds.

A periodic kind never piles up: a job is queued only when none of its kind is queued or running
and the last one was queued at least one interval ago, checked and written under one write lock
so racing workers queue one between them. The kind keeps ONE row: each pass requeues the last
finished one (2,880 passes a day would otherwise grow the jobs table without end). Nothing is
queued while nothing is watched and no notification waits.
"""
from __future__ import annotations

import os
import time

from core.errors import ConfigError
from store import alerts as store_alerts
from store import deployments as store_deployments
from store import jobs
from store.db import transaction

# Targets without a server of ours: the static page runs in visitors' browsers.
UNMONITORED_TARGETS = ("spaces-static",)


def env_number(name: str, default: float, expected: str) -> float:
    """``$name`` as a number ≥ 0, ``default`` when unset; a one-line ConfigError naming ``expected`` otherwise."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{name}={raw!r}: expected {expected}; unset it for the default")
    return value


def monitor_interval_s() -> float:
    """Seconds between monitor passes: ``$POCKETOPS_MONITOR_S``, default 30 (0 turns the schedule off)."""
    return env_number("POCKETOPS_MONITOR_S", 30.0, "seconds (0 or more), e.g. 30")


def monitorable(row: dict) -> bool:
    """True for a release a monitor pass pulls: running, with a URL, on a target with a server of ours."""
    return row["status"] == "running" and bool(row.get("url")) and row["target"] not in UNMONITORED_TARGETS


def watched(db) -> list[dict]:
    """The releases a monitor pass pulls (one per line), in target then id order."""
    return [r for r in store_deployments.latest_per_line(db) if monitorable(r)]


def _due(last: dict | None, every: float) -> bool:
    return last is None or (last["status"] not in jobs.ACTIVE and time.time() - last["created_at"] >= every)


def schedule_monitor(db, *, every: float | None = None) -> int | None:
    """Queue the ``monitor`` job if one is due and something is watched; its id, or None."""
    every = monitor_interval_s() if every is None else every
    if every <= 0 or not _due(jobs.latest_of_kind(db, "monitor"), every):  # most calls: nothing due, no lock
        return None
    with transaction(db):
        last = jobs.latest_of_kind(db, "monitor")
        # Pending notifications (a budget alert's, a retry) need a pass even with nothing to pull.
        if not _due(last, every) or not (watched(db) or store_alerts.pending_notifications(db)):
            return None
        if last is not None and jobs.requeue_finished(db, last["id"]):
            return last["id"]
        from core import jobkinds

        return jobkinds.queue(db, "monitor")
