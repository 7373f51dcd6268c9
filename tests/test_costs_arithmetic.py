"""Cost arithmetic (core/costs.py) against bills computed by hand from the price table."""
from __future__ import annotations

import calendar

import pytest

from core import costs
from deployers.pricing import price_table

P = price_table()
JAN = "2026-01"


def ts(day: int, hour: int = 0, month: int = 1) -> float:
    return float(calendar.timegm((2026, month, day, hour, 0, 0)))


def gcp(dep: int, start: float, end: float, requests: float, instance_s: float, account: str | None = None) -> dict:
    return {"key": f"deployment:{dep}", "platform": "gcp", "deployment_id": dep, "account": account,
            "period_start": start, "period_end": end,
            "usage": {"requests": requests, "instance_s": instance_s, "vcpu": 1.0, "memory_gib": 0.5}}


def space(dep: int, start: float, end: float, hours: float, hardware: str = "t4-small") -> dict:
    return {"key": f"deployment:{dep}", "platform": "spaces", "deployment_id": dep, "period_start": start,
            "period_end": end, "usage": {"hardware": hardware, "hours": hours}}


def dep(id_: int, target: str, status: str = "stopped", **options) -> dict:
    return {"id": id_, "target": target, "status": status, "meta": {"options": options, "project": "p"}}


def line(summary: dict, platform: str, id_: int) -> dict:
    return next(d for d in summary["platforms"][platform]["deployments"] if d["deployment_id"] == id_)


def test_free_tier_crossed_mid_month_bills_only_what_follows():
    # First half: 1.5 M requests and 100,000 s of 1 vCPU / 0.5 GiB: all inside the free tier.
    # Second half the same: 20,000 vCPU-s over 180,000 -> 20,000 * 0.000024 = 0.48; GiB-s
    # 100,000 of 360,000 are free; 1 M requests over 2 M -> 0.40. Bill: 0.88.
    first = gcp(1, ts(1), ts(15), 1_500_000, 100_000)
    second = gcp(1, ts(15), ts(31), 1_500_000, 100_000)
    mid = costs.summarize(JAN, ts(15), [first], [dep(1, "gcp")], [], P)
    assert mid["platforms"]["gcp"]["month_to_date_usd"] == 0.0
    assert mid["platforms"]["gcp"]["free_tier_left"] == {"vcpu_seconds": 80_000, "gib_seconds": 310_000,
                                                         "requests": 500_000}
    end = costs.summarize(JAN, ts(31, 23), [first, second], [dep(1, "gcp")], [], P)
    assert end["platforms"]["gcp"]["month_to_date_usd"] == pytest.approx(0.88)
    assert end["platforms"]["gcp"]["free_tier_left"]["requests"] == 0


def test_two_deployments_share_one_free_tier_per_billing_account():
    # D1 first: 90,000 vCPU-s, 1 M requests (free). D2 later: 100,000 vCPU-s of which 90,000 are
    # left free -> 10,000 * 0.000024 = 0.24; its 1 M requests exactly use up the rest.
    d1 = gcp(1, ts(1), ts(5), 1_000_000, 90_000)
    d2 = gcp(2, ts(5), ts(10), 1_000_000, 100_000)
    s = costs.summarize(JAN, ts(10), [d1, d2], [dep(1, "gcp"), dep(2, "gcp")], [], P)
    assert line(s, "gcp", 1)["month_to_date_usd"] == 0.0
    assert line(s, "gcp", 2)["month_to_date_usd"] == pytest.approx(0.24)
    # In two billing accounts each has its own tier: nothing to pay.
    apart = [dict(d1, account="a"), dict(d2, account="b")]
    s2 = costs.summarize(JAN, ts(10), apart, [dep(1, "gcp"), dep(2, "gcp")], [], P)
    assert s2["platforms"]["gcp"]["month_to_date_usd"] == 0.0


def test_a_sample_across_the_month_boundary_counts_pro_rata_in_utc():
    # 2 h of t4-small from Jan 31 23:00 to Feb 1 01:00 UTC: 1 h in each month at 0.40/h.
    s = space(1, ts(31, 23), ts(1, 1, month=2), 2.0)
    jan = costs.summarize(JAN, ts(1, 2, month=2), [s], [dep(1, "spaces-docker")], [], P)
    feb = costs.summarize("2026-02", ts(1, 2, month=2), [s], [dep(1, "spaces-docker")], [], P)
    assert jan["total_usd"] == pytest.approx(0.40) and feb["total_usd"] == pytest.approx(0.40)
    assert jan["hours_left"] == 0 and jan["projected_usd"] == pytest.approx(0.40)


def test_zero_traffic_costs_nothing_and_projects_nothing_measured():
    samples = [gcp(1, ts(1, h), ts(1, h + 1), 0, 0) for h in range(0, 23)] + [gcp(1, ts(1, 23), ts(2, 1), 0, 0)]
    s = costs.summarize(JAN, ts(2, 1), samples, [dep(1, "gcp", status="running")], [], P)
    d = line(s, "gcp", 1)
    assert d["month_to_date_usd"] == 0 and d["projected_usd"] == 0 and d["source"] == "measured"


def test_projection_uses_the_last_24_hours_once_there_are_24_hours_of_data():
    # A t4-small Space running since Jan 9 00:00; now Jan 11 00:00: 48 h * 0.40 = 19.20 so far,
    # 24 h observed at 1 h/h -> 21 days * 24 h = 504 h more at 0.40 = 201.60.
    samples = [space(1, ts(9), ts(10), 24.0), space(1, ts(10), ts(11), 24.0)]
    s = costs.summarize(JAN, ts(11), samples, [dep(1, "spaces-docker", status="running", hardware="t4-small")], [], P)
    d = line(s, "spaces", 1)
    assert d["month_to_date_usd"] == pytest.approx(19.2)
    assert d["projected_usd"] == pytest.approx(19.2 + 201.6) and d["source"] == "measured"


def test_with_less_than_24_hours_the_plan_assumption_projects_and_says_estimated():
    # 2 h of data but the Space sleeps (0 hours); the plan says cpu-upgrade all month:
    # the 21 days left * 24 h * 0.03 = 15.12, marked estimated.
    samples = [space(1, ts(10, 22), ts(11), 0.0, hardware="cpu-upgrade")]
    s = costs.summarize(JAN, ts(11), samples, [dep(1, "spaces-docker", status="running", hardware="cpu-upgrade")],
                        [], P)
    d = line(s, "spaces", 1)
    assert d["source"] == "estimated" and s["platforms"]["spaces"]["source"] == "estimated"
    assert d["projected_usd"] == pytest.approx(15.12)


def test_budgets_report_their_spent_fraction_and_warn_levels():
    samples = [space(1, ts(1), ts(2), 10.0)]          # 4.00
    budgets = [{"scope": "all", "amount_usd": 5.0, "hard": True, "warn": [50, 90]},
               {"scope": "gcp", "amount_usd": 1.0, "hard": False, "warn": []}]
    s = costs.summarize(JAN, ts(2), samples, [dep(1, "spaces-docker")], budgets, P)
    assert [b["spent_fraction"] for b in s["budgets"]] == [0.8, 0.0]
    assert costs.check_levels([50, 90], 5.0, 4.0) == [50.0]


def test_bad_month_is_one_line():
    with pytest.raises(ValueError, match="expected YYYY-MM"):
        costs.month_bounds("2026-13")
