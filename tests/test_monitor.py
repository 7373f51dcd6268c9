"""Drift detectors, their calibration and the served side's bounded monitor (deployers/runtime/monitor.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deployers.runtime import monitor as mon
from deployers.runtime.monitor import ClassShares, EWMAConfidence, Monitor, PageHinkley, QueryError, calibrate, parse_query


def alarms(det, stream) -> list[int]:
    return [i for i, x in enumerate(stream) if det.update(x).drift_detected]


def test_page_hinkley_detects_a_mean_shift_at_its_index():
    rng = np.random.default_rng(7)
    stream = np.concatenate([rng.normal(0, 1, 500), rng.normal(2, 1, 200)])
    assert alarms(PageHinkley(delta=0.5, threshold=12.0, mean=0.0), stream) == [510]
    # the vectorized trace (used by calibration) is the loop's statistic
    trace = PageHinkley(delta=0.5, threshold=12.0, mean=0.0).trace(stream)
    assert int(np.flatnonzero(trace > 12.0)[0]) == 510


def test_page_hinkley_hysteresis_and_cooldown_give_one_alarm_per_drift():
    rng = np.random.default_rng(3)
    stream = np.concatenate([rng.normal(0, 1, 300), rng.normal(3, 1, 100), rng.normal(0, 1, 600), rng.normal(3, 1, 100)])
    det = PageHinkley(delta=0.5, threshold=10.0, mean=0.0)
    states = []
    hits = []
    for i, x in enumerate(stream):
        det.update(x)
        states.append(det.in_drift)
        if det.drift_detected:
            hits.append(i)
    assert hits == [305, 1005]  # one alarm per drift, none while it lasts
    assert [i for i in range(1, len(states)) if states[i - 1] and not states[i]] == [440]  # left at 0.7 x threshold


def test_page_hinkley_with_running_mean_like_river():
    rng = np.random.default_rng(3)
    rng.normal(size=1100)
    stream = np.concatenate([rng.normal(0, 1, 1000), rng.normal(3, 1, 200)])
    assert alarms(PageHinkley(), stream) == [1014]


def test_ewma_confidence_detects_a_drop_at_its_index():
    rng = np.random.default_rng(1)
    conf = np.concatenate([np.clip(rng.normal(0.95, 0.03, 400), 0, 1), np.clip(rng.normal(0.85, 0.05, 200), 0, 1)])
    assert alarms(EWMAConfidence(mean=0.95, std=0.03, threshold=3.0), conf) == [405]
    det = EWMAConfidence(mean=0.95, std=0.03, threshold=3.0)
    assert np.allclose(det.traces(conf[None, :])[0], det.trace(conf))


def test_class_shares_detects_one_class_dominating_at_its_index():
    rng = np.random.default_rng(2)
    cls = np.concatenate([rng.integers(0, 10, 600), np.where(rng.random(400) < 0.5, 3, rng.integers(0, 10, 400))])
    assert alarms(ClassShares(shares=[1] * 10, window=100, threshold=40.0), cls) == [637]
    for det in (ClassShares(shares=[1] * 10, window=100, threshold=40.0),
                ClassShares(shares=[2] + [1] * 9, window=100, threshold=40.0, reference_size=300)):
        loop = mon._Detector.trace(det, cls)
        assert np.allclose(det.trace(cls)[99:], loop[99:])


@pytest.mark.parametrize("make, stream", [
    (lambda: PageHinkley(delta=0.5, threshold=8.0, mean=0.0), np.r_[np.random.default_rng(4).normal(0, 1, 250),
                                                                     np.random.default_rng(4).normal(1.5, 1, 150)]),
    (lambda: EWMAConfidence(mean=0.9, std=0.05, threshold=2.0), np.r_[np.random.default_rng(5).normal(0.9, 0.05, 250),
                                                                       np.random.default_rng(5).normal(0.8, 0.05, 150)]),
    (lambda: ClassShares(shares=[1, 1, 1], window=50, threshold=15.0), np.r_[np.random.default_rng(6).integers(0, 3, 250),
                                                                              np.zeros(150, dtype=int)]),
])
def test_state_survives_json_and_continues_identically(make, stream):
    a, b = make(), make()
    for x in stream[:200]:
        a.update(x)
    restored = type(a).from_dict(json.loads(json.dumps(a.to_dict())))
    assert mon._Detector.from_dict(a.to_dict()).to_dict() == a.to_dict()
    for x in stream[:200]:
        b.update(x)
    rest_a = [restored.update(x).drift_detected for x in stream[200:]]
    rest_b = [b.update(x).drift_detected for x in stream[200:]]
    assert rest_a == rest_b and any(rest_a)
    assert restored.to_dict() == b.to_dict()


def _held_out(rng, n):
    """Signals shaped like a digits classifier's: gamma distances, confidences near 1, skewed classes."""
    return rng.gamma(4.0, 1.0, n), np.clip(1 - rng.exponential(0.04, n), 0, 1), rng.choice(10, n, p=np.r_[[0.14] * 5, [0.06] * 5])


def test_calibration_meets_its_budget_on_fresh_held_out_streams():
    rng = np.random.default_rng(11)
    d, c, y = _held_out(rng, 300)
    config = calibrate(d, c, y, 10)
    assert config["calibration"]["false_alarms_per_10k"] <= 1.0
    assert config["calibration"]["ert_estimate"] >= 10_000
    # 30,000 fresh requests of the same distribution through the served monitor.
    d2, c2, y2 = _held_out(np.random.default_rng(12), 30_000)
    m = Monitor(config)
    for i in range(0, 30_000, 64):
        j = slice(i, i + 64)
        m.observe(np.zeros((len(y2[j]), 4)), y2[j], c2[j], d2[j])
    assert len(m.snapshot(0)["events"]) <= 3  # ≤ 1 per 10k
    # ...and a shifted distance is caught soon.
    base = m.seq
    for _ in range(10):
        m.observe(np.zeros((64, 4)), y2[:64], c2[:64], d2[:64] + 4.0)
    events = [e for e in m.snapshot(base)["events"] if e["detector"] == "distance"]
    assert events and events[0]["seq"] - base <= 100


def test_query_values():
    assert parse_query("") == (0, 1000)
    assert parse_query("since=12&limit=5000") == (12, 5000)
    for bad, name in (("since=-1", "since"), ("since=abc", "since"), ("since=1.5", "since"), ("limit=0", "limit"),
                      ("limit=5001", "limit"), ("since=1&since=2", "since"), ("limit=", "limit"), ("since=" + "9" * 30, "since")):
        with pytest.raises(QueryError, match=name):
            parse_query(bad)


def test_monitor_stays_bounded_and_pages_by_seq():
    rng = np.random.default_rng(0)
    d, c, y = _held_out(rng, 300)
    config = calibrate(d, c, y, 10, streams=20)
    for det in config["detectors"].values():
        det["params"]["threshold"] = 0.5  # alarms all the time: events and quarantine fill up
        det["params"]["cooldown"] = 5
        det["params"]["hysteresis"] = 0.0
    m = Monitor(config, ring=2000, events=50, quarantine_per_event=8)
    def held() -> int:
        """Everything the monitor keeps that could grow with traffic."""
        return (len(m._signals) + len(m._events) + len(m._quarantine) + len(m._refs) + len(m._recent)
                + sum(len(e["quarantine"]) for e in m._events) + len(m.detectors["classes"]._window))

    sizes = []
    for i in range(100_000 // 64 + 1):
        j = rng.integers(0, 300, 64)
        m.observe(rng.normal(size=(64, 8, 8)), y[j], c[j], d[j] + (i % 3))
        if i in (400, 1500):
            sizes.append(held())
    snap = m.snapshot(0, 5000)
    assert snap["seq"] == m.seq >= 100_000
    assert len(snap["signals"]) == 2000 and snap["first_seq"] == m.seq - 1999
    assert len(snap["events"]) == 50 and len(m._quarantine) <= 50 * 8
    assert {q["seq"] for q in snap["quarantine"]} == {s for e in snap["events"] for s in e["quarantine"]}
    bound = 2000 + 50 + 3 * 50 * 8 + 8 + 100  # ring, events, quarantine (inputs, refs, lists), recent, window
    assert max(sizes) <= bound and held() <= bound and len(json.dumps(m.snapshot(0, 5000))) < 2_000_000  # no growth from 25k to 100k requests
    page = m.snapshot(m.seq - 10, 3)
    assert [s["seq"] for s in page["signals"]] == [m.seq - 9, m.seq - 8, m.seq - 7]
    assert len({e["event_id"] for e in snap["events"]}) == 50
    json.dumps(snap)  # all JSON
