"""Usage collectors, budget checks and the hard-budget stop: the side of costs that talks to platforms.

* Collectors, one per platform, each writing usage samples that start where the key's last one
  ended (``store.costs``): Google Cloud from Cloud Monitoring (``list_time_series`` of the
  service's ``run.googleapis.com/request_count`` and ``container/billable_instance_time``),
  Spaces from ``HfApi.get_space_runtime`` (stage and hardware: hours per hardware tier), the
  phone from the local server's ``/v1/stats``, the telemetry battery samples and (written by
  the worker) its own CPU time per job.
* :func:`check_deploy`: before a deploy, refuse it when a hard budget's month-to-date plus
  projection (with the new deployment at its plan's assumption) would exceed the limit.
* :func:`enforce`: when measured spend reaches a hard budget, pause the Space
  (``pause_space``) or scale the Cloud Run service to zero instances (manual scaling, 0
  instances), and record why; :func:`resume` undoes it on a confirmed request.
* The ``costs`` job kind's handler :func:`run`.

Google Cloud Billing Budgets only e-mail and never cap (see ../shared/FACTS.md): the stop here
is ours. Figures are estimates from list prices (``deployers.pricing``), never the bill.
"""
from __future__ import annotations

import contextvars
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from core import costs as arithmetic
from core import pace
from core.optional import require
from deployers import pricing
from deployers.base import DeployError
from store import costs as store_costs
from store import events
from store.db import loads, now as store_now, rows, transaction

# Who acts, for the audit log: the CLI sets "cli"; the deploy job the dashboard queues runs
# with none set (so a refusal there is the dashboard's); the costs job is the worker.
ACTOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("pocketops_costs_actor", default=None)
REFRESH_ENV = "POCKETOPS_COSTS_EVERY_S"
DEFAULT_EVERY_S = 900.0
MONITORING_LAG_S = 240.0   # Cloud Monitoring points arrive up to a few minutes late: pull up to now - lag
REQUEST_METRIC = "run.googleapis.com/request_count"
INSTANCE_METRIC = "run.googleapis.com/container/billable_instance_time"
BILLED_STAGES = ("RUNNING", "RUNNING_BUILDING", "RUNNING_APP_STARTING", "APP_STARTING")
PAID_TARGETS = ("gcp", "spaces-docker")
LIVE = ("running", "sleeping", "deploying")


class BudgetRefused(DeployError):
    """A deploy a hard budget refuses (the CLI exits 3)."""


def actor(default: str = "worker") -> str:
    """Who is acting now: ``ACTOR`` when set, else ``default``."""
    return ACTOR.get() or default


def refresh_every_s() -> float:
    """Seconds between periodic ``costs`` jobs: ``$POCKETOPS_COSTS_EVERY_S`` (0 turns them off), else 900."""
    raw = os.environ.get(REFRESH_ENV)
    if raw is None or raw == "":
        return DEFAULT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_EVERY_S
    return max(0.0, value)


# -- clients ---------------------------------------------------------------------------------

@dataclass
class Clients:
    """The platform clients the collectors and the stop use; tests pass real clients aimed at stand-ins."""

    hub: Any = None            # huggingface_hub.HfApi
    monitoring: Any = None     # google.cloud.monitoring_v3.MetricServiceClient
    services: Any = None       # google.cloud.run_v2.ServicesClient
    timeout_s: float = 300.0

    def hub_api(self):
        """``HfApi`` with huggingface_hub's own token and endpoint lookup (HF_TOKEN, HF_ENDPOINT)."""
        if self.hub is None:
            hub = require("huggingface_hub", "Reading Hugging Face Spaces usage")
            self.hub = hub.HfApi()
        return self.hub

    def monitoring_client(self):
        """A Cloud Monitoring client with Application Default Credentials."""
        if self.monitoring is None:
            monitoring_v3 = require("google.cloud.monitoring_v3", "Reading Google Cloud usage")
            self.monitoring = _google_client(monitoring_v3.MetricServiceClient)
        return self.monitoring

    def services_client(self):
        """A Cloud Run Admin API client (REST) with Application Default Credentials."""
        if self.services is None:
            run_v2 = require("google.cloud.run_v2", "Stopping a Cloud Run service")
            self.services = _google_client(run_v2.ServicesClient, transport="rest")
        return self.services


def _google_client(cls, **kwargs):
    """A Google client; missing or expired credentials become one line saying what to run."""
    auth_exceptions = require("google.auth.exceptions", "Reading Google Cloud usage")
    try:
        return cls(**kwargs)
    except auth_exceptions.GoogleAuthError as exc:
        raise DeployError(f"no usable Google credentials ({type(exc).__name__}): run `gcloud auth "
                          "application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS)") from None


# -- reading the store -----------------------------------------------------------------------

def _deployments(db, start: float) -> list[dict]:
    """Rows that may cost this month: live or paused ones, and any with a sample since ``start``."""
    found = rows(db, """SELECT id, target, version, status, url, meta, paused_reason, created_at, updated_at
                        FROM deployments
                        WHERE status IN ('running', 'sleeping', 'deploying') OR paused_reason IS NOT NULL
                           OR id IN (SELECT deployment_id FROM usage_samples
                                     WHERE deployment_id IS NOT NULL AND period_end > ?)
                        ORDER BY id""", (start,))
    for row in found:
        row["meta"] = loads(row["meta"], {})
        row["name"] = row["meta"].get("name") or row["target"]
    return found


def month_summary(db, *, month: str | None = None, now: float | None = None, candidate: dict | None = None) -> dict:
    """The month's figures (``pocketops costs --json``); ``candidate`` adds a deployment not made yet."""
    now = store_now() if now is None else now
    month = month or arithmetic.month_of(now)
    start, end = arithmetic.month_bounds(month)
    deployments = _deployments(db, start)
    if candidate is not None:
        deployments.append(candidate)
    return arithmetic.summarize(month, now, store_costs.samples(db, start, end), deployments,
                                store_costs.budgets(db), pricing.price_table())


# -- collectors ------------------------------------------------------------------------------

def _pieces(start: float, end: float):
    """``[start, end)`` cut at UTC month boundaries (samples never straddle a bill)."""
    while start < end:
        _, month_end = arithmetic.month_bounds(arithmetic.month_of(start))
        stop = min(end, month_end)
        yield start, stop
        start = stop


def _write(db, key: str, platform: str, deployment_id: int | None, start: float, pieces: list[tuple]) -> int:
    """Insert the pulled pieces unless another pull wrote from ``start`` meanwhile; how many were new."""
    written = 0
    with transaction(db):
        if (store_costs.last_end(db, key) or start) > start:
            return 0   # an overlapping pull got there first: its figures stand
        for p0, p1, usage, source in pieces:
            written += store_costs.add_sample(db, key=key, platform=platform, deployment_id=deployment_id,
                                              period_start=p0, period_end=p1, usage=usage, source=source)
    return written


def _since(db, key: str, deployment: dict) -> float:
    return store_costs.last_end(db, key) or float(deployment["created_at"])


def collect_gcp(db, deployment: dict, now: float, clients: Clients) -> int:
    """Cloud Monitoring usage of one Cloud Run function since its last sample; samples written."""
    meta = deployment["meta"] or {}
    service, project = meta.get("service"), meta.get("project")
    if not service or not project:
        return 0
    key = f"deployment:{deployment['id']}"
    start, end = _since(db, key, deployment), now - MONITORING_LAG_S
    if end <= start:
        return 0
    name = service.rsplit("/", 1)[-1]
    client = clients.monitoring_client()
    options = meta.get("options") or {}
    memory_gib = _gib(options.get("memory") or "512Mi")
    pieces = []
    for p0, p1 in _pieces(start, end):
        requests = _sum_points(client, project, REQUEST_METRIC, name, p0, p1, "int64_value")
        instance_s = _sum_points(client, project, INSTANCE_METRIC, name, p0, p1, "double_value")
        pieces.append((p0, p1, {"requests": requests, "instance_s": round(instance_s, 3), "vcpu": 1.0,
                                "memory_gib": memory_gib}, "measured"))
    return _write(db, key, "gcp", deployment["id"], start, pieces)


def _gib(memory: str) -> float:
    """``512Mi`` / ``1Gi`` as GiB (0.5, the deployer's default, when unreadable)."""
    text = str(memory).strip()
    try:
        if text.endswith("Mi"):
            return float(text[:-2]) / 1024
        if text.endswith("Gi"):
            return float(text[:-2])
    except ValueError:
        pass
    return 0.5


def _sum_points(client, project: str, metric: str, service_name: str, start: float, end: float, field: str) -> float:
    """The sum of a DELTA metric's points that end in ``(start, end]`` (each point counted by one period only)."""
    monitoring_v3 = require("google.cloud.monitoring_v3", "Reading Google Cloud usage")
    request = monitoring_v3.ListTimeSeriesRequest(
        name=f"projects/{project}",
        filter=f'metric.type = "{metric}" AND resource.type = "cloud_run_revision" '
               f'AND resource.labels.service_name = "{service_name}"',
        interval=monitoring_v3.TimeInterval(start_time={"seconds": int(start), "nanos": int(start % 1 * 1e9)},
                                            end_time={"seconds": int(end), "nanos": int(end % 1 * 1e9)}),
        view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
    )
    total = 0.0
    for series in _call("read Cloud Monitoring usage", client.list_time_series, request=request):
        for point in series.points:
            t = point.interval.end_time.timestamp()
            if start < t <= end:
                total += float(getattr(point.value, field) or 0)
    return total


def collect_space(db, deployment: dict, now: float, clients: Clients) -> int:
    """Hours the Space's hardware ran since its last sample (from its runtime stage); samples written."""
    repo_id = (deployment["meta"] or {}).get("repo_id")
    if not repo_id:
        return 0
    key = f"deployment:{deployment['id']}"
    start = _since(db, key, deployment)
    if now <= start:
        return 0
    runtime = _call(f"read the runtime of Space {repo_id}", clients.hub_api().get_space_runtime, repo_id)
    hardware = str(runtime.hardware or "cpu-basic")
    billed = str(runtime.stage or "") in BILLED_STAGES
    # Between two pulls the stage seen now is taken for the whole gap (a pull every 15 minutes).
    pieces = [(p0, p1, {"hardware": hardware, "stage": runtime.stage, "hours": (p1 - p0) / 3600.0 if billed else 0.0},
               "measured") for p0, p1 in _pieces(start, now)]
    return _write(db, key, "spaces", deployment["id"], start, pieces)


def collect_local(db, deployment: dict, now: float, clients: Clients) -> int:
    """Requests the phone's server answered since its last sample (``/v1/stats``); samples written."""
    url = deployment.get("url")
    if not url:
        return 0
    key = f"deployment:{deployment['id']}"
    start = _since(db, key, deployment)
    request = urllib.request.Request(url.rstrip("/") + "/v1/stats")
    if os.environ.get("POCKETOPS_API_KEY"):
        request.add_header("X-API-Key", os.environ["POCKETOPS_API_KEY"])
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            stats = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return 0   # not serving: nothing answered, nothing to count
    last = store_costs.last_sample(db, key)
    counter, since = int(stats.get("requests") or 0), stats.get("since")
    before = (last or {}).get("usage") or {}
    same_server = before.get("since") == since and since is not None
    delta = counter - int(before.get("counter") or 0) if same_server else counter
    usage = {"requests": max(0, delta), "counter": counter, "since": since}
    return _write(db, key, "local", deployment["id"], start, [(start, max(start, now), usage, "measured")])


def collect_battery(db, now: float) -> int:
    """Battery percent spent (drops while not charging) since the last battery sample."""
    key = "battery"
    last = store_costs.last_sample(db, key)
    since = last["period_end"] if last else now - 86_400   # telemetry keeps one day
    readings = rows(db, "SELECT ts, battery_percent, charging FROM telemetry WHERE ts > ? AND battery_percent "
                        "IS NOT NULL ORDER BY ts", (since,))
    if not readings:
        return 0
    start = since if last else float(readings[0]["ts"])   # the first sample starts at the first reading
    previous = (last or {}).get("usage", {}).get("last_pct")
    spent = 0.0
    for r in readings:
        if previous is not None and not r["charging"] and r["battery_percent"] < previous:
            spent += previous - r["battery_percent"]
        previous = r["battery_percent"]
    usage = {"battery_pct": round(spent, 3), "last_pct": previous}
    return _write(db, key, "local", None, start, [(start, float(readings[-1]["ts"]), usage, "measured")])


COLLECTORS = {"gcp": collect_gcp, "spaces": collect_space, "local": collect_local}


def collect(db, *, now: float | None = None, clients: Clients | None = None) -> dict:
    """Run every collector once; per platform how many samples were new, and errors (one line each)."""
    now = store_now() if now is None else now
    clients = clients or Clients()
    written = {"gcp": 0, "spaces": 0, "local": 0}
    errors = []
    start, _ = arithmetic.month_bounds(arithmetic.month_of(now))
    for deployment in _deployments(db, start):
        if deployment["status"] not in LIVE or deployment.get("paused_reason"):
            continue
        platform = arithmetic.platform_of(deployment["target"])
        try:
            written[platform] += COLLECTORS[platform](db, deployment, now, clients)
        except Exception as exc:   # one platform down must not stop the others
            errors.append(f"deployment {deployment['id']} ({deployment['target']}): {exc}")
    written["local"] += collect_battery(db, now)
    return {"written": written, "errors": errors}


def _call(what: str, fn, *args, **kwargs):
    """One platform call; a failure becomes a one-line DeployError without credentials."""
    try:
        return fn(*args, **kwargs)
    except DeployError:
        raise
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        from deployers.service import scrub

        raise DeployError(f"{what} failed: {type(exc).__name__}: {scrub(first)}") from None


# -- budget input ------------------------------------------------------------------------------

def parse_budget(scope: str, amount: str | float, warn: str | list | None) -> tuple[str, float, list[float]]:
    """Checked budget values; a one-line ValueError naming the field otherwise."""
    if scope not in arithmetic.SCOPES:
        raise ValueError(f"scope {scope!r}: expected one of {', '.join(arithmetic.SCOPES)}")
    try:
        value = float(amount)
    except (TypeError, ValueError):
        raise ValueError(f"amount {amount!r}: expected dollars per month, e.g. 10 or 2.50") from None
    if not value >= 0 or value != value or value == float("inf"):
        raise ValueError(f"amount {amount}: expected a non-negative number of dollars per month")
    levels: list[float] = []
    items = warn.split(",") if isinstance(warn, str) else list(warn or [])
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        try:
            level = float(str(item).strip().rstrip("%"))
        except ValueError:
            raise ValueError(f"--warn {warn}: expected percents between 1 and 100, e.g. 50,90") from None
        if not 0 < level <= 100:
            raise ValueError(f"--warn {warn}: {level:g} is not a percent between 1 and 100")
        levels.append(level)
    return scope, value, sorted(set(levels))


def set_budget(db, scope: str, amount, *, hard: bool = False, warn=None, who: str | None = None) -> dict:
    """Check and store a budget (audited with this month's figures)."""
    scope, value, levels = parse_budget(scope, amount, warn)
    summary = month_summary(db)
    return store_costs.set_budget(db, scope, value, hard=hard, warn=levels, who=who or actor("cli"),
                                  figures=_scope_figures(summary, scope))


def remove_budget(db, scope: str, *, who: str | None = None) -> bool:
    """Remove the budget of ``scope`` (audited with this month's figures); False when there was none."""
    if scope not in arithmetic.SCOPES:
        raise ValueError(f"scope {scope!r}: expected one of {', '.join(arithmetic.SCOPES)}")
    return store_costs.remove_budget(db, scope, who=who or actor("cli"),
                                     figures=_scope_figures(month_summary(db), scope))


def _scope_figures(summary: dict, scope: str) -> dict:
    if scope == "all":
        return {"month": summary["month"], "spent_usd": summary["total_usd"], "projected_usd": summary["projected_usd"]}
    plat = summary["platforms"][scope]
    return {"month": summary["month"], "spent_usd": plat["month_to_date_usd"], "projected_usd": plat["projected_usd"]}


# -- optional: Google's own budget e-mails -------------------------------------------------------

def mirror_to_google(db, scope: str, billing_account: str, *, project: str | None = None, client=None,
                     who: str | None = None) -> str:
    """Create (or update) a Cloud Billing budget with the same amount and warn levels; its name.

    Google then e-mails the billing admins at those levels. It never caps spending and its
    figures can lag about a day: the hard stop stays ours (``enforce``).
    """
    budget = store_costs.get_budget(db, scope)
    if budget is None:
        raise DeployError(f"there is no {scope} budget to mirror; set it first with `pocketops budget set`")
    if not billing_account or "/" in billing_account.removeprefix("billingAccounts/"):
        raise DeployError(f"billing account {billing_account!r}: expected an id like 012345-6789AB-CDEF01")
    budgets_v1 = require("google.cloud.billing.budgets_v1", "Mirroring a budget to Google Cloud Billing")
    money = require("google.type.money_pb2", "Mirroring a budget to Google Cloud Billing")
    if client is None:
        client = _google_client(budgets_v1.BudgetServiceClient, transport="rest")
    units = int(budget["amount_usd"])
    google = budgets_v1.Budget(
        display_name=f"pocketops {scope}",
        amount=budgets_v1.BudgetAmount(specified_amount=money.Money(
            currency_code="USD", units=units, nanos=int(round((budget["amount_usd"] - units) * 1e9)))),
        threshold_rules=[budgets_v1.ThresholdRule(threshold_percent=level / 100.0) for level in budget["warn"]]
        + [budgets_v1.ThresholdRule(threshold_percent=1.0)],
        budget_filter=budgets_v1.Filter(projects=[f"projects/{project}"] if project else [],
                                        calendar_period=budgets_v1.CalendarPeriod.MONTH),
    )
    previous = next((e["figures"].get("google_budget") for e in store_costs.audit_log(db, action="budget-mirror")
                     if e["scope"] == scope and e["figures"].get("google_budget")), None)
    if previous:
        google.name = previous
        made = _call("update the Cloud Billing budget", client.update_budget, request={"budget": google})
    else:
        parent = f"billingAccounts/{billing_account.removeprefix('billingAccounts/')}"
        made = _call("create the Cloud Billing budget", client.create_budget,
                     request={"parent": parent, "budget": google})
    store_costs.audit(db, who or actor("cli"), "budget-mirror",
                      f"{scope} budget mirrored to Google Cloud Billing as {made.name} (e-mails only; it does not cap)",
                      scope=scope, figures={"google_budget": made.name, "amount_usd": budget["amount_usd"],
                                            "warn": budget["warn"], "project": project})
    return made.name


# -- before a deploy ---------------------------------------------------------------------------

def check_deploy(db, target: str, options: dict, *, now: float | None = None, who: str | None = None) -> None:
    """Refuse (BudgetRefused, audited) a deploy that a hard budget's projection would exceed.

    No network and no other write: the candidate is costed at its plan's assumption
    (``--requests-per-month``, ``--hardware``) for the hours left in the month.
    """
    platform = arithmetic.platform_of(target)
    hard = [b for b in store_costs.budgets(db) if b["hard"] and b["scope"] in ("all", platform)]
    if not hard:
        return
    now = store_now() if now is None else now
    candidate = {"id": 0, "target": target, "status": "running", "paused_reason": None,
                 "meta": {"options": dict(options), "project": options.get("project")}, "name": "(new)"}
    summary = month_summary(db, now=now, candidate=candidate)
    new = next((d for p in summary["platforms"].values() for d in p["deployments"] if d["deployment_id"] == 0), None)
    added = new["projected_usd"] if new else 0.0
    for budget in summary["budgets"]:
        if not budget["hard"] or budget["scope"] not in ("all", platform):
            continue
        if budget["projected_usd"] > budget["amount_usd"] + 1e-9:
            spent = budget["spent_usd"]
            message = (f"refused by the hard {budget['scope']} budget ${budget['amount_usd']:.2f}/month: "
                       f"month-to-date ${spent:.2f} + projected ${budget['projected_usd'] - spent:.2f} "
                       f"(this deploy ${added:.2f}) = ${budget['projected_usd']:.2f} > ${budget['amount_usd']:.2f}; "
                       f"lower --requests-per-month, pick cheaper hardware, stop another deployment, or raise it "
                       f"with `pocketops budget set {budget['scope']} AMOUNT --hard`")
            store_costs.audit(db, who or actor("dashboard"), "refused", f"deploy to {target} {message}",
                              scope=budget["scope"],
                              figures={"month": summary["month"], "spent_usd": spent,
                                       "projected_usd": budget["projected_usd"], "deploy_usd": added,
                                       "amount_usd": budget["amount_usd"], "target": target,
                                       "requests_per_month": options.get("requests_per_month"),
                                       "hardware": options.get("hardware")})
            raise BudgetRefused(f"deploy to {target} {message}")


# -- warnings ----------------------------------------------------------------------------------

def raise_budget_alert(db, *, scope: str, level: float, spent: float, amount: float, month: str,
                       who: str = "worker") -> None:
    """Audit the warning, open a ``budget`` alert (once per key) and queue its notification."""
    message = f"{scope} budget: ${spent:.2f} spent of ${amount:.2f} ({level:g}% level reached in {month})"
    store_costs.audit(db, who, "warning", message, scope=scope,
                      figures={"level": level, "spent_usd": spent, "amount_usd": amount, "month": month})
    events.log(db, "warning", "costs", message)
    from core import notify
    from store.alerts import open_alert

    alert_id, created = open_alert(db, kind="budget", deployment_id=None, detector="budget", value=spent,
                                   threshold=amount * level / 100.0, message=message,
                                   key=f"budget:{scope}:{month}:{level:g}",
                                   evidence={"scope": scope, "level": level, "month": month})
    if created:  # once per level per month; the monitor pass sends it (retried with backoff there)
        notify.queue_for(db, alert_id)


def warn(db, summary: dict, *, who: str = "worker") -> list[tuple[str, float]]:
    """Raise each budget's reached warn levels not raised yet this month; those raised."""
    month_start, _ = arithmetic.month_bounds(summary["month"])
    raised = []
    for budget in summary["budgets"]:
        for level in arithmetic.check_levels(budget["warn"], budget["amount_usd"], budget["spent_usd"]):
            if not store_costs.warned(db, budget["scope"], level, month_start):
                raise_budget_alert(db, scope=budget["scope"], level=level, spent=budget["spent_usd"],
                                   amount=budget["amount_usd"], month=summary["month"], who=who)
                raised.append((budget["scope"], level))
    return raised


# -- after: stop the spending -------------------------------------------------------------------

def enforce(db, summary: dict, clients: Clients | None = None, *, who: str = "worker") -> list[dict]:
    """Stop every paid live deployment under a hard budget its measured spend reached; what was done."""
    clients = clients or Clients()
    done = []
    for budget in summary["budgets"]:
        if not budget["hard"] or budget["spent_usd"] < budget["amount_usd"]:
            continue
        for plat_name, plat in summary["platforms"].items():
            if budget["scope"] not in ("all", plat_name):
                continue
            for entry in plat["deployments"]:
                if entry["status"] not in LIVE or entry.get("paused_reason") or entry["target"] not in PAID_TARGETS:
                    continue
                reason = (f"paused by the hard {budget['scope']} budget: ${budget['spent_usd']:.2f} spent of "
                          f"${budget['amount_usd']:.2f} in {summary['month']}")
                try:
                    done.append(pause(db, entry["deployment_id"], reason, clients, who=who, budget=budget))
                except Exception as exc:   # recorded; the next refresh tries again, the others still stop
                    store_costs.audit(db, who, "pause-failed", f"deployment {entry['deployment_id']}: {exc}",
                                      scope=budget["scope"], deployment_id=entry["deployment_id"],
                                      figures={"spent_usd": budget["spent_usd"], "amount_usd": budget["amount_usd"]})
                    events.log(db, "error", "costs", f"deployment {entry['deployment_id']}: could not stop it: {exc}")
    return done


def _row(db, deployment_id: int) -> dict:
    from store import deployments as store_deployments

    row = store_deployments.get(db, int(deployment_id))
    if row is None:
        raise DeployError(f"deployment {deployment_id} does not exist; see `pocketops deployments list`")
    return row


def pause(db, deployment_id: int, reason: str, clients: Clients, *, who: str = "worker",
          budget: dict | None = None) -> dict:
    """Stop one deployment's spending the platform's documented way, and record why."""
    row = _row(db, deployment_id)
    meta = row["meta"] or {}
    if row["target"] == "spaces-docker":
        runtime = _call(f"pause Space {meta.get('repo_id')}", clients.hub_api().pause_space, meta["repo_id"])
        how, before = f"paused the Space (stage {runtime.stage})", {}
    elif row["target"] == "gcp":
        before = _scale_to_zero(meta["service"], clients)
        how = "scaled the Cloud Run service to 0 instances (manual scaling)"
    else:
        raise DeployError(f"deployment {deployment_id} ({row['target']}) costs nothing to stop")
    store_costs.set_paused(db, deployment_id, reason, status="stopped",
                           meta={"budget_pause": {"at": time.time(), "how": how, "before": before,
                                                  "status_before": row["status"]}})
    store_costs.audit(db, who, "paused", f"deployment {deployment_id}: {how}; {reason}",
                      scope=(budget or {}).get("scope"), deployment_id=deployment_id,
                      figures={k: (budget or {}).get(k) for k in ("spent_usd", "amount_usd", "projected_usd")})
    events.log(db, "warning", "costs", f"deployment {deployment_id}: {how}; {reason}")
    return {"deployment_id": deployment_id, "target": row["target"], "action": how}


def resume(db, deployment_id: int, clients: Clients | None = None, *, who: str | None = None) -> dict:
    """Undo a budget pause (restart the Space / automatic scaling again), audited; the row."""
    clients = clients or Clients()
    who = who or actor("cli")
    row = _row(db, deployment_id)
    reason = store_costs.paused_reason(db, deployment_id)
    if not reason:
        raise DeployError(f"deployment {deployment_id} was not paused by a budget; nothing to resume")
    meta = row["meta"] or {}
    pause_meta = meta.get("budget_pause") or {}
    if row["target"] == "spaces-docker":
        runtime = _call(f"restart Space {meta.get('repo_id')}", clients.hub_api().restart_space, meta["repo_id"])
        how, status = f"restarted the Space (stage {runtime.stage})", "deploying"
    elif row["target"] == "gcp":
        _restore_scaling(meta["service"], pause_meta.get("before") or {}, clients)
        how, status = "restored automatic scaling of the Cloud Run service", "running"
    else:
        raise DeployError(f"deployment {deployment_id} ({row['target']}) cannot be resumed here")
    summary = month_summary(db)
    store_costs.set_paused(db, deployment_id, None, status=status, meta={"budget_pause": None})
    store_costs.audit(db, who, "resumed", f"deployment {deployment_id}: {how} (was: {reason})",
                      deployment_id=deployment_id,
                      figures={"spent_usd": summary["total_usd"], "projected_usd": summary["projected_usd"]})
    events.log(db, "info", "costs", f"deployment {deployment_id}: {how}")
    return _row(db, deployment_id)


def _scale_to_zero(service_name: str, clients: Clients) -> dict:
    run_v2 = require("google.cloud.run_v2", "Stopping a Cloud Run service")
    services = clients.services_client()
    service = _call("read the Cloud Run service", services.get_service, name=service_name)
    scaling = service.scaling
    before = {"scaling_mode": int(scaling.scaling_mode), "min_instance_count": int(scaling.min_instance_count),
              "max_instance_count": int(scaling.max_instance_count)}
    service.scaling = run_v2.ServiceScaling(scaling_mode=run_v2.ServiceScaling.ScalingMode.MANUAL,
                                            manual_instance_count=0)
    operation = _call("scale the Cloud Run service to zero", services.update_service, service=service)
    _call("scale the Cloud Run service to zero", operation.result, timeout=clients.timeout_s)
    return before


def _restore_scaling(service_name: str, before: dict, clients: Clients) -> None:
    run_v2 = require("google.cloud.run_v2", "Resuming a Cloud Run service")
    services = clients.services_client()
    service = _call("read the Cloud Run service", services.get_service, name=service_name)
    service.scaling = run_v2.ServiceScaling(scaling_mode=run_v2.ServiceScaling.ScalingMode.AUTOMATIC,
                                            min_instance_count=int(before.get("min_instance_count") or 0),
                                            max_instance_count=int(before.get("max_instance_count") or 0))
    operation = _call("restore the Cloud Run service's scaling", services.update_service, service=service)
    _call("restore the Cloud Run service's scaling", operation.result, timeout=clients.timeout_s)


# -- the job -------------------------------------------------------------------------------------

def refresh(db, *, clients: Clients | None = None, now: float | None = None, who: str = "worker",
            check=None) -> dict:
    """Collect, then warn and stop per the budgets; returns the month's summary with what was done."""
    clients = clients or Clients()
    pulled = collect(db, now=now, clients=clients)
    pace.hold("costs:collected", check=check)   # tests kill -9 here: samples written, job not finished
    summary = month_summary(db, now=now)
    raised = warn(db, summary, who=who)
    stopped = enforce(db, summary, clients, who=who)
    if stopped:
        summary = month_summary(db, now=now)
    for problem in pulled["errors"]:
        events.log(db, "warning", "costs", problem)
    return {**summary, "collected": pulled, "warnings": [f"{s} {lvl:g}%" for s, lvl in raised], "stopped": stopped}


def run(ctx) -> dict:
    """Handler of job kind ``costs``: one refresh (collect, warn, stop), or a confirmed resume; a short result."""
    from core import jobkinds

    payload = jobkinds.payload_of(ctx.job)
    if payload.resume_deployment_id is not None:
        ctx.progress(stage="resuming")
        row = resume(ctx.db, payload.resume_deployment_id, who=payload.who)
        return {"resumed": row["id"], "status": row["status"]}
    ctx.progress(stage="collecting")
    result = refresh(ctx.db, who=payload.who, check=ctx.check)
    return {"month": result["month"], "total_usd": result["total_usd"], "projected_usd": result["projected_usd"],
            "collected": result["collected"], "warnings": result["warnings"], "stopped": result["stopped"]}
