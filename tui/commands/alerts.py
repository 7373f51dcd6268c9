"""`pocketops alerts list | show | ack | resolve | label | retrain | mute | notify add|list|remove`."""
from __future__ import annotations

from tui.commands._common import CliError, add_parser, emit, open_db


def register(sub) -> None:
    p = add_parser(sub, "alerts", "drift, confidence, down and budget alerts: list, evidence, act on them")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    lst = add_parser(actions, "list", "open and acknowledged alerts, newest first")
    lst.add_argument("--all", action="store_true", help="resolved ones too")
    lst.set_defaults(func=run_list)
    show = add_parser(actions, "show", "one alert with its evidence")
    show.add_argument("id", type=int, metavar="ID")
    show.set_defaults(func=run_show)
    for name, help_ in (("ack", "acknowledge an alert"), ("resolve", "resolve an alert")):
        a = add_parser(actions, name, help_)
        a.add_argument("id", type=int, metavar="ID")
        a.set_defaults(func=run_status, status=name)
    lab = add_parser(actions, "label", "label a quarantined sample of an alert with one of the model's classes")
    lab.add_argument("id", type=int, metavar="ID")
    lab.add_argument("--sample", type=int, required=True, metavar="K", help="sample index, as `alerts show` numbers them")
    lab.add_argument("--label", required=True, metavar="L", help="a class of the model")
    lab.set_defaults(func=run_label)
    rt = add_parser(actions, "retrain", "train again on the dataset plus the labelled samples (a new dataset version)")
    rt.add_argument("id", type=int, metavar="ID")
    rt.add_argument("--epochs", type=_positive, default=None)
    rt.add_argument("--wait", action="store_true", help="run now (or wait for a worker) and stream progress")
    rt.add_argument("--dataset-only", action="store_true", help="train on the dataset as it is (no labelled samples)")
    rt.set_defaults(func=run_retrain)
    mu = add_parser(actions, "mute", "stop opening alerts from one detector of one deployment")
    mu.add_argument("deployment_id", type=int, metavar="DEPLOYMENT_ID")
    mu.add_argument("detector", metavar="DETECTOR", help="distance | confidence | classes | health")
    mu.set_defaults(func=run_mute)
    no = add_parser(actions, "notify", "where alerts are sent (URLs are kept out of the database and masked)")
    nact = no.add_subparsers(dest="notify_action", metavar="ACTION", required=True)
    nadd = add_parser(nact, "add", "add a webhook (http/https, JSON POST) or any URL apprise understands")
    nadd.add_argument("url", metavar="URL")
    nadd.set_defaults(func=run_notify_add)
    add_parser(nact, "list", "configured channels, masked").set_defaults(func=run_notify_list)
    nrm = add_parser(nact, "remove", "remove URL number N (as `notify list` numbers them)")
    nrm.add_argument("number", type=int, metavar="N")
    nrm.set_defaults(func=run_notify_remove)


def _positive(text: str) -> int:
    from tui.commands.train import _positive as positive

    return positive(text)


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def line(row: dict) -> str:
    """One alert as a line: id, kind, status, where, value/threshold, message."""
    where = f"deployment {row['deployment_id']}" if row.get("deployment_id") is not None else "—"
    seq = f" at request {row['request_seq']}" if row.get("request_seq") is not None else ""
    return (f"#{row['alert_id']} {row['kind']} [{row['status']}] {where} {row.get('detector') or ''}{seq}: "
            f"{_fmt(row.get('value'))}/{_fmt(row.get('threshold'))} — {row['message']}")


def _call(fn, *args, **kwargs):
    from core.errors import PocketopsError

    try:
        return fn(*args, **kwargs)
    except PocketopsError as exc:
        raise CliError(str(exc)) from None


def run_list(args) -> int:
    from core import alerts

    db, _ = open_db(args)
    found = alerts.list_alerts(db, include_resolved=args.all)
    emit(args, found, "\n".join(line(r) for r in found) or ("no alerts" if args.all else "no open alerts"))
    return 0


def run_show(args) -> int:
    from core import alerts

    db, _ = open_db(args)
    data = _call(alerts.detail, db, args.id)
    if getattr(args, "json", False):
        emit(args, data)
        return 0
    ev = data["evidence"]
    dep = ev["deployment"]
    out = [line(data), f"deployment {dep['deployment_id']}: {dep['target']} v{dep['version']} variant {dep['variant_id']}"
           f" ({dep['url'] or 'no url'})"]
    if ev.get("reason"):
        out.append(f"reason: {ev['reason']}")
    if ev["signal"]["points"]:
        vals = [v for _, v in ev["signal"]["points"]]
        out.append(f"{ev['signal']['name']}: {len(vals)} requests, min {min(vals):.3g}, max {max(vals):.3g}")
    if ev["classes"]:
        before, after = ev["class_counts"]["before"], ev["class_counts"]["after"]
        out.append("classes before: " + _shares(ev["classes"], before))
        out.append("classes after:  " + _shares(ev["classes"], after))
    for s in ev["samples"]:
        out.append(f"sample {s['index']} (request {s['seq']}): predicted {_cls(ev['classes'], s['pred'])} "
                   f"at {_fmt(s['confidence'])}, label {s['label'] or '–'}")
    emit(args, data, "\n".join(out))
    return 0


def _cls(classes: list, index) -> str:
    return str(classes[index]) if isinstance(index, int) and 0 <= index < len(classes) else str(index)


def _shares(classes: list, counts: list) -> str:
    total = sum(counts) or 1
    top = sorted(range(len(counts)), key=lambda i: -counts[i])[:4]
    return ", ".join(f"{classes[i]} {100 * counts[i] / total:.0f}%" for i in top if counts[i]) or "none"


def run_status(args) -> int:
    from core import alerts

    db, _ = open_db(args)
    row = _call(alerts.ack if args.status == "ack" else alerts.resolve, db, args.id)
    emit(args, row, line(row))
    return 0


def run_label(args) -> int:
    from core import alerts

    db, _ = open_db(args)
    item = _call(alerts.label, db, args.id, args.sample, args.label)
    emit(args, {"alert_id": args.id, "sample": item["index"], "seq": item["seq"], "label": item["label"]},
         f"alert {args.id}: sample {item['index']} (request {item['seq']}) labelled {item['label']!r}")
    return 0


def run_retrain(args) -> int:
    from core import alerts
    from core.optional import require_installed

    require_installed("torch", "training")
    db, db_path = open_db(args)
    made = _call(alerts.retrain, db, db_path, args.id, epochs=args.epochs, dataset_only=args.dataset_only)
    if not args.wait:
        from core.worker import alive_workers

        who = ("a running worker will pick it up" if alive_workers(db_path) else
               "no worker is running: start one with `pocketops worker` (or open the dashboard)")
        emit(args, {"run_id": made["run_id"], "job_id": made["job_id"], "status": "queued"},
             f"run {made['run_id']} queued (job {made['job_id']}) on dataset {made['dataset']!r} "
             f"({made['parent_dataset']} + {made['added_rows']} labelled samples); {who}")
        return 0
    from tui.commands.train import stream

    return stream(args, db_path, made["run_id"], made["job_id"])


def run_mute(args) -> int:
    from core import alerts

    db, _ = open_db(args)
    fresh = _call(alerts.mute, db, args.deployment_id, args.detector)
    emit(args, {"deployment_id": args.deployment_id, "detector": args.detector, "muted": True},
         f"detector {args.detector} muted for deployment {args.deployment_id}" + ("" if fresh else " (it was already)"))
    return 0


def run_notify_add(args) -> int:
    from core import notify

    number = _call(notify.add_url, args.url)
    emit(args, {"number": number, "url": notify.mask(args.url.strip()), "file": str(notify.config_file())},
         f"notification URL {number} added: {notify.mask(args.url.strip())} (kept in {notify.config_file()}, mode 0600)")
    return 0


def run_notify_list(args) -> int:
    from core import notify

    found = notify.listing()
    termux = notify.termux_command() is not None
    lines = [f"{r['number']}. {r['url']} ({r['source']})" for r in found]
    lines.append("termux-notification: " + ("yes" if termux else "not installed (pkg install termux-api)"))
    emit(args, {"urls": found, "termux": termux}, "\n".join(lines))
    return 0


def run_notify_remove(args) -> int:
    from core import notify

    masked = _call(notify.remove_url, args.number)
    emit(args, {"removed": args.number, "url": masked}, f"notification URL {args.number} removed: {masked}")
    return 0

