"""`pocketops budget set|list|remove|log|resume`: monthly budgets, hard limits and their audit log."""
from __future__ import annotations

from tui.commands._common import CliError, add_parser, emit, open_db

SCOPES = ("all", "local", "spaces", "gcp")


def register(sub) -> None:
    p = add_parser(sub, "budget", "monthly budgets: warn levels, hard limits that stop the spending, the audit log")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    s = add_parser(verbs, "set", "set the monthly budget of a scope")
    s.add_argument("scope", metavar="SCOPE", help="all | local | spaces | gcp")
    s.add_argument("amount", metavar="AMOUNT", help="US dollars per month, e.g. 10")
    s.add_argument("--hard", action="store_true", help="refuse deploys that would exceed it; stop what spends past it")
    s.add_argument("--warn", default="50,90", metavar="PCTS", help="percent levels that raise an alert (default 50,90)")
    s.add_argument("--mirror-billing-account", metavar="ID",
                   help="gcp: also create a Cloud Billing budget (Google's e-mails at the warn levels; "
                        "it never caps spending)")
    s.add_argument("--project", help="with --mirror-billing-account: limit Google's budget to this project")
    s.set_defaults(func=run_set)
    add_parser(verbs, "list", "the budgets and how much of each is spent").set_defaults(func=run_list)
    r = add_parser(verbs, "remove", "remove the budget of a scope")
    r.add_argument("scope", metavar="SCOPE")
    r.set_defaults(func=run_remove)
    lg = add_parser(verbs, "log", "budget changes, refusals, warnings, pauses and resumes (newest first)")
    lg.add_argument("--limit", type=int, default=50)
    lg.set_defaults(func=run_log)
    rs = add_parser(verbs, "resume", "restart a deployment a hard budget paused")
    rs.add_argument("deployment_id", type=int, metavar="DEPLOYMENT_ID")
    rs.add_argument("--yes", action="store_true", help="confirm: it starts spending again")
    rs.set_defaults(func=run_resume)


def _costs():
    from deployers import costs

    costs.ACTOR.set("cli")
    return costs


def run_set(args) -> int:
    costs = _costs()
    try:
        costs.parse_budget(args.scope, args.amount, args.warn)   # before opening the store: nothing changes
    except ValueError as exc:
        raise CliError(f"budget set: {exc}", code=2) from None
    db, _ = open_db(args)
    row = costs.set_budget(db, args.scope, args.amount, hard=args.hard, warn=args.warn, who="cli")
    levels = ", ".join(f"{w:g}%" for w in row["warn"]) or "none"
    text = f"budget {row['scope']}: ${row['amount_usd']:.2f}/month, {'hard' if row['hard'] else 'soft'}, warn at {levels}"
    if args.mirror_billing_account:
        name = costs.mirror_to_google(db, args.scope, args.mirror_billing_account, project=args.project, who="cli")
        row = {**row, "google_budget": name}
        text += f"\nmirrored to Google Cloud Billing as {name}: Google e-mails at those levels; it does not cap"
    emit(args, row, text)
    return 0


def run_list(args) -> int:
    costs = _costs()
    db, _ = open_db(args)
    summary = costs.month_summary(db)
    if not summary["budgets"]:
        emit(args, [], "no budgets; set one with `pocketops budget set all 10 --hard`")
        return 0
    lines = [f"{b['scope']}: ${b['spent_usd']:.2f} of ${b['amount_usd']:.2f} ({b['spent_fraction'] * 100:.0f}%), "
             f"projected ${b['projected_usd']:.2f}{', hard' if b['hard'] else ''}" for b in summary["budgets"]]
    emit(args, summary["budgets"], "\n".join(lines))
    return 0


def run_remove(args) -> int:
    if args.scope not in SCOPES:
        raise CliError(f"budget remove: scope {args.scope!r}: expected one of {', '.join(SCOPES)}", code=2)
    db, _ = open_db(args)
    if not _costs().remove_budget(db, args.scope, who="cli"):
        raise CliError(f"budget remove: there is no {args.scope} budget; see `pocketops budget list`")
    emit(args, {"removed": args.scope}, f"budget {args.scope} removed")
    return 0


def run_log(args) -> int:
    import time

    from store import costs as store_costs

    db, _ = open_db(args)
    entries = store_costs.audit_log(db, limit=args.limit)
    lines = [f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(e['ts']))} {e['who']} {e['action']}: {e['message']}"
             for e in entries]
    emit(args, entries, "\n".join(lines) or "the budget log is empty")
    return 0


def run_resume(args) -> int:
    costs = _costs()
    if not args.yes:
        raise CliError(f"budget resume {args.deployment_id}: it will spend again; confirm with --yes", code=2)
    db, _ = open_db(args)
    row = costs.resume(db, args.deployment_id, who="cli")
    emit(args, {"deployment_id": row["id"], "status": row["status"]},
         f"deployment {row['id']}: resumed ({row['status']})")
    return 0
