"""Alerts for the demo database (screenshots): what a monitor pass of the serving local release stored.

Synthetic, seeded and marked as such (``evidence.demo``): 600 served requests whose distance to
the training data sits near 1 until Gaussian noise starts at request 420, a drift alert where the
distance detector fired, its quarantined digits (real held-out digits with that noise added, one
already labelled), a confidence alert acknowledged earlier and a resolved ``down`` alert.
"""
from __future__ import annotations

import numpy as np

from store import alerts as store_alerts
from store import deployments as store_deployments

SERVER_ID = "demo-5f3a9c"
NOISE_FROM = 420
ALARM_AT = 447


def seed(db, deployment_ids: list[int]) -> list[int]:
    """Insert the demo alerts for the running local release among ``deployment_ids``; their ids."""
    from core.datasets import BUILTIN_FILE

    local = next((store_deployments.get(db, i) for i in deployment_ids
                  if store_deployments.get(db, i)["target"] == "local" and store_deployments.get(db, i)["status"] == "running"), None)
    if local is None:
        return []
    dep = local["id"]
    rng = np.random.default_rng(8)
    with np.load(BUILTIN_FILE) as data:
        images, labels = data["images"][-40:].astype(np.float64), data["labels"][-40:]
    t0 = local["updated_at"] + 60
    signals, quarantine = [], []
    for seq in range(1, 601):
        noisy = seq >= NOISE_FROM
        pred = int(labels[seq % 40]) if not noisy or rng.random() < 0.55 else int(rng.choice([1, 8, 8, 3]))
        conf = float(np.clip(rng.normal(0.62 if noisy else 0.93, 0.12 if noisy else 0.05), 0.1, 1.0))
        dist = float(max(0.2, rng.normal(1.9 if noisy else 1.0, 0.35 if noisy else 0.15)))
        signals.append({"seq": seq, "t": t0 + seq * 2.0, "pred": pred, "confidence": conf, "distance": dist})
        if ALARM_AT - 3 <= seq <= ALARM_AT:
            img = np.clip(images[seq % 40] + rng.normal(0, 4.0, (8, 8)), 0, 16).round()
            quarantine.append({"seq": seq, "input": img.tolist(), "pred": pred, "confidence": conf})
    store_alerts.add_signals(db, dep, SERVER_ID, signals)
    store_alerts.add_quarantine(db, dep, SERVER_ID, quarantine)
    store_alerts.set_label(db, dep, SERVER_ID, quarantine[0]["seq"], str(int(labels[quarantine[0]["seq"] % 40])))
    calibration = {"ert_target": 10000, "false_alarms_per_10k": 0.6, "signal": "distance"}
    detectors = {"distance": {"params": {"delta": 0.05, "cooldown": 200}, "threshold": 14.2, "state": {}},
                 "confidence": {"params": {"alpha": 0.02}, "threshold": 0.21, "state": {}}}
    store_alerts.save_cursor(db, dep, server_id=SERVER_ID, seq=600, info={"detectors": detectors, "calibration": calibration})
    window = [s for s in signals if ALARM_AT - 300 <= s["seq"] <= ALARM_AT + 200]
    base = {"server_id": SERVER_ID, "signals": window, "target": "local", "version": local["version"],
            "url": local["url"], "variant_id": local["variant_id"], "labels": [str(i) for i in range(10)],
            "calibration": calibration, "demo": True}
    ids = []
    down, _ = store_alerts.open_alert(
        db, kind="down", deployment_id=dep, detector="health", value=3.0, threshold=3.0, key="demo:down",
        message="local v2 is down: 3 checks in a row failed; last: not answering: [Errno 111] Connection refused",
        evidence={**base, "signals": [], "reason": "not answering: [Errno 111] Connection refused"})
    store_alerts.set_status(db, down, "resolved")
    conf, _ = store_alerts.open_alert(
        db, kind="confidence", deployment_id=dep, detector="confidence", value=0.27, threshold=0.21, key="demo:conf",
        request_seq=452, message="mean confidence fell 0.27 below its reference (threshold 0.21)",
        evidence={**base, "event_id": "demo-2", "quarantine": [], "detector": detectors["confidence"]})
    store_alerts.set_status(db, conf, "acked")
    drift, _ = store_alerts.open_alert(
        db, kind="drift", deployment_id=dep, detector="distance", value=15.8, threshold=14.2, key="demo:drift",
        request_seq=ALARM_AT, message="inputs moved away from the training data: Page-Hinkley 15.8 > 14.2",
        evidence={**base, "event_id": "demo-1", "quarantine": [q["seq"] for q in quarantine],
                  "detector": detectors["distance"]})
    ids += [down, conf, drift]
    return ids
