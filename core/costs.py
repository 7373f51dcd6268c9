"""Cost arithmetic as pure functions over usage samples and a dated price table.

Nothing here reads the store or the network: :func:`summarize` takes samples (dicts as
``store.costs.samples`` returns them), the deployments they belong to, the budgets and a price
table, and returns the month's figures. The rules follow the bills:

* Months are UTC calendar months; a sample straddling a boundary counts pro rata.
* Cloud Run's free tier (vCPU-seconds, GiB-seconds, requests) belongs to the billing account
  and the month, not to a deployment: it is used up in time order by all the account's
  deployments, and each deployment pays for what it used after the tier ran out.
* Projection = month-to-date + the usage rate observed over the last 24 h x the hours left,
  billed with the same free tier. With less than 24 h of data the plan's assumption (its
  traffic or hardware) gives the rate instead, and the figure says ``"estimated"``.

The price table is passed in (``deployers.pricing.price_table()``): core never imports the deployers.
"""
from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable

DAY_S = 86_400.0
WINDOW_S = DAY_S               # the observed-rate window
PLATFORMS = ("local", "spaces", "gcp")
SCOPES = ("all", *PLATFORMS)
SPACES_TARGETS = ("spaces-static", "spaces-docker")


def platform_of(target: str) -> str:
    """The billing platform of a deploy target: local, spaces or gcp."""
    if target in SPACES_TARGETS or target.startswith("spaces"):
        return "spaces"
    return "gcp" if target == "gcp" else "local"


# -- months --------------------------------------------------------------------------------

def month_bounds(month: str) -> tuple[float, float]:
    """``"2026-03"`` -> (start, end) as UTC epoch seconds; a one-line ValueError otherwise."""
    try:
        year, mon = (int(p) for p in month.split("-"))
        if not 1 <= mon <= 12 or len(month) != 7:
            raise ValueError
    except ValueError:
        raise ValueError(f"month {month!r}: expected YYYY-MM, e.g. 2026-03") from None
    start = calendar.timegm((year, mon, 1, 0, 0, 0))
    end = calendar.timegm((year + (mon == 12), mon % 12 + 1, 1, 0, 0, 0))
    return float(start), float(end)


def month_of(ts: float) -> str:
    """The UTC month ``YYYY-MM`` that ``ts`` falls in."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m")


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    """Seconds ``[a0, a1)`` and ``[b0, b1)`` share."""
    return max(0.0, min(a1, b1) - max(a0, b0))


def _scaled(usage: dict, fraction: float) -> dict:
    return {k: (v * fraction if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
            for k, v in usage.items()}


def clip(sample: dict, start: float, end: float) -> dict | None:
    """The part of ``sample`` inside ``[start, end)`` (numbers pro rata), or None if none is."""
    s0, s1 = float(sample["period_start"]), float(sample["period_end"])
    if s1 <= s0:  # an instant (a job's CPU): in or out
        return sample if start <= s0 < end else None
    if start <= s0 and s1 <= end:
        return sample   # wholly inside (the common case): shared, never modified
    inside = overlap(s0, s1, start, end)
    if inside <= 0:
        return None
    fraction = inside / (s1 - s0)
    return {**sample, "period_start": max(s0, start), "period_end": min(s1, end),
            "usage": _scaled(sample.get("usage") or {}, fraction)}


# -- bills -----------------------------------------------------------------------------------

_NOT_SUMMED = ("vcpu", "memory_gib", "counter", "since", "last_pct")


@dataclass
class Line:
    """One deployment's (or key's) figures for the month."""

    key: str
    platform: str
    deployment_id: int | None
    account: str | None = None
    usage: dict = field(default_factory=dict)
    cost_usd: float = 0.0


def _gcp_units(usage: dict) -> tuple[float, float, float]:
    seconds = float(usage.get("instance_s") or 0.0)
    return (seconds * float(usage.get("vcpu") or 1.0), seconds * float(usage.get("memory_gib") or 0.5),
            float(usage.get("requests") or 0.0))


def bill(samples: Iterable[dict], prices: Any, accounts: dict[int, str] | None = None) -> dict[str, Line]:
    """Cost per key of samples that all lie in one month (clip them first), free tiers applied.

    ``prices.cloud_run`` / ``prices.spaces`` are ``deployers.pricing`` tables; ``accounts`` maps
    a GCP deployment id to its billing account (samples may also carry ``account``).
    """
    accounts = accounts or {}
    cr = prices.cloud_run
    free: dict[str, list[float]] = {}       # account -> [vcpu_s, gib_s, requests] left
    lines: dict[str, Line] = {}
    for s in sorted(samples, key=lambda s: (s["period_end"], s["key"])):
        usage = s.get("usage") or {}
        line = lines.get(s["key"])
        if line is None:
            account = s.get("account") or accounts.get(s.get("deployment_id")) or "default"
            line = lines[s["key"]] = Line(s["key"], s["platform"], s.get("deployment_id"),
                                          account if s["platform"] == "gcp" else None)
        totals = line.usage
        for k, v in usage.items():
            if k == "hardware":
                hours = totals.setdefault("hours_by_hardware", {})
                hours[v] = hours.get(v, 0.0) + float(usage.get("hours") or 0.0)
            elif k not in _NOT_SUMMED and v.__class__ in (int, float):
                totals[k] = totals.get(k, 0.0) + v
        if s["platform"] == "gcp":
            left = free.setdefault(line.account, [cr.free_vcpu_seconds, cr.free_gib_seconds, cr.free_requests])
            vcpu_s, gib_s, requests = _gcp_units(usage)
            billable = []
            for i, used in enumerate((vcpu_s, gib_s, requests)):
                covered = min(left[i], used)
                left[i] -= covered
                billable.append(used - covered)
            line.cost_usd += (billable[0] * cr.vcpu_second_usd + billable[1] * cr.gib_second_usd
                              + billable[2] / 1e6 * cr.per_million_requests_usd)
        elif s["platform"] == "spaces":
            hardware = usage.get("hardware") or "cpu-basic"
            line.cost_usd += float(prices.spaces.hourly_usd.get(hardware, 0.0)) * float(usage.get("hours") or 0.0)
    for line in lines.values():
        line.cost_usd = round(line.cost_usd, 6)
    return lines


def free_tier_left(samples: Iterable[dict], prices: Any, accounts: dict[int, str] | None = None) -> dict:
    """Cloud Run free tier left per billing account after ``samples`` (one month's)."""
    cr = prices.cloud_run
    left: dict[str, list[float]] = {}
    for s in samples:
        if s["platform"] != "gcp":
            continue
        account = s.get("account") or (accounts or {}).get(s.get("deployment_id")) or "default"
        acc = left.setdefault(account, [cr.free_vcpu_seconds, cr.free_gib_seconds, cr.free_requests])
        for i, used in enumerate(_gcp_units(s.get("usage") or {})):
            acc[i] = max(0.0, acc[i] - used)
    return {a: {"vcpu_seconds": round(v[0], 3), "gib_seconds": round(v[1], 3), "requests": round(v[2], 3)}
            for a, v in left.items()}


# -- projection ------------------------------------------------------------------------------

def assumed_rate(deployment: dict, prices: Any) -> dict | None:
    """Usage per hour the plan assumed for ``deployment`` (its recorded traffic or hardware), or None."""
    platform = platform_of(deployment["target"])
    options = (deployment.get("meta") or {}).get("options") or {}
    if platform == "gcp":
        requests = float(options.get("requests_per_month") or prices.default_requests_per_month)
        latency_s = float(options.get("latency_ms") or 100.0) / 1000.0
        per_h = requests / prices.hours_per_month
        return {"requests": per_h, "instance_s": per_h * latency_s, "vcpu": 1.0,
                "memory_gib": float(options.get("memory_gib") or 0.5)}
    if deployment["target"] == "spaces-docker":
        return {"hardware": options.get("hardware") or "cpu-basic", "hours": 1.0}
    return None


def _rate(samples: list[dict], now: float) -> tuple[dict, bool]:
    """Usage per hour over the last 24 h, and whether 24 h of data exist."""
    if not samples:
        return {}, False
    first = min(float(s["period_start"]) for s in samples)
    covered = now - first >= WINDOW_S - 1e-6
    window0 = now - WINDOW_S
    total: dict = {}
    for s in samples:
        if float(s["period_end"]) <= window0:
            continue
        part = clip(s, window0, now)
        if part is None:
            continue
        for k, v in (part.get("usage") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("vcpu", "memory_gib"):
                total[k] = total.get(k, 0.0) + v
            else:
                total[k] = v
    hours = WINDOW_S / 3600.0 if covered else max((now - first) / 3600.0, 1e-9)
    rate = {k: (v / hours if isinstance(v, float) and k not in ("vcpu", "memory_gib") else v) for k, v in total.items()}
    return rate, covered


def tail_samples(key: str, platform: str, deployment_id: int | None, rate: dict, now: float, end: float,
                 account: str | None = None) -> list[dict]:
    """Samples continuing ``rate`` (usage per hour) from ``now`` to the month's ``end``."""
    hours = max(0.0, end - now) / 3600.0
    if hours <= 0 or not rate:
        return []
    usage = {k: (v * hours if isinstance(v, (int, float)) and not isinstance(v, bool)
                 and k not in ("vcpu", "memory_gib") else v) for k, v in rate.items()}
    return [{"key": key, "platform": platform, "deployment_id": deployment_id, "account": account,
             "period_start": now, "period_end": end, "usage": usage, "source": "projected"}]


# -- the month ---------------------------------------------------------------------------------

def summarize(month: str, now: float, samples: list[dict], deployments: list[dict], budgets: list[dict],
              prices: Any, *, extra_tail: list[dict] | None = None) -> dict:
    """The month's figures in the shape of ``pocketops costs --json`` (see docs there).

    ``deployments`` are rows (id, target, status, meta); ``extra_tail`` adds projected samples
    (a deploy being checked against a hard budget).
    """
    start, end = month_bounds(month)
    clock = min(max(now, start), end)                # past months: no hours left; future: all
    accounts = {d["id"]: account_of(d) for d in deployments if platform_of(d["target"]) == "gcp"}
    inside = [c for c in (clip(s, start, end) for s in samples) if c is not None]
    usage_lines = [s for s in inside if s["key"].startswith("deployment:")]
    mtd = bill(usage_lines, prices, accounts)

    tails: list[dict] = list(extra_tail or [])
    sources: dict[int, str] = {}
    by_deployment: dict[int, list[dict]] = {}
    for s in usage_lines:
        by_deployment.setdefault(s["deployment_id"], []).append(s)
    for d in deployments:
        platform = platform_of(d["target"])
        key = f"deployment:{d['id']}"
        own = by_deployment.get(d["id"], [])
        live = d.get("status") in ("running", "sleeping", "deploying") and not d.get("paused_reason")
        rate, covered = _rate(own, clock)
        assumed = assumed_rate(d, prices) if live and not covered else None
        if assumed is not None:
            rate = assumed
        # Free targets (the phone, static Spaces) have no assumption to make: their price is known.
        sources[d["id"]] = "estimated" if assumed is not None else "measured"
        if live:
            tails += tail_samples(key, platform, d["id"], rate, clock, end, accounts.get(d["id"]))
    projected = bill(usage_lines + tails, prices, accounts)

    platforms: dict[str, dict] = {}
    for p in PLATFORMS:
        platforms[p] = {"month_to_date_usd": 0.0, "projected_usd": 0.0, "free_tier_left": None,
                        "source": "measured", "deployments": []}
    known = {d["id"]: d for d in deployments}
    ids = sorted({*(line.deployment_id for line in projected.values() if line.deployment_id is not None),
                  *(d["id"] for d in deployments if d.get("status") in ("running", "sleeping", "deploying"))})
    for dep_id in ids:
        d = known.get(dep_id)
        key = f"deployment:{dep_id}"
        line = mtd.get(key) or projected.get(key)
        platform = platform_of(d["target"]) if d else (line.platform if line else "local")
        m = mtd[key].cost_usd if key in mtd else 0.0
        pr = projected[key].cost_usd if key in projected else m
        source = sources.get(dep_id, "measured")
        entry = {"deployment_id": dep_id, "target": d["target"] if d else None,
                 "name": (d.get("name") or (d.get("meta") or {}).get("name")) if d else None,
                 "status": d.get("status") if d else None, "paused_reason": d.get("paused_reason") if d else None,
                 "month_to_date_usd": round(m, 4), "projected_usd": round(max(pr, m), 4), "source": source,
                 "usage": _round_usage(mtd[key].usage if key in mtd else {})}
        plat = platforms[platform]
        plat["deployments"].append(entry)
        plat["month_to_date_usd"] += m
        plat["projected_usd"] += max(pr, m)
        if source == "estimated":
            plat["source"] = "estimated"
    free = free_tier_left(usage_lines, prices, accounts)
    platforms["gcp"]["free_tier_left"] = _sum_free(free, prices)
    platforms["gcp"]["free_tier_accounts"] = free
    for plat in platforms.values():
        plat["month_to_date_usd"] = round(plat["month_to_date_usd"], 4)
        plat["projected_usd"] = round(plat["projected_usd"], 4)

    local = [s for s in inside if s["platform"] == "local"]
    local_compute = {
        "cpu_s": round(sum(float((s.get("usage") or {}).get("cpu_s") or 0.0) for s in local), 3),
        "battery_pct": round(sum(float((s.get("usage") or {}).get("battery_pct") or 0.0) for s in local), 2),
        "requests": round(sum(float((s.get("usage") or {}).get("requests") or 0.0) for s in local
                              if s["key"].startswith("deployment:"))),
    }
    total = round(sum(p["month_to_date_usd"] for p in platforms.values()), 4)
    total_projected = round(sum(p["projected_usd"] for p in platforms.values()), 4)
    budget_rows = []
    for b in budgets:
        spent = total if b["scope"] == "all" else platforms.get(b["scope"], {}).get("month_to_date_usd", 0.0)
        proj = total_projected if b["scope"] == "all" else platforms.get(b["scope"], {}).get("projected_usd", 0.0)
        amount = float(b["amount_usd"])
        budget_rows.append({"scope": b["scope"], "amount_usd": amount, "hard": bool(b["hard"]), "warn": list(b["warn"]),
                            "spent_usd": spent, "projected_usd": proj,
                            "spent_fraction": round(spent / amount, 4) if amount > 0 else (1.0 if spent > 0 else 0.0)})
    return {"month": month, "price_table_date": prices.date, "platforms": platforms, "total_usd": total,
            "projected_usd": total_projected, "budgets": budget_rows, "local_compute": local_compute,
            "hours_left": round(max(0.0, end - clock) / 3600.0, 2)}


def _sum_free(free: dict, prices: Any) -> dict:
    if not free:
        cr = prices.cloud_run
        return {"vcpu_seconds": cr.free_vcpu_seconds, "gib_seconds": cr.free_gib_seconds, "requests": cr.free_requests}
    return {k: round(sum(a[k] for a in free.values()), 3) for k in ("vcpu_seconds", "gib_seconds", "requests")}


def _round_usage(usage: dict) -> dict:
    out = {}
    for k, v in usage.items():
        if isinstance(v, float):
            out[k] = round(v, 4)
        elif isinstance(v, dict):
            out[k] = {h: round(x, 4) for h, x in v.items()}
        else:
            out[k] = v
    return out


def account_of(deployment: dict) -> str:
    """The billing account a GCP deployment's free tier belongs to (recorded, else its project)."""
    meta = deployment.get("meta") or {}
    options = meta.get("options") or {}
    return str(options.get("billing_account") or meta.get("billing_account") or meta.get("project")
               or options.get("project") or "default")


def check_levels(warn: list, amount: float, spent: float) -> list[float]:
    """The warn levels (percent) that ``spent`` has reached against ``amount``."""
    if amount <= 0:
        return [float(w) for w in warn] if spent > 0 else []
    return [float(w) for w in warn if spent >= amount * float(w) / 100.0]
