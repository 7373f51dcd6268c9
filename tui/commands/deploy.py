"""`pocketops deploy VARIANT --target T [--dry-run] [--json]`: release a variant, or show the plan."""
from __future__ import annotations

import os

from tui.commands._common import CliError, add_parser, emit, fmt_bytes, open_db

TARGETS = ("local", "spaces-static", "spaces-docker", "gcp")


def register(sub) -> None:
    p = add_parser(sub, "deploy", "deploy a model variant to the phone, Hugging Face Spaces or Google Cloud")
    p.add_argument("variant", type=int, metavar="VARIANT", help="variant id (see `pocketops models list`)")
    p.add_argument("--target", required=True, choices=TARGETS)
    p.add_argument("--host", help="local: address to bind (default 127.0.0.1; anything else needs an API key)")
    p.add_argument("--port", type=int, help="local: port (default 8765; 0 picks a free one)")
    p.add_argument("--name", help="local: name of the release line (default 'local'); give each model its own "
                                  "name and --port to serve several side by side")
    p.add_argument("--api-key", help="local/docker: key clients send as X-API-Key (prefer $POCKETOPS_API_KEY: "
                                     "a command line is visible to other processes)")
    p.add_argument("--space", metavar="ID", help="Spaces: repo id, e.g. you/digits-demo")
    p.add_argument("--private", action="store_true", help="Spaces: create the Space private")
    p.add_argument("--hardware", help="spaces-docker: hardware flavour (default cpu-basic)")
    p.add_argument("--project", help="gcp: project id (default: from Application Default Credentials)")
    p.add_argument("--region", help="gcp: region (default us-central1)")
    p.add_argument("--function", dest="function_name", metavar="NAME", help="gcp: function name")
    p.add_argument("--public", action="store_true", help="gcp: let anyone invoke the function (default: private, "
                                                         "callers need a Google identity token)")
    p.add_argument("--wait", dest="wait_s", type=float, metavar="SECONDS",
                   help="Spaces: wait up to SECONDS for the Space to run, to record its cold start")
    p.add_argument("--vendor-ort", metavar="DIR", help="spaces-static: copy onnxruntime-web from DIR instead of its CDN")
    p.add_argument("--requests-per-month", type=_requests_arg, metavar="N",
                   help="gcp: the traffic the plan's cost and the budget check assume (default 10,000)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (files, sizes, cost, requirements); change nothing")
    p.set_defaults(func=run)


def _requests_arg(value: str) -> int:
    import argparse

    try:
        number = int(value.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of requests, e.g. 50000, not {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more requests, not {number}")
    return number


def options_from(args) -> dict:
    """The deploy options dict of the deployers contract (None values left out)."""
    options = {
        "host": args.host, "port": args.port, "api_key": args.api_key or os.environ.get("POCKETOPS_API_KEY") or None,
        "space_id": args.space, "repo_id": args.space, "private": args.private or None, "hardware": args.hardware,
        "project": args.project, "region": args.region, "function_name": args.function_name,
        "vendor_ort": args.vendor_ort, "public": args.public or None, "wait_s": args.wait_s,
        "requests_per_month": getattr(args, "requests_per_month", None),
    }
    if args.target == "local":
        options["name"] = args.name
    elif args.name:
        raise CliError(f"--name is for --target local; {args.target} releases are named by "
                       + ("--space" if args.target.startswith("spaces") else "--function"))
    return {k: v for k, v in options.items() if v is not None}


def run(args) -> int:
    from deployers import service

    db, db_path = open_db(args)
    options = options_from(args)
    if args.vendor_ort and not os.path.isdir(args.vendor_ort):
        raise CliError(f"--vendor-ort {args.vendor_ort}: no such directory")
    if args.dry_run:
        plan = service.plan(db, db_path, args.variant, args.target, options)
        emit(args, {"plan": plan.to_dict()}, render_plan(plan))
        return 0
    from deployers import costs

    costs.ACTOR.set("cli")
    try:
        row = service.deploy(db, db_path, args.variant, args.target, options)
    except costs.BudgetRefused as exc:
        raise CliError(str(exc), code=3) from None
    data = {"deployment_id": row["id"], "target": row["target"], "version": row["version"],
            "status": row["status"], "url": row["url"]}
    extra = []
    if row["cold_start_ms"] is not None:
        extra.append(f"cold start {row['cold_start_ms']:.0f} ms")
    if row["health_latency_ms"] is not None:
        extra.append(f"health {row['health_latency_ms']:.1f} ms")
    text = (f"deployment {row['id']}: {row['target']} {row['name']} v{row['version']} {row['status']}"
            + (f" at {row['url']}" if row["url"] else "") + (f" ({', '.join(extra)})" if extra else ""))
    emit(args, data, text)
    return 0


def render_plan(plan) -> str:
    """The plan as lines that fit a phone (about 40 columns)."""
    lines = [f"plan: {plan.target} (dry run, nothing changed)", "files:"]
    width = max((len(f["path"]) for f in plan.files), default=0)
    for f in plan.files:
        lines.append(f"  {f['path']:<{width}}  {fmt_bytes(f['size_bytes']):>9}")
    lines.append(f"  {'total':<{width}}  {fmt_bytes(plan.total_bytes):>9}")
    lines.append(f"estimated cost: ${plan.estimated_monthly_cost_usd:.2f}/month")
    if plan.requirements:
        lines.append("requirements:")
        lines += [f"  - {r}" for r in plan.requirements]
    if plan.notes:
        lines.append("notes:")
        lines += [f"  - {n}" for n in plan.notes]
    return "\n".join(lines)
