"""The one bundle format and the one deployer protocol every target implements."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from core.errors import PocketopsError

TARGET_NAMES = ("local", "spaces-static", "spaces-docker", "gcp")


class DeployError(PocketopsError):
    """A deploy, status, rollback or stop that failed; the message says what to do (one line)."""


@dataclass
class Bundle:
    """A directory produced by ``deployers.bundle.build_bundle``.

    It holds the model (``model.onnx``, or ``model.ort``/``.pte``/``.tflite`` by its suffix),
    ``model.json``, the runtime files (``predictor.py``, ``server.py``, ``runtimes.py`` and the
    model's adapter) and ``reference.npz``, and needs only numpy + the model's runtime to serve.
    """

    path: Path
    variant_id: int | None
    version: str                      # e.g. "r12-int8-static-<sha[:8]>"
    model_json: dict = field(default_factory=dict)

    def files(self) -> list[tuple[str, int]]:
        """(relative path, size in bytes) of every file in the bundle, sorted by path."""
        root = Path(self.path)
        found = [
            (p.relative_to(root).as_posix(), p.stat().st_size)
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        ]
        return sorted(found)

    @classmethod
    def load(cls, path: str | Path, variant_id: int | None = None) -> "Bundle":
        """Open an existing bundle directory (reads its ``model.json``)."""
        path = Path(path)
        spec = path / "model.json"
        if not spec.is_file():
            raise DeployError(
                f"{path}: not a bundle (model.json missing); build it again with pocketops deploy"
            )
        model_json = json.loads(spec.read_text("utf-8"))
        if variant_id is None:
            variant_id = model_json.get("variant_id")
        return cls(path=path, variant_id=variant_id, version=str(model_json.get("version", "")),
                   model_json=model_json)


@dataclass
class Plan:
    """What a deploy would do: files, cost, requirements; computing it changes nothing."""

    target: str
    files: list[dict]                 # {"path", "size_bytes"}
    estimated_monthly_cost_usd: float
    requirements: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """Bytes of all the files the deploy would upload or serve."""
        return sum(int(f.get("size_bytes", 0)) for f in self.files)

    def to_dict(self) -> dict:
        """The plan as JSON-ready fields, with ``total_bytes``."""
        data = asdict(self)
        data["total_bytes"] = self.total_bytes
        return data


@dataclass
class Release:
    """What a deploy, status, rollback or stop answers."""

    status: str                       # running | deploying | sleeping | stopped | failed
    url: str | None
    meta: dict = field(default_factory=dict)   # repo_id, commit sha, revision, pid, port... NEVER secrets
    health_latency_ms: float | None = None
    cold_start_ms: float | None = None


@runtime_checkable
class Deployer(Protocol):
    """What every target implements; ``deployers.service`` drives it and keeps the rows.

    ``deployment``, ``current`` and ``previous`` are store rows with their meta decoded.
    """

    target: str                       # "local" | "spaces-static" | "spaces-docker" | "gcp"

    def plan(self, bundle: Bundle, options: dict) -> Plan:
        """What a deploy of ``bundle`` with ``options`` would do; changes nothing."""
        ...

    def deploy(self, bundle: Bundle, options: dict, previous: dict | None) -> Release:
        """Put ``bundle`` on the target, replacing ``previous`` (the serving release, if any)."""
        ...

    def status(self, deployment: dict) -> Release:
        """The release's state now, as the target reports it."""
        ...

    def rollback(self, current: dict, previous: dict, previous_bundle: Bundle) -> Release:
        """Serve ``previous`` (built from ``previous_bundle``) again instead of ``current``."""
        ...

    def stop(self, deployment: dict) -> Release:
        """Stop serving the release (pause, delete or kill, as the target does it)."""
        ...
