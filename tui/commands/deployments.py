"""`pocketops deployments list | status ID | rollback ID [--yes] | stop ID [--yes]`."""
from __future__ import annotations

import sys

from tui.commands._common import CliError, add_parser, emit, open_db

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


def run_status(args) -> int:
    from deployers import service

    db, _ = open_db(args)
    row = service.status(db, args.id)
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
    from deployers import service

    db, _ = open_db(args)
    row = _describe(db, args.id)
    confirm(args, f"Roll back deployment {row['id']} ({row['target']} {row['name']} v{row['version']})?")
    new = service.rollback(db, args.id)
    emit(args, public(new), f"rolled back: {line(new)}")
    return 0


def run_stop(args) -> int:
    from deployers import service

    db, _ = open_db(args)
    row = _describe(db, args.id)
    confirm(args, f"Stop deployment {row['id']} ({row['target']} {row['name']} v{row['version']})?")
    stopped = service.stop(db, args.id)
    emit(args, public(stopped), f"stopped: {line(stopped)}")
    return 0
