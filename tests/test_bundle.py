"""The bundle: complete, self-contained, reused, and its predictor validates and keeps statistics."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import store
from deployers.base import Bundle, DeployError
from deployers.bundle import build_bundle
from deployers.runtime.predictor import InputError, Predictor
from store import artifacts
from store import deployments as store_deployments
from tests._deploy_helpers import digits_samples, make_text_variant, make_variant


@pytest.fixture()
def built(tmp_path):
    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    vid = make_variant(db, db_path)
    return db, db_path, vid, build_bundle(db, db_path, vid)


def test_bundle_has_everything_and_is_registered(built):
    db, _db_path, vid, bundle = built
    names = [p for p, _ in bundle.files()]
    assert names == ["api.py", "model.json", "model.onnx", "monitor.json", "monitor.py", "predictor.py",
                     "reference.npz", "runtimes.py", "server.py"]
    spec = json.loads((bundle.path / "model.json").read_text())
    assert spec["labels"] == [str(i) for i in range(10)]
    assert spec["input"]["shape"] == [1, 8, 8] and spec["input"]["dtype"] == "float32"
    assert spec["preprocessing"]["scale"] == pytest.approx(1 / 16)
    assert spec["version"] == bundle.version and spec["variant_id"] == vid
    assert spec["reference"]["rows"] == 200
    row = artifacts.by_path(db, str(bundle.path))
    assert row["kind"] == "bundle" and row["size_bytes"] == sum(s for _, s in bundle.files())
    # Building again reuses the same directory, and Bundle.load reads it back.
    again = build_bundle(db, _db_path, vid)
    assert again.path == bundle.path and again.version == bundle.version
    assert Bundle.load(bundle.path).model_json["sha256"] == spec["sha256"]


def test_predictor_matches_onnxruntime_and_counts(built):
    import onnxruntime as ort

    _db, _p, _v, bundle = built
    predictor = Predictor(bundle.path)
    raw = digits_samples(16)
    got = predictor.predict(raw.tolist())
    logits = ort.InferenceSession(str(bundle.path / "model.onnx")).run(None, {"input": raw / 16.0})[0]
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(np.array(got["probabilities"]), expected, atol=1e-5)
    assert got["labels"] == [str(i) for i in expected.argmax(1)]
    assert got["top"][0][0]["probability"] >= got["top"][0][1]["probability"]
    # One flat sample works too (a form posts 64 numbers).
    assert predictor.predict(raw[0].reshape(-1).tolist())["labels"] == got["labels"][:1]
    with pytest.raises(InputError, match=r"expected \[1, 8, 8\]"):
        predictor.predict([[1, 2, 3]])
    with pytest.raises(InputError, match="numbers"):
        predictor.predict([["a"] * 64])
    with pytest.raises(InputError, match="over the limit of 64"):
        predictor.predict(np.zeros((65, 64)).tolist())
    stats = predictor.stats()
    assert stats["requests"] == 5 and stats["errors"] == 3 and stats["samples"] == 17
    assert sum(stats["confidence_histogram"]["counts"]) == 17
    assert stats["latency_ms"]["p50"] > 0
    # Training digits sit about as close to the reference as it is to itself; noise does not.
    assert 0.5 < stats["distance"]["ratio"] < 2.0
    noisy = Predictor(bundle.path)
    noisy.predict((np.random.default_rng(0).uniform(0, 16, (16, 64))).tolist())
    assert noisy.stats()["distance"]["ratio"] > 2 * stats["distance"]["ratio"]


def test_bundle_runs_with_numpy_and_onnxruntime_only(built, tmp_path):
    """The bundle's predictor imports nothing of pocketops (it ships alone)."""
    _db, _p, _v, bundle = built
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); from predictor import Predictor; "
            "p = Predictor(sys.argv[1]); print(json.dumps(p.predict([[0]*64])['labels'])); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('core', 'store', 'deployers', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code, str(bundle.path)], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout.splitlines()
    assert len(json.loads(out[0])) == 1 and out[1] == "[]"


def test_unknown_or_changed_variant_is_a_clear_error(tmp_path):
    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    with pytest.raises(DeployError, match="variant 42 does not exist"):
        build_bundle(db, db_path, 42)
    vid = make_variant(db, db_path)
    path = store_deployments.variant(db, vid)["path"]
    with open(path, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(DeployError, match="changed since it was built"):
        build_bundle(db, db_path, vid)


def test_predictor_takes_digits_as_8x8_grids(built):
    """A digit written as an 8x8 grid (no channel axis), or a batch of them, is what a person sends."""
    _db, _p, _v, bundle = built
    predictor = Predictor(bundle.path)
    raw = digits_samples(3)                                    # (3, 1, 8, 8)
    expected = predictor.predict(raw.tolist())
    grids = predictor.predict(raw[:, 0].tolist())              # (3, 8, 8)
    assert grids["probabilities"] == expected["probabilities"]
    one = predictor.predict(raw[1, 0].tolist())                # (8, 8)
    assert one["probabilities"] == expected["probabilities"][1:2]
    with pytest.raises(InputError, match=r"expected \[1, 8, 8\], \[8, 8\] or 64 flat values"):
        predictor.predict(np.zeros((3, 8, 7)).tolist())


def test_text_predictor_takes_strings_and_measures_drift(tmp_path):
    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    bundle = build_bundle(db, db_path, make_text_variant(db, db_path))
    predictor = Predictor(bundle.path)
    assert predictor.predict("happy nice")["labels"] == ["pos"]  # one text, not in a list
    like = Predictor(bundle.path)
    like.predict(["it was nice and great", "it was bad and sad"])
    stats = like.stats()
    # Texts like the training ones are near the reference; other bytes (digits, symbols) are far.
    assert stats["distance"]["window"] == 2 and stats["distance"]["ratio"] is not None
    other = Predictor(bundle.path)
    other.predict(["0123456789 #$%&*+/<=>?@", "zzzz qqqq xxxx 9999 ...."])
    assert stats["distance"]["ratio"] < 1.5 and other.stats()["distance"]["ratio"] > 3 * stats["distance"]["ratio"]
