"""The bundle's predictor: validate inputs, run the model, keep rolling statistics.

This file ships INSIDE every deploy bundle and must run with only numpy and the model's runtime
(no pocketops import): on the phone, in a Docker Space, in a Cloud Run function. The model
loads through ``runtimes.open_session`` (a copy of core/runtimes.py in the bundle), so an
``.onnx``/``.ort`` file runs on onnxruntime, a ``.pte`` on ExecuTorch and a ``.tflite`` on
LiteRT, behind the same API.

    p = Predictor("path/to/bundle")
    p.predict([[...8x8 pixel values...]])   # {"labels", "probabilities", "top"}
    p.stats()                                # requests, errors, latency, confidence, drift
"""
from __future__ import annotations

import collections
import json
import os
import threading
import time
from pathlib import Path

import numpy as np

try:  # inside the pocketops package
    from . import monitor as _monitor
except ImportError:  # inside a bundle: monitor.py sits beside this file
    import monitor as _monitor  # type: ignore[no-redef]


def _runtimes():
    """The runtime table: core/runtimes.py inside the package; the bundle's copy beside this file inside a
    bundle; the source tree's own when this file runs as a script from deployers/runtime/ (tests, development)."""
    if __package__:
        from core import runtimes
        return runtimes
    try:
        import runtimes  # type: ignore[no-redef]
    except ImportError:
        import sys

        root = Path(__file__).resolve().parents[2]
        if not (root / "core" / "runtimes.py").is_file():
            raise
        if str(root) not in sys.path:
            sys.path.append(str(root))
        from core import runtimes  # type: ignore[no-redef]
    return runtimes

MAX_BATCH = 64
LATENCY_WINDOW = 1000
DISTANCE_WINDOW = 1000
CONFIDENCE_BINS = 10
TOP_K = 3
TEXT_VOCAB = 258     # token ids: UTF-8 byte + 1, 0 = padding


class InputError(ValueError):
    """A request the predictor refuses: wrong shape, type or size. The message says which."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so large logits do not overflow."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def preprocess(x: np.ndarray, spec: dict) -> np.ndarray:
    """Raw user values -> model input: ``x * scale``, then ``(x - mean) / std`` (scalars or per feature)."""
    x = x.astype(np.float64, copy=False)
    sample_shape = x.shape[1:]
    if spec.get("scale") is not None:
        x = x * float(spec["scale"])
    if spec.get("mean") is not None:
        x = x - np.asarray(spec["mean"], dtype=np.float64).reshape(sample_shape if np.size(spec["mean"]) > 1 else ())
    if spec.get("std") is not None:
        std = np.asarray(spec["std"], dtype=np.float64)
        std = np.where(std == 0, 1.0, std)
        x = x / std.reshape(sample_shape if std.size > 1 else ())
    return x


def tokenize(text: str, spec: dict) -> list[int]:
    """Text -> token ids as in training: UTF-8 bytes + 1, truncated and 0-padded to ``max_len``."""
    max_len = int(spec.get("max_len", 256))
    ids = [b + 1 for b in text.encode("utf-8")[:max_len]]
    return ids + [0] * (max_len - len(ids))


class Predictor:
    """One loaded bundle: ``predict``, ``model_info`` and ``stats`` (thread-safe)."""

    def __init__(self, bundle_dir: str | os.PathLike, *, threads: int = 1, max_batch: int = MAX_BATCH,
                 monitor: bool = True):
        self.dir = Path(bundle_dir)
        started = time.perf_counter()
        self.info = json.loads((self.dir / "model.json").read_text("utf-8"))
        # A missing runtime is runtimes.RuntimeMissing, one line naming the package to install.
        self.session = _runtimes().open_session(self.dir / self.info.get("model_file", "model.onnx"), threads)
        self.runtime = getattr(self.session, "runtime", "onnxruntime")
        self.input_name = self.session.get_inputs()[0].name
        spec = self.info["input"]
        self.sample_shape = tuple(int(d) for d in spec["shape"])
        self.sample_size = int(np.prod(self.sample_shape)) if self.sample_shape else 1
        self.dtype = np.dtype(spec.get("dtype", "float32"))
        self.kind = spec.get("kind", "tabular")
        self.labels = [str(label) for label in self.info["labels"]]
        self.preprocessing = self.info.get("preprocessing") or {}
        self.output_kind = self.info.get("output", {}).get("kind", "logits")
        self.max_batch = max_batch
        self.max_abs = float(spec.get("max_abs", 1e6))
        self.reference, self.reference_nn = self._load_reference()
        # Per request only |x|^2 - 2 x.ref is computed: the reference side is fixed (monitoring stays cheap).
        self._reference_t = None if self.reference is None else np.ascontiguousarray(self.reference.T * -2.0)
        self._reference_sq = None if self.reference is None else (self.reference * self.reference).sum(1)
        self.load_ms = (time.perf_counter() - started) * 1000
        self._lock = threading.Lock()
        self._started = time.time()
        self._requests = 0
        self._samples = 0
        self._errors = 0
        self._latencies: collections.deque = collections.deque(maxlen=LATENCY_WINDOW)
        self._confidence = [0] * CONFIDENCE_BINS
        self._distances: collections.deque = collections.deque(maxlen=DISTANCE_WINDOW)
        self._predicted = [0] * len(self.labels)
        # Drift monitoring of served traffic (GET /v1/monitor); monitor=False serves without it (benchmarks).
        self.monitor = _monitor.Monitor.from_bundle(self.dir) if monitor else None

    # -- inputs --------------------------------------------------------------------------
    def _load_reference(self) -> tuple[np.ndarray | None, float | None]:
        path = self.dir / "reference.npz"
        if not path.is_file():
            return None, None
        with np.load(path) as data:
            ref = np.asarray(data["X"], dtype=np.float64)
        if len(ref) < 2:
            return None, None
        # Stored as raw values, like requests; compared in model-input space (texts: as byte histograms).
        ref = self.features(self.model_input(ref.reshape((len(ref), *self.sample_shape))))
        # The typical nearest-neighbour distance inside the training sample: served inputs
        # whose distance ratio drifts far above 1 no longer look like the training data.
        d = _pairwise(ref, ref)
        np.fill_diagonal(d, np.inf)
        # Duplicates (the same short text twice) have distance 0 and would make every ratio infinite.
        nn = d.min(axis=1)
        nn = nn[nn > 1e-5 * max(float(np.sqrt((ref * ref).sum(axis=1)).mean()), 1e-12)]  # float error of |a-b| for a == b
        return ref, (float(np.median(nn)) if len(nn) else None)

    def validate(self, inputs) -> np.ndarray:
        """Raw request inputs -> a (batch, *sample_shape) array of raw values, or InputError."""
        if isinstance(inputs, np.ndarray):
            arr = inputs
        else:
            if self.kind == "text" and isinstance(inputs, str):
                inputs = [inputs]  # one text
            if not isinstance(inputs, (list, tuple)):
                raise InputError(f"'inputs' must be a list of samples, found {type(inputs).__name__}")
            if self.kind == "text":
                inputs = self._texts_to_ids(inputs)
            try:
                arr = np.asarray(inputs, dtype=np.float64)
            except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an integer beyond float range
                raise InputError(f"'inputs' must be numbers in nested lists of shape {list(self.sample_shape)} "
                                 f"(or a batch of them): {exc}") from None
        if arr.dtype.kind not in "biuf":
            raise InputError(f"'inputs' must be numeric, found dtype {arr.dtype}")
        if arr.size == 0:
            raise InputError("'inputs' is empty: send at least one sample")
        # One sample or a batch, as the sample shape, without its size-1 axes (an 8x8 digit for
        # [1, 8, 8]: what a person writes), or flat.
        squeezed = tuple(d for d in self.sample_shape if d != 1)
        if arr.shape in (self.sample_shape, squeezed) or (arr.ndim == 1 and arr.size == self.sample_size and self.sample_shape):
            arr = arr.reshape((1, *self.sample_shape))
        elif arr.ndim >= 2 and (arr.shape[1:] in (self.sample_shape, squeezed)
                                or (arr.ndim == 2 and arr.shape[1] == self.sample_size)):
            arr = arr.reshape((arr.shape[0], *self.sample_shape))
        else:
            alt = f", {list(squeezed)}" if squeezed != self.sample_shape and squeezed else ""
            raise InputError(f"wrong input shape: expected {list(self.sample_shape)}{alt} or {self.sample_size} flat values "
                             f"per sample (or a batch of them: [n, {', '.join(map(str, self.sample_shape))}]), "
                             f"found {list(arr.shape)}")
        if arr.shape[0] > self.max_batch:
            raise InputError(f"batch of {arr.shape[0]} samples is over the limit of {self.max_batch}; split the request")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise InputError("'inputs' contains NaN or infinity")
        if np.abs(arr).max() > self.max_abs:
            raise InputError(f"'inputs' has a value of magnitude {np.abs(arr).max():g}, over the limit {self.max_abs:g}")
        if self.kind == "text" and (np.any(arr != np.floor(arr)) or arr.min() < 0 or arr.max() >= TEXT_VOCAB):
            # Token ids index the model's embedding: one out of range fails inside onnxruntime.
            raise InputError(f"text inputs must be strings or whole token ids from 0 to {TEXT_VOCAB - 1}")
        return arr

    def _texts_to_ids(self, inputs: list) -> list:
        if all(isinstance(t, str) for t in inputs):
            return [tokenize(t, self.preprocessing) for t in inputs]
        return list(inputs)

    def features(self, x: np.ndarray) -> np.ndarray:
        """Model inputs as the vectors drift distances compare: flat values, or for texts the
        share of each byte value (token order and padding left out, so length alone is no drift)."""
        flat = x.reshape(len(x), -1)
        if self.kind != "text":
            return flat.astype(np.float64)
        ids = np.clip(flat.astype(np.int64), 0, TEXT_VOCAB - 1)
        counts = np.zeros((len(ids), TEXT_VOCAB))
        np.add.at(counts, (np.repeat(np.arange(len(ids)), ids.shape[1]), ids.ravel()), 1.0)
        counts[:, 0] = 0.0  # padding
        return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)

    def model_input(self, raw: np.ndarray) -> np.ndarray:
        """Raw request values -> the model's input array: text token ids as they are, other inputs preprocessed."""
        if self.kind == "text":
            return raw.astype(self.dtype)
        return preprocess(raw, self.preprocessing).astype(self.dtype)

    # -- prediction ----------------------------------------------------------------------
    def predict(self, inputs) -> dict:
        """Top classes and probabilities for one sample or a batch; InputError if malformed."""
        started = time.perf_counter()
        try:
            raw = self.validate(inputs)
            x = self.model_input(raw)
            out = self.session.run(None, {self.input_name: x})[0].astype(np.float64)
            probs = out if self.output_kind == "probabilities" else softmax(out)
        except InputError:
            with self._lock:
                self._requests += 1
                self._errors += 1
            raise
        elapsed_ms = (time.perf_counter() - started) * 1000
        top1 = probs.argmax(axis=1)
        # The quarantine keeps inputs as received: texts as strings, the rest as the validated values.
        received = [inputs] if isinstance(inputs, str) else inputs
        if not (self.kind == "text" and isinstance(received, list) and all(isinstance(t, str) for t in received)):
            received = raw
        self._record(elapsed_ms, probs, top1, x, received)
        order = np.argsort(-probs, axis=1)[:, :TOP_K]
        return {
            "labels": [self.labels[i] for i in top1],
            "probabilities": [[round(float(p), 6) for p in row] for row in probs],
            "top": [[{"label": self.labels[j], "probability": round(float(probs[i, j]), 6)} for j in row]
                    for i, row in enumerate(order)],
            "latency_ms": round(elapsed_ms, 3),
        }

    def record_error(self) -> None:
        """Count a request that failed before reaching the predictor (bad JSON, oversized body)."""
        with self._lock:
            self._requests += 1
            self._errors += 1

    def signals(self, inputs) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(predicted class, top-1 confidence, distance to the nearest reference sample) per sample, unrecorded."""
        x = self.model_input(self.validate(inputs) if not isinstance(inputs, np.ndarray) else inputs)
        out = self.session.run(None, {self.input_name: x})[0].astype(np.float64)
        probs = out if self.output_kind == "probabilities" else softmax(out)
        return probs.argmax(axis=1), probs.max(axis=1), self.distances(x)

    def distances(self, x: np.ndarray) -> np.ndarray | None:
        """Distance of each model input to its nearest reference sample (None without a reference)."""
        if self.reference is None:
            return None
        f = self.features(x)
        sq = f @ self._reference_t  # -2 x.ref
        sq += self._reference_sq
        nearest = sq.min(axis=1)
        nearest += np.einsum("ij,ij->i", f, f)
        return np.sqrt(np.maximum(nearest, 0.0, out=nearest), out=nearest)

    def _record(self, elapsed_ms: float, probs: np.ndarray, top1: np.ndarray, x: np.ndarray, raw=None) -> None:
        distances = self.distances(x)
        if self.monitor is not None:
            self.monitor.observe(raw if raw is not None else x, top1, probs.max(axis=1), distances)
        with self._lock:
            self._requests += 1
            self._samples += len(probs)
            self._latencies.append(elapsed_ms)
            for p, label in zip(probs.max(axis=1), top1):
                self._confidence[min(int(p * CONFIDENCE_BINS), CONFIDENCE_BINS - 1)] += 1
                self._predicted[int(label)] += 1
            if distances is not None:
                self._distances.extend(float(d) for d in distances)

    # -- introspection -------------------------------------------------------------------
    def model_info(self) -> dict:
        """What ``GET /v1/model`` answers: version, sha256, labels, input and preprocessing (no vocabulary), load time."""
        return {
            "version": self.info.get("version"),
            "sha256": self.info.get("sha256"),
            "labels": self.labels,
            "input": self.info["input"],
            "preprocessing": {k: v for k, v in self.preprocessing.items() if k != "vocab"},
            "variant": self.info.get("variant"),
            "runtime": self.runtime,
            "load_ms": round(self.load_ms, 2),
        }

    def stats(self) -> dict:
        """Counters, latency percentiles and prediction histograms since start (``GET /v1/stats``)."""
        with self._lock:
            lat = np.fromiter(self._latencies, dtype=np.float64, count=len(self._latencies))
            dist = list(self._distances)
            data = {
                "since": self._started,
                "uptime_s": round(time.time() - self._started, 1),
                "requests": self._requests,
                "samples": self._samples,
                "errors": self._errors,
                "latency_ms": {**_percentiles(lat, p50=50, p95=95), "window": len(lat)},
                "confidence_histogram": {"bins": [round(i / CONFIDENCE_BINS, 2) for i in range(CONFIDENCE_BINS + 1)],
                                         "counts": list(self._confidence)},
                "predicted": dict(zip(self.labels, self._predicted)),
            }
        mean = float(np.mean(dist)) if dist else None
        data["distance"] = {
            "mean": None if mean is None else round(mean, 4),
            "reference_nn": None if self.reference_nn is None else round(self.reference_nn, 4),
            "ratio": None if mean is None or not self.reference_nn else round(mean / self.reference_nn, 4),
            "window": len(dist),
        }
        return data


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def _percentiles(values: np.ndarray, **quantiles: float) -> dict[str, float | None]:
    """``{name: percentile}`` of ``values`` (linear interpolation, rounded to 3 places); None when empty."""
    if not len(values):
        return dict.fromkeys(quantiles)
    found = np.percentile(values, list(quantiles.values()))
    return {name: round(float(v), 3) for name, v in zip(quantiles, found)}
