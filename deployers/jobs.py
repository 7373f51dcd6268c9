"""Worker handler for job kind "deploy": the dashboard's deploy, status, rollback and stop actions.

Payload: ``{"action": "deploy" | "plan", "variant_id", "target", "options"}``, or
``{"action": "status" | "rollback" | "stop", "deployment_id"}``. Options never carry secrets
through the queue: an API key comes from the worker's ``POCKETOPS_API_KEY``; cloud credentials
from huggingface_hub's token store / ADC.
"""
from __future__ import annotations

from deployers import service
from deployers.base import DeployError

ACTIONS = ("plan", "deploy", "status", "rollback", "stop")


def run(ctx) -> dict:
    payload = ctx.payload
    action = payload.get("action", "deploy")
    if action not in ACTIONS:
        raise DeployError(f"deploy job {ctx.job_id}: unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    ctx.progress(action=action, stage="started")
    if action in ("deploy", "plan"):
        for key in ("variant_id", "target"):
            if payload.get(key) is None:
                raise DeployError(f"deploy job {ctx.job_id}: payload needs {key!r}")
        options = {k: v for k, v in (payload.get("options") or {}).items() if k not in service.SECRET_KEYS}
        if action == "plan":  # the dashboard never loads onnxruntime itself: the worker builds the plan
            plan = service.plan(ctx.db, ctx.db_path, int(payload["variant_id"]), payload["target"], options)
            return {"action": "plan", "plan": plan.to_dict()}
        row = service.deploy(ctx.db, ctx.db_path, int(payload["variant_id"]), payload["target"], options)
    else:
        if payload.get("deployment_id") is None:
            raise DeployError(f"deploy job {ctx.job_id}: payload needs 'deployment_id' for {action}")
        row = getattr(service, action)(ctx.db, int(payload["deployment_id"]))
    ctx.progress(action=action, stage="done", deployment_id=row["id"])
    return {"action": action, "deployment_id": row["id"], "target": row["target"], "version": row["version"],
            "status": row["status"], "url": row["url"]}
