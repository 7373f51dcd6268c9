"""`pocketops deploy VARIANT --target T [--dry-run] [--json]`: release a variant, or show the plan.

Both queue a job (``deploy`` / ``deploy-plan``) and wait for it, as the dashboard's Deploy form
does: a live worker runs it, or one of ours in this process when none is alive (or when an API
key is given, which never goes through the queue). Targets and their flags: ``deployers.targets``.
"""
from __future__ import annotations

import os

from tui.commands._common import CliError, add_parser, emit, open_db, run_job
from tui.format import render_plan


def register(sub) -> None:
    from deployers import targets

    p = add_parser(sub, "deploy", "deploy a model variant to the phone, Hugging Face Spaces or Google Cloud")
    p.add_argument("variant", type=int, metavar="VARIANT", help="variant id (see `pocketops models list`)")
    p.add_argument("--target", required=True, choices=targets.names())
    for option in targets.OPTIONS.values():
        if option.type is bool:
            p.add_argument(option.flag, dest=option.key, action="store_true", help=option.help)
        else:
            p.add_argument(option.flag, dest=option.key, type=option.type, metavar=option.metavar, help=option.help)
    p.add_argument("--dry-run", action="store_true", help="print the plan (files, sizes, cost, requirements); change nothing")
    p.set_defaults(func=run)


def options_from(args) -> tuple[dict, dict]:
    """The deploy options of the deployers contract (None/False left out) and the secrets kept out of the queue."""
    from deployers import targets

    options: dict = {}
    for option in targets.OPTIONS.values():
        value = getattr(args, option.key, None)
        if option.key == "name":
            if value and args.target != "local":
                raise CliError(f"--name is for --target local; {args.target} releases are named by "
                               + ("--space" if args.target.startswith("spaces") else "--function"))
            if args.target != "local":
                continue
        if value is None or value is False:
            continue
        options.update({key: value for key in option.keys()})
    secrets = {}
    api_key = options.pop("api_key", None) or os.environ.get("POCKETOPS_API_KEY") or None
    if api_key:
        secrets["api_key"] = api_key
    return options, secrets


def run(args) -> int:
    options, secrets = options_from(args)
    if args.vendor_ort and not os.path.isdir(args.vendor_ort):
        raise CliError(f"--vendor-ort {args.vendor_ort}: no such directory")
    db, db_path = open_db(args)
    if not args.dry_run:
        from deployers import costs

        try:  # a hard budget refuses here, before any job row or network call (exit 3)
            costs.check_deploy(db, args.target, options, who="cli")
        except costs.BudgetRefused as exc:
            raise CliError(str(exc), code=3) from None
    payload = {"variant_id": args.variant, "target": args.target, "options": options}
    job = finished(run_job(db_path, "deploy-plan" if args.dry_run else "deploy", payload, secrets=secrets))
    if args.dry_run:
        plan = job["result"]["plan"]
        emit(args, {"plan": plan}, render_plan(plan, full=True))
        return 0
    from store import deployments

    row = deployments.get(db, job["result"]["deployment_id"])
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


def finished(job: dict) -> dict:
    """The job row when it is done; its recorded reason as a one-line CliError otherwise."""
    if job["status"] != "done":
        raise CliError(job.get("error") or f"{job['kind']} job {job['id']} {job['status']}")
    return job
