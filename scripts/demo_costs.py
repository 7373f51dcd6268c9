"""Cost rows for the demo database (Costs panel screenshots): typed demo values, no network.

Two paid releases beside the demo's free ones: a Google Cloud function with ten days of
Cloud Monitoring-shaped usage, and a Docker Space on t4-small that a hard Spaces budget paused
(its reason recorded as the worker records it). Budgets, warnings, a refused deploy and the
phone's own CPU time and battery complete the month. All figures are typed demo values
(the store carries the demo mark); the price table is deployers.pricing's.
"""
from __future__ import annotations

import time

from store import costs as store_costs
from store import deployments as store_deployments

DAY = 86_400.0


def seed(db, variant_id: int | None = None, *, now: float | None = None) -> dict:
    """Insert the demo's paid releases, their usage, budgets and audit entries; their ids."""
    from core.costs import month_bounds, month_of

    now = time.time() if now is None else now
    start, _ = month_bounds(month_of(now))
    since = max(start, now - 10 * DAY)
    fn = store_deployments.create(db, variant_id=variant_id, target="gcp", name="digits-fn",
                                  meta={"project": "demo-project", "function_name": "digits-fn", "served": True,
                                        "service": "projects/demo-project/locations/us-central1/services/digits-fn",
                                        "options": {"requests_per_month": 400_000}, "demo": True})
    store_deployments.update(db, fn["id"], status="running", url="https://digits-fn-demo.a.run.app")
    space = store_deployments.create(db, variant_id=variant_id, target="spaces-docker", name="you/digits-api",
                                     meta={"repo_id": "you/digits-api", "served": True, "demo": True,
                                           "options": {"hardware": "t4-small"}})
    store_deployments.update(db, space["id"], status="running", url="https://you-digits-api.hf.space")
    hour, t = 3600.0, since
    while t + hour <= now:
        busy = 1.0 + 0.8 * ((int(t // hour) % 24) in range(8, 20))   # days busier than nights
        store_costs.add_sample(db, key=f"deployment:{fn['id']}", platform="gcp", deployment_id=fn["id"],
                               period_start=t, period_end=t + hour,
                               usage={"requests": round(520 * busy), "instance_s": round(70.0 * busy, 1),
                                      "vcpu": 1.0, "memory_gib": 0.5})
        if t < since + 12 * hour:
            store_costs.add_sample(db, key=f"deployment:{space['id']}", platform="spaces", deployment_id=space["id"],
                                   period_start=t, period_end=t + hour,
                                   usage={"hardware": "t4-small", "stage": "RUNNING", "hours": 1.0})
        t += hour
    store_costs.set_budget(db, "all", 10.0, hard=True, warn=[50, 90], who="cli")
    store_costs.set_budget(db, "spaces", 4.0, hard=True, warn=[50, 90], who="dashboard")
    for level in (50.0, 90.0):
        store_costs.audit(db, "worker", "warning", f"spaces budget: level {level:g}% reached", scope="spaces",
                          figures={"level": level, "month": month_of(now), "amount_usd": 4.0})
    reason = "paused by the hard spaces budget: $4.80 spent of $4.00"
    store_costs.set_paused(db, space["id"], reason, status="stopped",
                           meta={"budget_pause": {"at": since + 12 * hour, "how": "paused the Space (stage PAUSED)",
                                                  "before": {}, "status_before": "running"}})
    store_costs.audit(db, "worker", "paused", f"deployment {space['id']}: paused the Space; {reason}",
                      scope="spaces", deployment_id=space["id"], figures={"spent_usd": 4.8, "amount_usd": 4.0})
    store_costs.audit(db, "cli", "refused", "deploy to spaces-docker refused by the hard spaces budget $4.00/month: "
                      "month-to-date $4.80 + projected $280.80 = $285.60 > $4.00", scope="spaces",
                      figures={"spent_usd": 4.8, "projected_usd": 285.6, "amount_usd": 4.0})
    for i, (kind, cpu) in enumerate((("train", 412.0), ("export", 38.5), ("bench", 12.2))):
        t0 = since + i * DAY
        store_costs.add_sample(db, key=f"job:demo-{i}", platform="local", deployment_id=None,
                               period_start=t0, period_end=t0 + cpu, usage={"cpu_s": cpu, "kind": kind})
    store_costs.add_sample(db, key="battery", platform="local", deployment_id=None, period_start=since,
                           period_end=now - hour, usage={"battery_pct": 7.5, "last_pct": 81.0})
    return {"gcp": fn["id"], "spaces": space["id"]}
