"""Worker handler for job kind "monitor": pull ``/v1/monitor`` of every live deployment, open alerts, notify.

One pass, per deployment that can be monitored (running, with a URL, not the static page —
that one runs in visitors' browsers):

1. ``GET {url}/v1/monitor?since=SEQ`` from the stored cursor (page by page);
2. in ONE transaction per page: the signals, the quarantined inputs, an alert per event (its
   dedupe key is (deployment, server_id, event_id)) with its notifications queued, and the
   cursor moved on. A pass killed with signal 9 anywhere repeats at most a page it had not
   committed; a retried pull never duplicates an alert;
3. a deployment that does not answer ``POCKETOPS_MONITOR_DOWN_AFTER`` (default 3) times in a
   row, or at once when it answers garbage, gets a ``down`` alert with the reason; the next
   good answer resolves it;
4. due notifications are sent (and failed ones retried with backoff) after the commits.

The worker schedules a pass every ``POCKETOPS_MONITOR_S`` seconds (default 30) while there is a
deployment to watch (:func:`core.periodic.schedule_monitor`).
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request

from core import notify, pace, periodic
from core.periodic import UNMONITORED_TARGETS, monitorable, watched
from core.errors import ConfigError
from store import alerts as store_alerts
from store import deployments as store_deployments
from store import events
from store.db import transaction

PAGE = 1000
MAX_PAGES = 50          # a pass catches up at most this many pages; the next pass goes on
TIMEOUT_S = 5.0
EVIDENCE_BEFORE = 300   # signals kept in an alert's evidence before / after its alarm
EVIDENCE_AFTER = 200
SIGNALS_KEPT = 5000     # per deployment in the store
SERVERS_KEPT = 20       # instances (server_ids) whose cursor is kept per deployment
DETECTOR_KIND = {"distance": "drift", "classes": "drift", "confidence": "confidence"}


def down_after() -> int:
    """Failed checks in a row that make a deployment ``down``: ``$POCKETOPS_MONITOR_DOWN_AFTER``, default 3."""
    return max(1, int(periodic.env_number("POCKETOPS_MONITOR_DOWN_AFTER", 3, "a whole number, 1 or more, e.g. 3")))


# -- one pass ----------------------------------------------------------------------------------

def run(ctx) -> dict:
    """The ``monitor`` job: one pass (``deployment_id`` in the payload narrows it to one deployment)."""
    from core import jobkinds

    deployment_id = jobkinds.payload_of(ctx.job).deployment_id
    return monitor_pass(ctx.db, deployment_id=deployment_id, check=ctx.check, progress=ctx.progress)


def monitor_pass(db, *, deployment_id: int | None = None, check=None, progress=None) -> dict:
    """Pull every watched deployment once, then send due notifications; a JSON-able summary."""
    if deployment_id is not None:
        row = store_deployments.get(db, deployment_id)
        if row is None:
            raise ConfigError(f"no deployment with id {deployment_id}; `pocketops deployments list` shows them")
        if not monitorable(row):
            why = ("runs in visitors' browsers and cannot be monitored" if row["target"] in UNMONITORED_TARGETS
                   else f"is {row['status']}, not running")
            raise ConfigError(f"deployment {deployment_id} ({row['target']}) {why}")
        targets = [row]
    else:
        targets = watched(db)
    results = []
    for row in targets:
        if check is not None:
            check()
        if progress is not None:
            progress(deployment_id=row["id"])
        results.append(pull(db, row))
    sent = notify.deliver_due(db)
    return {"deployments": results, "alerts_opened": sum(r["alerts_opened"] for r in results), "notifications": sent}


class Garbage(ValueError):
    """The deployment answered, but not what ``/v1/monitor`` answers."""


class Unreachable(OSError):
    """The deployment did not answer (refused, timed out, 5xx)."""


class NoRoute(LookupError):
    """The deployment answers but has no ``/v1/monitor`` (a bundle built before monitoring)."""


def _api_key(row: dict) -> str | None:
    key = os.environ.get("POCKETOPS_API_KEY")
    if key or row["target"] != "local":
        return key or None
    from deployers.local import _key_of  # the key a local server of ours got by environment

    meta = row.get("meta") or {}
    return _key_of(meta.get("pid"), meta.get("server_pid"))


def fetch(url: str, since: int, *, limit: int = PAGE, api_key: str | None = None, timeout: float = TIMEOUT_S) -> dict:
    """One ``/v1/monitor`` answer, checked for shape; Unreachable, NoRoute or Garbage otherwise."""
    query = urllib.parse.urlencode({"since": since, "limit": limit})
    req = urllib.request.Request(f"{url.rstrip('/')}/v1/monitor?{query}", headers={"Accept": "application/json"})
    if api_key:
        req.add_header("X-API-Key", api_key)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read(64 << 20)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NoRoute("no /v1/monitor route (the bundle predates monitoring): deploy it again to monitor it") from None
        if exc.code >= 500:
            raise Unreachable(f"/v1/monitor answered HTTP {exc.code}") from None
        raise Garbage(f"/v1/monitor answered HTTP {exc.code}: {exc.read(200).decode('utf-8', 'replace')}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unreachable(f"not answering: {getattr(exc, 'reason', exc)}") from None
    try:
        data = json.loads(body)
    except ValueError:
        raise Garbage(f"/v1/monitor answered something that is not JSON: {body[:60]!r}") from None
    return check_answer(data)


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise Garbage(f"/v1/monitor answer: {what}")


def _number_or_none(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_answer(data) -> dict:
    """``data`` if it has the /v1/monitor shape (fields and types the phone relies on), else Garbage."""
    _need(isinstance(data, dict), f"expected a JSON object, found {type(data).__name__}")
    _need(isinstance(data.get("server_id"), str) and data["server_id"], "'server_id' must be a non-empty string")
    _need(isinstance(data.get("seq"), int) and data["seq"] >= 0, "'seq' must be an integer ≥ 0")
    for name in ("signals", "events", "quarantine"):
        _need(isinstance(data.get(name, []), list), f"'{name}' must be a list")
    for s in data.get("signals", []):
        _need(isinstance(s, dict) and isinstance(s.get("seq"), int), "each signal needs an integer 'seq'")
        _need(all(_number_or_none(s.get(k)) for k in ("t", "confidence", "distance"))
              and (s.get("pred") is None or (isinstance(s["pred"], int) and not isinstance(s["pred"], bool))),
              f"signal {s['seq']}: 't', 'confidence', 'distance' must be numbers and 'pred' an integer (or null)")
    for e in data.get("events", []):
        _need(isinstance(e, dict) and isinstance(e.get("seq"), int) and e.get("event_id") not in (None, ""),
              "each event needs an integer 'seq' and an 'event_id'")
    for q in data.get("quarantine", []):
        _need(isinstance(q, dict) and isinstance(q.get("seq"), int) and "input" in q,
              "each quarantined sample needs an integer 'seq' and its 'input'")
        _need(_number_or_none(q.get("confidence")) and (q.get("pred") is None or isinstance(q["pred"], int)),
              f"quarantined sample {q['seq']}: 'confidence' must be a number and 'pred' an integer (or null)")
    return data


def pull(db, row: dict) -> dict:
    """Pull one deployment from its cursor to the end (or MAX_PAGES pages); a summary. Never raises for
    what the deployment answers."""
    dep_id = row["id"]
    result = {"deployment_id": dep_id, "target": row["target"], "status": "ok", "alerts_opened": 0,
              "signals": 0, "events": 0, "muted": 0, "missed": 0, "error": None}
    api_key = _api_key(row)
    for _page in range(MAX_PAGES):
        cur = store_alerts.cursor(db, dep_id)
        servers = dict(cur["info"].get("servers") or {})
        since = cur["seq"] if cur["server_id"] else 0
        try:
            data = fetch(row["url"], since, api_key=api_key)
            if cur["server_id"] and data["server_id"] != cur["server_id"]:
                # Another server answered: a restart (a new process, seq from 1 again: read it from the
                # top) or another instance behind the same URL (Cloud Run): go on from its own cursor.
                own = int(servers.get(data["server_id"], 0))
                if own != since:
                    since = own
                    data = fetch(row["url"], since, api_key=api_key)
        except NoRoute as exc:
            result.update(status="unmonitored", error=str(exc))
            _note(db, dep_id, str(exc))
            return result
        except (Unreachable, Garbage) as exc:
            result.update(status="failing", error=str(exc))
            _failed(db, row, cur, str(exc), at_once=isinstance(exc, Garbage), result=result)
            return result
        pace.hold("monitor:pulled")  # tests kill the worker here: nothing of this page is stored yet
        more = _store_page(db, row, data, since, result, servers)
        pace.hold("monitor:stored")
        if not more:
            break
    return result


def _note(db, dep_id: int, message: str) -> None:
    with transaction(db):
        if store_alerts.note(db, dep_id, message):
            events.log(db, "warning", "monitor", f"deployment {dep_id}: {message}")


def _failed(db, row: dict, cur: dict, reason: str, *, at_once: bool, result: dict) -> None:
    """Count a failed check; open a ``down`` alert once the streak is long enough (at once for garbage)."""
    dep_id = row["id"]
    with transaction(db):
        failures = store_alerts.record_failure(db, dep_id, reason)
        needed = down_after()
        if not (at_once or failures >= needed):
            return
        streak = cur.get("last_ok_at") or "never"
        why = reason if at_once else f"{failures} checks in a row failed; last: {reason}"
        alert_id, created = store_alerts.open_alert(
            db, kind="down", deployment_id=dep_id, detector="health", value=float(failures), threshold=float(needed),
            message=f"{row['target']} v{row['version']} is down: {why}", key=f"down:{dep_id}:{streak}",
            evidence={"reason": reason, "url": row.get("url"), "target": row["target"], "version": row["version"],
                      "variant_id": row.get("variant_id"), "failures": failures})
        if created and "health" not in store_alerts.muted(db, dep_id):
            notify.queue_for(db, alert_id)
            result["alerts_opened"] += 1
            events.log(db, "warning", "monitor", f"alert {alert_id}: deployment {dep_id} down ({reason})")


def _store_page(db, row: dict, data: dict, since: int, result: dict, servers: dict) -> bool:
    """Store one answer in one transaction; True if more pages follow."""
    dep_id, server_id = row["id"], data["server_id"]
    signals = sorted((s for s in data.get("signals", []) if s["seq"] > since), key=lambda s: s["seq"])
    # Every event the server sends is considered, even one at a seq pulled before (a detector may
    # report late): its dedupe key keeps it from opening a second alert.
    new_events = sorted(data.get("events", []), key=lambda e: e["seq"])
    full = len(data.get("signals", [])) >= PAGE
    # Where the next pull starts: after the last signal of a full page, else after everything.
    next_seq = signals[-1]["seq"] if (full and signals) else max(data["seq"], since)
    if isinstance(data.get("first_seq"), int) and data["first_seq"] > since + 1:
        result["missed"] += data["first_seq"] - since - 1  # the served ring had moved on: those are gone
    with transaction(db):
        store_alerts.add_signals(db, dep_id, server_id, signals, keep=SIGNALS_KEPT)
        store_alerts.add_quarantine(db, dep_id, server_id, [q for q in data.get("quarantine", [])])
        mutes = store_alerts.muted(db, dep_id)
        for event in new_events:
            if event["seq"] > next_seq:
                continue  # beyond this page's signals: the next page brings it with its context
            detector = str(event.get("detector") or "")
            if detector in mutes:
                result["muted"] += 1
                continue
            alert_id, created = _open_event(db, row, data, event)
            if created:
                notify.queue_for(db, alert_id)
                result["alerts_opened"] += 1
            else:  # sent again while its quarantine fills with the inputs after the alarm
                store_alerts.extend_quarantine(db, alert_id, [s for s in event.get("quarantine") or []
                                                              if isinstance(s, int)])
        open_down = store_alerts.open_of(db, dep_id, "down")
        if open_down is not None:
            store_alerts.set_status(db, open_down["id"], "resolved")
            events.log(db, "info", "monitor", f"alert {open_down['id']} resolved: deployment {dep_id} answers again")
        servers.pop(server_id, None)
        servers[server_id] = next_seq  # newest last; the oldest servers are forgotten
        store_alerts.save_cursor(db, dep_id, server_id=server_id, seq=next_seq,
                                 info={"detectors": data.get("detectors") or {}, "calibration": data.get("calibration") or {},
                                       "first_seq": data.get("first_seq"), "seq": data["seq"],
                                       "servers": dict(list(servers.items())[-SERVERS_KEPT:])})
    result["signals"] += len(signals)
    result["events"] += len(new_events)
    return full and bool(signals) and next_seq < data["seq"]


def _open_event(db, row: dict, data: dict, event: dict) -> tuple[int, bool]:
    dep_id, server_id = row["id"], data["server_id"]
    detector = str(event.get("detector") or "")
    kind = event.get("kind") if event.get("kind") in ("drift", "confidence") else DETECTOR_KIND.get(detector, "drift")
    seq = int(event["seq"])
    window = store_alerts.signals(db, dep_id, server_id, lo=seq - EVIDENCE_BEFORE, hi=seq + EVIDENCE_AFTER)
    evidence = {
        "server_id": server_id, "event_id": str(event["event_id"]), "t": event.get("t"),
        "quarantine": [int(s) for s in event.get("quarantine") or [] if isinstance(s, int)],
        "detector": (data.get("detectors") or {}).get(detector), "calibration": data.get("calibration"),
        "signals": window, "target": row["target"], "version": row["version"], "url": row.get("url"),
        "variant_id": row.get("variant_id"), "labels": _labels(db, row.get("variant_id")),
    }
    message = str(event.get("message") or f"{detector} detector fired at request {seq}")
    return store_alerts.open_alert(
        db, kind=kind, deployment_id=dep_id, detector=detector, value=_num(event.get("value")),
        threshold=_num(event.get("threshold")), message=message, key=f"event:{dep_id}:{server_id}:{event['event_id']}",
        request_seq=seq, evidence=evidence)


def _labels(db, variant_id: int | None) -> list[str]:
    """The class names the variant predicts (its dataset's classes, else its meta's labels)."""
    if variant_id is None:
        return []
    from deployers.bundle import _dataset_for

    variant = store_deployments.variant(db, variant_id)
    if variant is None:
        return []
    dataset = _dataset_for(db, variant)
    return [str(x) for x in (dataset or {}).get("classes") or variant["meta"].get("labels") or []]


def _num(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
