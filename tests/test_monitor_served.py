"""GET /v1/monitor served for real: a digits bundle on 127.0.0.1 (the bundle's server.py) and as the
Cloud Run function; in-distribution traffic raises nothing, noise raises an event soon after it starts."""
from __future__ import annotations

import json

import numpy as np
import pytest

import store
from deployers.bundle import build_bundle
from deployers.gcp import build_source_zip, safe_extract
from tests._deploy_helpers import make_variant
from tests._serve_helpers import call, running_function, running_server

# benchmarks/drift.py (digits MLP, 10 repeats): our median delay on "noise 4" was 8 requests,
# 10 in --short; this bundle's model is a softmax regression, not that MLP: allow 50.
NOISE_DELAY = 50


def digits_test_split() -> np.ndarray:
    """Raw digits (0..16) of the test split: never used to build or calibrate the bundle."""
    from core.datasets import BUILTIN_FILE, split_indices

    with np.load(BUILTIN_FILE) as data:
        images, labels = data["images"].astype(np.float64), data["labels"]
    _tr, _va, te = split_indices(labels)
    return images[te][:, None]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitor-served")
    db = store.connect(tmp / "t.db")
    return build_bundle(db, tmp / "t.db", make_variant(db, tmp / "t.db"))


def predict(port: int, batch: np.ndarray) -> None:
    answer = call(port, "POST", "/v1/predict", json.dumps({"inputs": batch.tolist()}).encode())
    assert answer.status == 200, answer.body[:300]


def test_bundle_carries_a_calibrated_monitor(bundle):
    config = json.loads((bundle.path / "monitor.json").read_text())
    assert set(config["detectors"]) == {"distance", "distance_fast", "confidence", "classes"}
    assert config["calibration"]["ert_target"] == 10_000
    assert config["calibration"]["false_alarms_per_10k"] <= 1.0
    assert bundle.model_json["monitor"]["calibrated"] is True


def test_local_server_stays_quiet_in_distribution_then_alarms_on_noise(bundle):
    X = digits_test_split()
    rng = np.random.default_rng(5)
    with running_server(bundle.path) as server:
        for _ in range(40):  # 2,560 in-distribution requests' samples
            predict(server.port, X[rng.integers(0, len(X), 64)])
        quiet = call(server.port, "GET", "/v1/monitor?since=0&limit=5000").json()
        assert quiet["seq"] == 2560 and quiet["events"] == [], quiet["events"]
        assert len(quiet["signals"]) == 2560 and quiet["signals"][0]["seq"] == 1
        onset = quiet["seq"]
        for _ in range(4):
            noisy = np.clip(X[rng.integers(0, len(X), 64)] + rng.normal(0, 4, (64, 1, 8, 8)), 0, 16)
            predict(server.port, noisy)
        loud = call(server.port, "GET", f"/v1/monitor?since={onset}").json()
        assert loud["server_id"] == quiet["server_id"] and loud["first_seq"] == 1
        assert [s["seq"] for s in loud["signals"]] == list(range(onset + 1, onset + 257))
        assert loud["events"], "no event after 256 noisy requests"
        first = loud["events"][0]
        assert onset < first["seq"] <= onset + NOISE_DELAY, first
        assert first["detector"] in ("distance", "confidence") and first["kind"] in ("drift", "confidence")
        assert first["value"] > first["threshold"]
        held = {q["seq"]: q for q in loud["quarantine"]}
        assert first["quarantine"] and set(first["quarantine"]) <= set(held) and first["seq"] in held
        sample = held[first["seq"]]["input"]
        assert np.asarray(sample).shape == (1, 8, 8)  # the input as the server received it, reshaped
        assert set(loud["detectors"]) == {"distance", "distance_fast", "confidence", "classes"}
        assert loud["calibration"]["signal"] == "input"
        # A pull from the last seq seen returns nothing new, and a retried pull the same events.
        again = call(server.port, "GET", f"/v1/monitor?since={onset}").json()
        assert [e["event_id"] for e in again["events"]] == [e["event_id"] for e in loud["events"]]
        assert call(server.port, "GET", f"/v1/monitor?since={loud['seq']}").json()["signals"] == []


def test_bad_query_values_get_400_naming_them_on_both_servers(bundle, tmp_path):
    source = tmp_path / "source"
    safe_extract(build_source_zip(bundle), source)
    with running_server(bundle.path) as local, running_function(source) as (_, gcp_port):
        for query, name in (("since=-1", "since"), ("since=x", "since"), ("since=1.5", "since"), ("limit=0", "limit"),
                            ("limit=5001", "limit"), ("since=1&since=2", "since")):
            answers = [call(port, "GET", f"/v1/monitor?{query}") for port in (local.port, gcp_port)]
            for answer in answers:
                assert answer.status == 400 and name in answer.json()["error"], (query, answer.body)
            assert answers[0].body == answers[1].body
        predict(gcp_port, digits_test_split()[:3])
        ok = call(gcp_port, "GET", "/v1/monitor?since=1&limit=1").json()
        assert ok["seq"] == 3 and [s["seq"] for s in ok["signals"]] == [2] and "calibration" in ok
