"""`pocketops deployments list | status ID | rollback ID [--yes] | stop ID [--yes]`.

Status, rollback and stop queue their job (``deploy-status`` / ``deploy-rollback`` /
``deploy-stop``) and wait for it, exactly as the Deploy panel's actions do.
"""
from __future__ import annotations

import os
import sys

from tui.commands._common import CliError, add_parser, emit, open_db, run_job
from tui.format import release_label

FIELDS = ("id", "target", "name", "version", "status", "url", "variant_id", "health_latency_ms", "cold_start_ms",
          "error", "created_at", "updated_at")


def register(sub) -> None:
    p = add_parser(sub, "deployments", "list deployments; status, roll back or stop one")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = add_parser
    lst = add(actions, "list", "every release, newest first")
    lst.add_argument("--target", help="only this target")
    lst.set_defaults(func=run_list)
    st = add(actions, "status", "ask the target how a release is doing (health, Space stage, function state)")
    st.add_argument("id", type=int, metavar="ID")
    st.set_defaults(func=run_status)
    rb = add(actions, "rollback", "serve the previous successful release of the same target again")
    rb.add_argument("id", type=int, metavar="ID")
    rb.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rb.set_defaults(func=run_rollback)
    sp = add(actions, "stop", "stop serving a release")
    sp.add_argument("id", type=int, metavar="ID")
    sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sp.set_defaults(func=run_stop)


def public(row: dict) -> dict:
    data = {k: row.get(k) for k in FIELDS}
    data["deployment_id"] = row["id"]
    meta = row.get("meta") or {}
    for key in ("rolled_back_from", "restores", "bundle_version", "reason", "stage"):
        if key in meta:
            data[key] = meta[key]
    if row.get("paused_reason"):
        data["paused_reason"] = row["paused_reason"]
    return data


def line(row: dict) -> str:
    parts = [f"#{row['id']}", row["target"], f"v{row['version']}", row["status"]]
    if row["name"] != row["target"]:
        parts.insert(2, row["name"])
    if row.get("url"):
        parts.append(row["url"])
    if row.get("health_latency_ms") is not None and row["status"] in ("running", "sleeping"):
        parts.append(f"health {row['health_latency_ms']:.1f} ms")
    if row.get("cold_start_ms") is not None:
        parts.append(f"cold {row['cold_start_ms']:.0f} ms")
    if row.get("error"):
        parts.append(f"— {row['error']}")
    if row.get("paused_reason"):
        parts.append(f"— {row['paused_reason']} (resume: pocketops budget resume {row['id']} --yes)")
    return " ".join(parts)


def run_list(args) -> int:
    from store import deployments

    db, _ = open_db(args)
    found = deployments.list_all(db, target=args.target)
    text = "\n".join(line(r) for r in found) or "no deployments yet: pocketops deploy VARIANT --target local"
    emit(args, [public(r) for r in found], text)
    return 0


def _act(args, kind: str) -> dict:
    """Run the ``kind`` job on deployment ``args.id``; the deployment row it answers with."""
    from store import deployments
    from tui.commands.deploy import finished

    db, db_path = open_db(args)
    # A local release restarted on a public address needs the API key of our environment.
    here = bool(os.environ.get("POCKETOPS_API_KEY"))
    job = finished(run_job(db_path, kind, {"deployment_id": args.id}, here=here))
    return deployments.get(db, job["result"]["deployment_id"])


def run_status(args) -> int:
    db, _ = open_db(args)
    _describe(db, args.id)  # a wrong id is one line and queues nothing
    row = _act(args, "deploy-status")
    emit(args, public(row), line(row))
    return 0


def confirm(args, question: str) -> None:
    """Go on with --yes, or after 'y' on a terminal; refuse without a terminal."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"{question.rstrip('?')}: not confirmed; pass --yes to do it without a prompt")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise CliError("cancelled")


def _describe(db, deployment_id: int) -> dict:
    from store import deployments

    row = deployments.get(db, deployment_id)
    if row is None:
        raise CliError(f"deployment {deployment_id} does not exist; see `pocketops deployments list`")
    return row


def run_rollback(args) -> int:
    db, _ = open_db(args)
    row = _describe(db, args.id)
    confirm(args, f"Roll back deployment {row['id']} ({release_label(row)})?")
    new = _act(args, "deploy-rollback")
    emit(args, public(new), f"rolled back: {line(new)}")
    return 0


def run_stop(args) -> int:
    db, _ = open_db(args)
    row = _describe(db, args.id)
    confirm(args, f"Stop deployment {row['id']} ({release_label(row)})?")
    stopped = _act(args, "deploy-stop")
    emit(args, public(stopped), f"stopped: {line(stopped)}")
    return 0
