"""`pocketops monitor [--once] [--json]`: pull /v1/monitor of live deployments, open alerts, notify."""
from __future__ import annotations

import time

from tui.commands._common import add_parser, emit, open_db


def register(sub) -> None:
    p = add_parser(sub, "monitor", "pull every live deployment's monitor, open alerts and send notifications")
    p.add_argument("--once", action="store_true", help="one pass, then exit (for cron)")
    p.add_argument("--deployment", type=int, default=None, metavar="ID", help="only this deployment")
    p.set_defaults(func=run)


def _line(r: dict) -> str:
    bits = [f"deployment {r['deployment_id']} ({r['target']}): {r['status']}", f"{r['signals']} requests",
            f"{r['events']} events", f"{r['alerts_opened']} new alerts"]
    if r["muted"]:
        bits.append(f"{r['muted']} muted")
    if r["missed"]:
        bits.append(f"{r['missed']} requests dropped by the served ring before this pull")
    if r["error"]:
        bits.append(r["error"])
    return ", ".join(bits)


def run(args) -> int:
    from core import periodic
    from deployers import monitor

    db, _ = open_db(args)
    while True:
        result = monitor.monitor_pass(db, deployment_id=args.deployment)
        lines = [_line(r) for r in result["deployments"]] or ["nothing to monitor: no running deployment "
                                                             "(the static page cannot be monitored)"]
        n = result["notifications"]
        if any(n.values()):
            lines.append(f"notifications: {n['sent']} sent, {n['retrying']} to retry, {n['failed']} given up")
        emit(args, result, "\n".join(lines))
        if args.once:
            return 0
        time.sleep(periodic.monitor_interval_s() or 30.0)
