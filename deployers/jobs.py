"""Worker handlers of the deploy job kinds (``deploy``, ``deploy-plan``, ``deploy-status``,
``deploy-rollback``, ``deploy-stop``; payloads in ``core.jobkinds``).

The dashboard and the CLI both queue these; the worker (or the CLI's own, when none is alive)
runs them through ``deployers.service``. Options never carry secrets through the queue: an API
key comes from the worker's ``POCKETOPS_API_KEY`` or, for a job the CLI runs itself, from the
in-memory ``ctx.secrets``; cloud credentials from huggingface_hub's token store / ADC.
"""
from __future__ import annotations

from core import jobkinds
from deployers import service


def _options(ctx, payload) -> dict:
    options = {k: v for k, v in payload.options.items() if k not in service.SECRET_KEYS}
    return {**options, **getattr(ctx, "secrets", {})}


def _answer(ctx, action: str, row: dict) -> dict:
    ctx.progress(action=action, stage="done", deployment_id=row["id"])
    return {"action": action, "deployment_id": row["id"], "target": row["target"], "version": row["version"],
            "status": row["status"], "url": row["url"]}


def deploy(ctx) -> dict:
    """Job kind ``deploy``: release a variant to a target; the new deployment row's summary."""
    payload = jobkinds.payload_of(ctx.job)
    ctx.progress(action="deploy", stage="started")
    return _answer(ctx, "deploy", service.deploy(ctx.db, ctx.db_path, payload.variant_id, payload.target,
                                                 _options(ctx, payload)))


def plan(ctx) -> dict:
    """Job kind ``deploy-plan``: what deploying would do (the dashboard never loads onnxruntime itself)."""
    payload = jobkinds.payload_of(ctx.job)
    ctx.progress(action="plan", stage="started")
    found = service.plan(ctx.db, payload.variant_id, payload.target, _options(ctx, payload))
    return {"action": "plan", "plan": found.to_dict()}


def _on_deployment(ctx, action: str) -> dict:
    payload = jobkinds.payload_of(ctx.job)
    ctx.progress(action=action, stage="started")
    return _answer(ctx, action, getattr(service, action)(ctx.db, payload.deployment_id))


def status(ctx) -> dict:
    """Job kind ``deploy-status``: ask the target how a release is doing."""
    return _on_deployment(ctx, "status")


def rollback(ctx) -> dict:
    """Job kind ``deploy-rollback``: serve the previous successful release of the line again."""
    return _on_deployment(ctx, "rollback")


def stop(ctx) -> dict:
    """Job kind ``deploy-stop``: stop serving a release."""
    return _on_deployment(ctx, "stop")
