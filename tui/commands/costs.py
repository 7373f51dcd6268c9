"""`pocketops costs [--month YYYY-MM] [--refresh] [--json]`: month-to-date and projected spend per platform."""
from __future__ import annotations

from tui.commands._common import CliError, add_parser, emit, open_db


def register(sub) -> None:
    p = add_parser(sub, "costs", "month-to-date and projected spend per platform and deployment, and the budgets")
    p.add_argument("--month", metavar="YYYY-MM", help="a UTC month (default: this one)")
    p.add_argument("--refresh", action="store_true", help="pull usage from every platform first (network)")
    p.set_defaults(func=run)


def run(args) -> int:
    from core import costs as arithmetic
    from deployers import costs

    costs.ACTOR.set("cli")
    if args.month:
        try:
            arithmetic.month_bounds(args.month)
        except ValueError as exc:
            raise CliError(f"--month: {exc}") from None
    db, _ = open_db(args)
    problems = []
    if args.refresh:
        result = costs.refresh(db, who="cli")
        problems = result["collected"]["errors"]
    summary = costs.month_summary(db, month=args.month)
    emit(args, summary, render(summary, problems))
    return 0


def render(summary: dict, problems: list[str] | None = None) -> str:
    """The month as lines that fit a phone (about 40 columns)."""
    lines = [f"costs {summary['month']} (prices of {summary['price_table_date']}, estimates, not bills)"]
    lines.append(f"total ${summary['total_usd']:.2f}, projected ${summary['projected_usd']:.2f}")
    for name, plat in summary["platforms"].items():
        lines.append(f"{name}: ${plat['month_to_date_usd']:.2f} -> ${plat['projected_usd']:.2f} ({plat['source']})")
        for d in plat["deployments"]:
            why = f" [{d['paused_reason']}]" if d.get("paused_reason") else ""
            lines.append(f"  #{d['deployment_id']} {d.get('name') or d.get('target')}: ${d['month_to_date_usd']:.2f}"
                         f" -> ${d['projected_usd']:.2f} {d['source']}{why}")
    free = summary["platforms"]["gcp"]["free_tier_left"]
    if free:
        lines.append(f"gcp free tier left: {free['requests']:,.0f} requests, {free['vcpu_seconds']:,.0f} vCPU-s")
    local = summary["local_compute"]
    lines.append(f"phone: {local['cpu_s']:.0f} CPU-s, {local['battery_pct']:.1f}% battery")
    for b in summary["budgets"]:
        lines.append(f"budget {b['scope']}: ${b['spent_usd']:.2f} of ${b['amount_usd']:.2f} "
                     f"({b['spent_fraction'] * 100:.0f}%){' hard' if b['hard'] else ''}")
    for problem in problems or []:
        lines.append(f"warning: {problem}")
    return "\n".join(lines)
