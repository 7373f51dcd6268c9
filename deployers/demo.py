"""Deployment rows for the demo database (screenshots): one line per target, no processes, no network.

The local figures are what ``pocketops deploy --target local`` measured on the 2-core dev
machine (cold start ~0.6 s, /health ~3 ms); the cloud lines carry no latency because none was
measured here (no network): they show the states a user meets first.
"""
from __future__ import annotations

from store import deployments as store_deployments


def seed(db, variant_id: int | None = None) -> list[int]:
    """Insert demo releases; returns their ids. ``variant_id`` may be None (no variants in the demo)."""
    ids = []

    def add(target: str, name: str, status: str, **fields) -> int:
        meta = {"served": status in ("running", "sleeping", "superseded", "rolled-back"), **fields.pop("meta", {})}
        row = store_deployments.create(db, variant_id=variant_id, target=target, name=name)
        store_deployments.update(db, row["id"], status=status, meta=meta, **fields)
        ids.append(row["id"])
        return row["id"]

    add("local", "local", "superseded", url="http://127.0.0.1:8765", health_latency_ms=3.1, cold_start_ms=612.0)
    add("local", "local", "running", url="http://127.0.0.1:8765", health_latency_ms=2.7, cold_start_ms=588.0,
        meta={"bundle_version": "r3-int8-static-1c9e04aa"})
    add("spaces-static", "you/digits-demo", "sleeping", url="https://huggingface.co/spaces/you/digits-demo",
        meta={"stage": "SLEEPING"})
    add("gcp", "pocketops-predict", "failed",
        error="Google Application Default Credentials not found: run `gcloud auth application-default login`")
    return ids
