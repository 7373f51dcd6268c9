"""Tests' side of core/pace.py: hold a worker's job at a named point, wait until it is held, release it."""
from __future__ import annotations

import json
import time
from pathlib import Path

from core import pace
from core.atomic import write_text


class Pace:
    """A pace file in ``directory`` (keep it outside the data dir); ``env`` goes to the worker."""

    def __init__(self, directory: Path, **plan):
        self.path = Path(directory) / "pace.json"
        self.set(**plan)

    @property
    def env(self) -> dict:
        return {pace.ENV: str(self.path)}

    def set(self, **plan) -> None:
        """Replace the plan: ``train_step=N`` holds training at its first train point with step ≥ N;
        ``hold=[...]`` holds at those named points."""
        data = {("train:step" if k == "train_step" else k): v for k, v in plan.items()}
        write_text(self.path, json.dumps(data))

    def held(self) -> dict | None:
        """Where a job is held now (point, step, pid), or None."""
        try:
            return json.loads(Path(str(self.path) + ".held").read_text())
        except (OSError, ValueError):
            return None

    def clear_held(self) -> None:
        Path(str(self.path) + ".held").unlink(missing_ok=True)

    def wait_held(self, point: str, *, pid: int | None = None, proc=None, timeout: float = 180) -> dict:
        """Wait until process ``pid`` (or any) is held at ``point``; fail if ``proc`` exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = self.held()
            if at and at["point"] == point and (pid is None or at["pid"] == pid):
                return at
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"worker exited ({proc.returncode}) before it was held at {point}")
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting to be held at {point} (held: {self.held()})")


