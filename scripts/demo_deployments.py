"""Deployment rows for the demo database (screenshots): one line per target, no processes, no network.

The local lines' cold start and /health latency are the figures ``scripts/demo_db.py --record``
measured in two real local deployments, passed in as ``local``; without a recording they are
typed demo values (``TYPED_LOCAL``), and each row's ``meta.figures`` says which. The cloud lines
carry no latency because none was measured here (no network): they show the states a user
meets first. The whole store carries the demo mark (``store.demo``).
"""
from __future__ import annotations

from store import deployments as store_deployments


# Typed demo values (not measured) for a demo built without recorded deployments: v1, v2.
TYPED_LOCAL = [{"health_latency_ms": 3.1, "cold_start_ms": 612.0}, {"health_latency_ms": 2.7, "cold_start_ms": 588.0}]


def seed(db, variant_id: int | None = None, local: list[dict] | None = None) -> list[int]:
    """Insert demo releases; returns their ids. ``variant_id`` may be None (no variants in the demo).

    ``local``: two recorded ``{"health_latency_ms", "cold_start_ms"}`` (old release, serving release).
    """
    ids = []
    figures = "recorded by scripts/demo_db.py --record" if local else "typed demo values"
    v1, v2 = (local or TYPED_LOCAL)[:2]

    def add(target: str, name: str, status: str, **fields) -> int:
        meta = {"served": status in ("running", "sleeping", "superseded", "rolled-back"), **fields.pop("meta", {})}
        row = store_deployments.create(db, variant_id=variant_id, target=target, name=name)
        store_deployments.update(db, row["id"], status=status, meta=meta, **fields)
        ids.append(row["id"])
        return row["id"]

    add("local", "local", "superseded", url="http://127.0.0.1:8765", health_latency_ms=v1["health_latency_ms"],
        cold_start_ms=v1["cold_start_ms"], meta={"figures": figures, "demo": True})
    add("local", "local", "running", url="http://127.0.0.1:8765", health_latency_ms=v2["health_latency_ms"],
        cold_start_ms=v2["cold_start_ms"], meta={"bundle_version": "r3-int8-static-1c9e04aa", "figures": figures,
                                                 "demo": True})
    add("spaces-static", "you/digits-demo", "sleeping", url="https://huggingface.co/spaces/you/digits-demo",
        meta={"stage": "SLEEPING"})
    add("gcp", "pocketops-predict", "failed",
        error="Google Application Default Credentials not found: run `gcloud auth application-default login`")
    return ids
