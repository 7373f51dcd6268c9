"""Label-free drift monitoring of served traffic: detectors, their calibration, the server's bounded ring.

This file ships INSIDE every deploy bundle beside ``predictor.py`` and runs with numpy only (no
pocketops import). The same code is used at bundle time (calibration), by the served side
(``GET /v1/monitor``), by the phone and by ``benchmarks/drift.py``.

Detectors are shaped like River's (``update(x)`` returns the detector, ``drift_detected`` says
whether this update raised an alarm, constructor arguments keep River's names where River has
them) and keep TinyLCM's hysteresis and cooldown: an alarm enters a drift state, which is left
only once the statistic falls to ``hysteresis * threshold``; a new alarm needs ``cooldown``
updates after the last one. State serializes to JSON (``to_dict`` / ``from_dict``).

    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> stream = np.concatenate([rng.normal(0, 1, 500), rng.normal(2, 1, 200)])
    >>> ph = PageHinkley(delta=0.5, threshold=12.0, mean=0.0)
    >>> [i for i, x in enumerate(stream) if ph.update(x).drift_detected]
    [510]

Signals per request: the top-1 confidence, the distance of the input to its nearest training
reference sample (in model-input space: on digits it detects better than the model's
penultimate features, see benchmarks/drift.py), and the predicted class. Distance and confidence
enter the tests as rank scores against held-out values (``Scorer``). The detectors: two
Page-Hinkley tests on the distance (delta 0.1 and 0.3), an EWMA on the confidence, a windowed
chi-square on the predicted classes. ``calibrate`` sets every threshold from held-out signals so
that the expected run length without drift is at least ``ert`` requests (alibi-detect's idea:
bootstrap streams replayed through each detector).
"""
from __future__ import annotations

import collections
import bisect
import itertools
import json
import math
import os
import threading
import time
from pathlib import Path

import numpy as np

FORMAT = "pocketops-monitor/1"
ERT = 10_000                # expected run length without drift, in requests
RING = 10_000               # per-request signals a server keeps
EVENTS = 100                # events a server keeps
QUARANTINE_PER_EVENT = 16   # inputs kept per alarm (the ones up to and including it)
MAX_LIMIT = 5000
DEFAULT_LIMIT = 1000


class _Detector:
    """Shared machinery: warm-up, threshold with hysteresis and cooldown, JSON state."""

    name = "detector"
    _params: tuple[str, ...] = ()
    _state: tuple[str, ...] = ()

    def __init__(self, *, threshold: float, min_instances: int, hysteresis: float, cooldown: int):
        self.threshold = float(threshold)
        self.min_instances = int(min_instances)
        self.hysteresis = float(hysteresis)
        self.cooldown = int(cooldown)
        self._reset_common()

    def _reset_common(self) -> None:
        self.n = 0
        self.statistic = 0.0
        self.in_drift = False
        self.drift_detected = False
        self._last_alarm = -(1 << 62)

    def _decide(self) -> None:
        """Set ``drift_detected`` from ``statistic`` (entering drift) and leave drift below the hysteresis."""
        self.drift_detected = False
        if self.n < self.min_instances:
            return
        if self.in_drift:
            if self.statistic <= self.hysteresis * self.threshold:
                self.in_drift = False
        elif self.statistic > self.threshold and self.n - self._last_alarm > self.cooldown:
            self.in_drift = True
            self.drift_detected = True
            self._last_alarm = self.n

    def params(self) -> dict:
        """Constructor arguments (River's names where River has them)."""
        out = {k: getattr(self, k) for k in self._params}
        out.update(threshold=self.threshold, min_instances=self.min_instances, hysteresis=self.hysteresis,
                   cooldown=self.cooldown)
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()}

    def state(self) -> dict:
        """What changes with updates, JSON-ready."""
        out = {"n": self.n, "statistic": _num(self.statistic), "in_drift": self.in_drift, "last_alarm": self._last_alarm}
        for k in self._state:
            v = getattr(self, k)
            out[k] = v.tolist() if isinstance(v, np.ndarray) else (list(v) if isinstance(v, (list, collections.deque))
                                                                   else _num(v))
        return out

    def to_dict(self) -> dict:
        """``{"class", "params", "state"}``: ``from_dict`` rebuilds an identical detector."""
        return {"class": type(self).__name__, "params": self.params(), "state": self.state()}

    @classmethod
    def from_dict(cls, data: dict) -> "_Detector":
        """The detector ``to_dict`` described (its class from ``data["class"]``)."""
        kind = DETECTORS[data["class"]] if cls is _Detector else cls
        det = kind(**data["params"])
        state = data.get("state") or {}
        det._load_state(state)
        return det

    def _load_state(self, state: dict) -> None:
        self.n = int(state.get("n", 0))
        self.statistic = float(state.get("statistic", 0.0) or 0.0)
        self.in_drift = bool(state.get("in_drift", False))
        self._last_alarm = int(state.get("last_alarm", -(1 << 62)))
        for k in self._state:
            if k in state:
                self._set_state(k, state[k])

    def _set_state(self, key: str, value) -> None:
        setattr(self, key, float(value) if value is not None else None)

    def traces(self, streams) -> np.ndarray:
        """``trace`` of every row of ``streams``."""
        return np.stack([self.trace(s) for s in streams])

    def trace(self, xs) -> np.ndarray:
        """The statistic after each value of ``xs`` from a fresh state, ``-inf`` during warm-up (for calibration)."""
        det = type(self)(**self.params())
        out = np.empty(len(xs))
        for i, x in enumerate(xs):
            det.update(x)
            out[i] = det.statistic if det.n >= det.min_instances else -np.inf
        return out


class PageHinkley(_Detector):
    """Page-Hinkley test for an increase of the mean (TinyLCM's KNN-distance detector shape).

    ``sum = alpha * sum + (x - mean - delta)``, statistic ``sum - min(sum)``. With ``mean`` given
    (the held-out mean) the reference is fixed; without it, the running mean is used as River does.
    The statistic is capped at twice the threshold so a long drift is left soon after it ends.
    """

    name = "PageHinkley"
    _params = ("delta", "alpha", "mean", "mode")
    _state = ("_sum", "_min", "_x_mean")

    def __init__(self, min_instances: int = 30, delta: float = 0.005, threshold: float = 50.0, alpha: float = 1.0,
                 mode: str = "up", mean: float | None = None, hysteresis: float = 0.7, cooldown: int = 20):
        if mode not in ("up", "down"):
            raise ValueError(f"mode must be 'up' or 'down', got {mode!r}")
        self.delta, self.alpha, self.mode = float(delta), float(alpha), mode
        self.mean = None if mean is None else float(mean)
        super().__init__(threshold=threshold, min_instances=min_instances, hysteresis=hysteresis, cooldown=cooldown)
        self._sum = self._min = self._x_mean = 0.0

    def update(self, x) -> "PageHinkley":
        """Add one value; returns the detector."""
        x = float(x) if self.mode == "up" else -float(x)
        self.n += 1
        self._x_mean += (x - self._x_mean) / self.n
        ref = self._x_mean if self.mean is None else (self.mean if self.mode == "up" else -self.mean)
        self._sum = self.alpha * self._sum + (x - ref - self.delta)
        self._min = max(min(self._min, self._sum), self._sum - 2.0 * self.threshold)
        self.statistic = self._sum - self._min
        self._decide()
        return self

    def trace(self, xs) -> np.ndarray:
        if self.mean is None or self.alpha != 1.0:
            return super().trace(xs)
        x = np.asarray(xs, dtype=np.float64) * (1.0 if self.mode == "up" else -1.0)
        ref = self.mean if self.mode == "up" else -self.mean
        s = np.cumsum(x - ref - self.delta)
        stat = s - np.minimum.accumulate(np.minimum(s, 0.0))  # exact until the cap, which only acts after an alarm
        stat[: self.min_instances - 1] = -np.inf
        return stat


class EWMAConfidence(_Detector):
    """EWMA of the top-1 confidence falling below its held-out mean (TinyLCM's EWMAConfidenceMonitor).

    ``ewma = alpha * x + (1 - alpha) * ewma`` (TinyLCM's lambda is River's usual ``alpha``); the
    statistic is the smallest deficit ``(mean - ewma) / sigma_ewma`` over the last ``consecutive``
    updates, so an alarm needs that many low values in a row.
    """

    name = "EWMAConfidence"
    _params = ("alpha", "mean", "std", "consecutive")
    _state = ("_ewma", "_recent")

    def __init__(self, mean: float, std: float, alpha: float = 0.1, threshold: float = 3.0, consecutive: int = 5,
                 min_instances: int = 30, hysteresis: float = 0.7, cooldown: int = 20):
        self.mean, self.std, self.alpha, self.consecutive = float(mean), max(float(std), 1e-6), float(alpha), int(consecutive)
        self._sigma = self.std * math.sqrt(self.alpha / (2.0 - self.alpha))
        super().__init__(threshold=threshold, min_instances=min_instances, hysteresis=hysteresis, cooldown=cooldown)
        self._ewma = self.mean
        self._recent: collections.deque = collections.deque(maxlen=self.consecutive)

    def update(self, x) -> "EWMAConfidence":
        """Add one confidence; returns the detector."""
        self.n += 1
        self._ewma = self.alpha * float(x) + (1.0 - self.alpha) * self._ewma
        self._recent.append((self.mean - self._ewma) / self._sigma)
        self.statistic = min(self._recent) if len(self._recent) == self.consecutive else -math.inf
        self._decide()
        return self

    def traces(self, streams) -> np.ndarray:
        """``trace`` of every row of ``streams`` at once (the recursion runs over time, vectorized over streams)."""
        xs = np.asarray(streams, dtype=np.float64)
        ewma = np.full(len(xs), self.mean)
        deficit = np.empty_like(xs)
        for t in range(xs.shape[1]):
            ewma = self.alpha * xs[:, t] + (1.0 - self.alpha) * ewma
            deficit[:, t] = (self.mean - ewma) / self._sigma
        k = self.consecutive
        # the smallest of the last k deficits: a sliding minimum over k shifted copies
        stat = deficit.copy()
        for j in range(1, k):
            stat[:, j:] = np.minimum(stat[:, j:], deficit[:, :-j])
        stat[:, : max(k, self.min_instances) - 1] = -np.inf
        return stat

    def _set_state(self, key: str, value) -> None:
        if key == "_recent":
            self._recent = collections.deque((float(v) for v in value), maxlen=self.consecutive)
        else:
            super()._set_state(key, value)


class ClassShares(_Detector):
    """Chi-square distance of the predicted-class counts in a sliding window from the reference shares.

    With ``reference_size`` (how many samples the shares were estimated from), share differences
    within ``tolerance`` standard errors of that estimate are ignored: served traffic whose class
    mix differs from a few hundred held-out samples by their own noise is no drift, one class
    suddenly taking half the requests is.
    """

    name = "ClassShares"
    _params = ("shares", "window", "reference_size", "tolerance")
    _state = ("_counts", "_window")

    def __init__(self, shares, window: int = 200, threshold: float = 50.0, min_instances: int | None = None,
                 hysteresis: float = 0.7, cooldown: int = 20, reference_size: int | None = None, tolerance: float = 2.0):
        p = np.asarray(shares, dtype=np.float64)
        self.window = int(window)
        # No share below half a sample per window: a class never seen in held-out data stays finite.
        p = np.maximum(p / max(p.sum(), 1e-12), 0.5 / self.window)
        self.shares = p / p.sum()
        self.reference_size = None if reference_size is None else int(reference_size)
        self.tolerance = float(tolerance)
        super().__init__(threshold=threshold, min_instances=self.window if min_instances is None else min_instances,
                         hysteresis=hysteresis, cooldown=cooldown)
        self._p = [float(v) for v in self.shares]
        self._tol = [0.0 if not self.reference_size else self.tolerance * math.sqrt(v * (1 - v) / self.reference_size)
                     for v in self._p]
        self._c = [0] * len(self._p)
        self._terms = [0.0] * len(self._p)
        self._window: collections.deque = collections.deque(maxlen=self.window)

    def _term(self, k: int, m: int) -> float:
        excess = abs(self._c[k] - m * self._p[k]) - m * self._tol[k]
        return excess * excess / (m * self._p[k]) if excess > 0 else 0.0

    def update(self, x) -> "ClassShares":
        """Add one predicted class index; returns the detector."""
        k = int(x)
        if not 0 <= k < len(self._p):
            raise ValueError(f"class index {k} outside 0..{len(self._p) - 1}")
        self.n += 1
        counts, terms = self._c, self._terms
        full = len(self._window) == self.window
        if full:
            old = self._window[0]
            counts[old] -= 1
        self._window.append(k)
        counts[k] += 1
        m = len(self._window)
        if full:  # the window's size is fixed: only the two classes that changed change their terms
            terms[old] = self._term(old, m)
            terms[k] = self._term(k, m)
        else:
            self._terms = terms = [self._term(j, m) for j in range(len(counts))]
        self.statistic = sum(terms)
        self._decide()
        return self

    @property
    def _counts(self) -> list:
        return list(self._c)

    def _set_state(self, key: str, value) -> None:
        if key == "_counts":
            self._c = [int(v) for v in value]
        elif key == "_window":
            self._window = collections.deque((int(v) for v in value), maxlen=self.window)
            m = len(self._window)
            self._terms = [self._term(j, m) for j in range(len(self._c))] if m else [0.0] * len(self._c)

    def trace(self, xs) -> np.ndarray:
        k = np.asarray(xs, dtype=np.int64)
        onehot = np.zeros((len(k) + 1, len(self.shares)))
        onehot[np.arange(1, len(k) + 1), k] = 1.0
        cum = np.cumsum(onehot, axis=0)
        idx = np.arange(1, len(k) + 1)
        counts = cum[idx] - cum[np.maximum(idx - self.window, 0)]
        filled = np.minimum(idx, self.window)[:, None].astype(np.float64)
        expected = self.shares[None, :] * filled
        excess = np.maximum(np.abs(counts - expected) - filled * np.asarray(self._tol)[None, :], 0.0)
        stat = (excess * excess / expected).sum(axis=1)
        stat[: self.min_instances - 1] = -np.inf
        return stat


DETECTORS = {c.__name__: c for c in (PageHinkley, EWMAConfidence, ClassShares)}
# Which signal feeds which detector, and the event kind its alarms raise.
SIGNALS = {"distance": "drift", "confidence": "confidence", "classes": "drift"}


def base_name(detector: str) -> str:
    """The signal (and event detector name) of a detector key: ``distance_fast`` -> ``distance``."""
    return detector.split("_", 1)[0]


def _floats(values, kind) -> list:
    """Plain Python numbers from an array or a list (``tolist`` is the fast path)."""
    return values.tolist() if hasattr(values, "tolist") else [kind(v) for v in values]


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


# -- calibration -------------------------------------------------------------------------------

def default_detectors(preds, n_classes: int, *, distances: bool = True) -> dict:
    """Uncalibrated detectors (thresholds set by ``calibrate``) on rank scores, class shares from held-out predictions."""
    shares = np.bincount(np.asarray(preds, dtype=np.int64), minlength=n_classes)
    # Distances and confidences arrive as rank scores in [-1, 1] (see Scorer): mean 0, std 1/sqrt(3).
    # delta 0.25 is about CUSUM's k for a shift of one standard deviation.
    out = {"confidence": EWMAConfidence(mean=0.0, std=SCORE_STD, alpha=0.1, consecutive=5),
           "classes": ClassShares(shares=shares, window=100, reference_size=len(preds))}
    if distances:
        # Two Page-Hinkley tests on the distance, as multi-delta CUSUM: delta 0.1 catches small
        # shifts (mild noise, gradual drift), delta 0.3 large ones sooner. Their events are both
        # "distance" events.
        out["distance"] = PageHinkley(delta=0.1, mean=0.0, min_instances=30)
        out["distance_fast"] = PageHinkley(delta=0.3, mean=0.0, min_instances=30)
    return out


SCORE_STD = 1 / math.sqrt(3)  # of a uniform score on [-1, 1]


class Scorer:
    """A value -> its rank among held-out values, as ``2 F(x) - 1`` in [-1, 1] (F: empirical CDF).

    Rank scores are bounded, so a heavy tail of distances (or a tail served traffic has and the
    held-out sample lacks) moves the tests by at most one unit per request, and a value beyond
    every held-out one scores 1 however far it lies.
    """

    def __init__(self, quantiles):
        self.quantiles = np.asarray(quantiles, dtype=np.float64)
        self._q = self.quantiles.tolist()
        self._levels = np.linspace(-1.0, 1.0, len(self._q))

    @classmethod
    def fit(cls, values, points: int = 201) -> "Scorer":
        """The scorer of these held-out values (``points`` quantiles kept)."""
        return cls(np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, points)))

    def __call__(self, values) -> np.ndarray:
        return np.interp(np.asarray(values, dtype=np.float64), self.quantiles, self._levels)

    def one(self, value: float) -> float:
        """One value's score (plain floats: the per-request path)."""
        q = self._q
        if value <= q[0]:
            return -1.0
        if value >= q[-1]:
            return 1.0
        i = bisect.bisect_right(q, value)
        lo, hi = q[i - 1], q[i]
        frac = 0.0 if hi == lo else (value - lo) / (hi - lo)
        return -1.0 + 2.0 * (i - 1 + frac) / (len(q) - 1)

    def to_dict(self) -> dict:
        return {"quantiles": [round(v, 6) for v in self._q]}


def bootstrap_streams(n: int, streams: int, length: int, seed: int) -> np.ndarray:
    """Indices of ``streams`` bootstrap streams of ``length`` draws from ``n`` held-out samples.

    Each stream first resamples the held-out set, then draws from that resample: served traffic
    differs from the held-out sample by at least that sample's own noise (class shares of a few
    hundred samples are off by a few points), and thresholds calibrated without it alarm on it.
    """
    rng = np.random.default_rng(seed)
    population = rng.integers(0, n, size=(streams, n))
    return np.take_along_axis(population, rng.integers(0, n, size=(streams, length)), axis=1)


def set_threshold(det: _Detector, streams: list, budget: float) -> float:
    """The smallest threshold at which at most ``budget`` of the streams raise an alarm (one trace per stream)."""
    maxima = det.traces(streams).max(axis=1)
    # The (1 - budget) quantile of the per-stream maxima, nudged up: an alarm needs statistic > threshold.
    q = float(np.quantile(maxima, 1.0 - budget, method="higher"))
    det.threshold = q * (1 + 1e-9) + 1e-9
    return det.threshold


def calibrate(distances, confidences, preds, n_classes: int, *, null_distances=None, ert: int = ERT,
              streams: int = 100, budget: float = 0.05, seed: int = 0, signal: str = "input") -> dict:
    """The monitor config (rank scorers, detectors with thresholds, measured false-alarm rate).

    ``distances``, ``confidences`` and ``preds`` are the held-out split's signals;
    ``null_distances`` (optional) more in-distribution distances for the distance test (input-space
    distances do not depend on the model, so training samples outside the reference qualify).
    ``streams`` bootstrap streams of ``ert`` requests are replayed through every detector; each
    detector's threshold lets at most ``budget`` of them raise an alarm: under a geometric run
    length an expected run length of ``ert / -ln(1 - budget)`` per detector (195k requests for
    0.05), about 50k for the four together: at least ``ert``, with room for traffic that differs from
    the held-out sample. The rate is then measured on as many fresh streams (another seed).
    """
    conf = np.asarray(confidences, dtype=np.float64)
    pred = np.asarray(preds, dtype=np.int64)
    n = len(conf)
    if n < 20:
        raise ValueError(f"calibration needs at least 20 held-out samples, got {n}")
    dist = None
    if distances is not None:
        dist = np.asarray(distances if null_distances is None else np.concatenate([distances, null_distances]),
                          dtype=np.float64)
    scorers = {"confidence": Scorer.fit(conf)}
    inputs = {"confidence": scorers["confidence"](conf), "classes": pred}
    if dist is not None:
        scorers["distance"] = Scorer.fit(dist)
        inputs["distance"] = scorers["distance"](dist)
    dets = default_detectors(pred, n_classes, distances=dist is not None)
    alarmed = np.zeros(streams, dtype=bool)
    per_detector = {}
    for k, (name, det) in enumerate(dets.items()):
        xs = inputs[base_name(name)]
        set_threshold(det, xs[bootstrap_streams(len(xs), streams, ert, seed + 2 * k)], budget)
        hits = det.traces(xs[bootstrap_streams(len(xs), streams, ert, seed + 2 * k + 1)]).max(axis=1) > det.threshold
        per_detector[name] = round(float(hits.mean()), 4)
        alarmed |= hits
    frac = float(alarmed.mean())
    # Alarms per `ert` requests from the share of streams with one (Poisson): -ln(1 - share).
    rate = -math.log(max(1.0 - frac, 1.0 / (streams + 1)))
    return {
        "format": FORMAT,
        "signal": signal,
        "scorers": {name: sc.to_dict() for name, sc in scorers.items()},
        "detectors": {name: det.to_dict() for name, det in dets.items()},
        "calibration": {
            "ert_target": int(ert),
            "streams": int(streams),
            "budget_per_detector": budget,
            "held_out": int(n),
            "distance_samples": None if dist is None else int(len(dist)),
            "signal": signal,
            "alarm_share_per_detector": per_detector,
            "streams_with_alarm": round(frac, 4),
            "false_alarms_per_10k": round(rate * 10_000 / ert, 4),
            "ert_estimate": None if frac == 0 else int(ert / rate),
        },
    }


# -- the served side ---------------------------------------------------------------------------

class QueryError(ValueError):
    """A bad ``/v1/monitor`` query value; the message names the parameter."""


def parse_query(query: str) -> tuple[int, int]:
    """``since`` and ``limit`` from a URL query string, or QueryError naming the bad parameter."""
    from urllib.parse import parse_qs

    try:
        values = parse_qs(query or "", keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except ValueError as exc:
        raise QueryError(f"query string: {exc}") from None
    out = {}
    for name, default, lo, hi in (("since", 0, 0, None), ("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)):
        given = values.get(name)
        if not given:
            out[name] = default
            continue
        text = given[-1].strip()
        if len(given) > 1 or not (text.isascii() and text.isdigit()) or len(text) > 18:
            bound = f"from {lo} to {hi}" if hi else f"≥ {lo}"
            raise QueryError(f"{name} must be one whole number {bound}, found {','.join(given)[:40]!r}")
        value = int(text)
        if value < lo or (hi is not None and value > hi):
            bound = f"from {lo} to {hi}" if hi else f"≥ {lo}"
            raise QueryError(f"{name} must be {bound}, found {value}")
        out[name] = value
    return out["since"], out["limit"]


class Monitor:
    """Per-request signals in a bounded ring, the detectors, their events and the quarantined inputs (thread-safe)."""

    def __init__(self, config: dict | None = None, *, ring: int = RING, events: int = EVENTS,
                 quarantine_per_event: int = QUARANTINE_PER_EVENT):
        self.server_id = os.urandom(6).hex()
        self.config = config or {}
        self.detectors: dict[str, _Detector] = {name: _Detector.from_dict(d)
                                                for name, d in (self.config.get("detectors") or {}).items()}
        self.scorers = {name: Scorer(**sc) for name, sc in (self.config.get("scorers") or {}).items()}
        for name in list(self.detectors):
            if base_name(name) != "classes" and base_name(name) not in self.scorers:
                del self.detectors[name]
        # (key, signal, detector): which score feeds each detector, decided once
        self._feeds = [(name, base_name(name), det) for name, det in self.detectors.items()]
        self.seq = 0
        self._lock = threading.Lock()
        self._signals: collections.deque = collections.deque(maxlen=ring)
        self._events: collections.deque = collections.deque(maxlen=events)
        self._recent: collections.deque = collections.deque(maxlen=quarantine_per_event)  # (seq, input, pred, conf)
        self._quarantine: dict[int, dict] = {}
        self._refs: dict[int, int] = {}  # quarantined seq -> how many held events hold it

    @classmethod
    def from_bundle(cls, bundle_dir) -> "Monitor":
        """The bundle's monitor (``monitor.json``), or one that records signals without detectors."""
        path = Path(bundle_dir) / "monitor.json"
        config = json.loads(path.read_text("utf-8")) if path.is_file() else None
        return cls(config)

    def observe(self, inputs, preds, confidences, distances=None) -> None:
        """Record one request's samples: a seq each, detector updates, an event (with quarantine) per alarm."""
        now = round(time.time(), 3)
        preds = _floats(preds, int)
        confidences = _floats(confidences, float)
        distances = None if distances is None else _floats(distances, float)
        conf_score = self.scorers.get("confidence")
        dist_score = self.scorers.get("distance")
        with self._lock:
            for i, pred in enumerate(preds):
                self.seq += 1
                seq, conf = self.seq, confidences[i]
                dist = None if distances is None else distances[i]
                self._signals.append((seq, now, pred, conf, dist))
                self._recent.append((seq, inputs[i], pred, conf))
                cs = conf_score.one(conf) if conf_score else None
                ds = dist_score.one(dist) if dist_score and dist is not None else None
                for name, signal, det in self._feeds:
                    value = pred if signal == "classes" else (cs if signal == "confidence" else ds)
                    if value is not None and det.update(value).drift_detected:
                        self._alarm(name, det, seq, now)

    def _alarm(self, name: str, det: _Detector, seq: int, now: float) -> None:
        held = [s for s, *_ in self._recent]
        if len(self._events) == self._events.maxlen:  # the oldest event goes: so do inputs only it held
            for s in self._events[0]["quarantine"]:
                self._refs[s] -= 1
                if not self._refs[s]:
                    del self._refs[s], self._quarantine[s]
        for s, inp, pred, conf in self._recent:
            self._refs[s] = self._refs.get(s, 0) + 1
            if s not in self._quarantine:
                self._quarantine[s] = {"seq": s, "input": inp.tolist() if hasattr(inp, "tolist") else inp,
                                       "pred": pred, "confidence": round(conf, 6)}
        signal = base_name(name)
        what = {"distance": "inputs are farther from the training data than calibrated",
                "confidence": "the model's top-1 confidence fell below its calibrated level",
                "classes": "the predicted-class shares moved away from the held-out shares"}[signal]
        self._events.append({
            "event_id": f"{self.server_id}-{seq}-{name}", "seq": seq, "t": now, "detector": signal,
            "kind": SIGNALS[signal], "value": round(det.statistic, 4), "threshold": round(det.threshold, 4),
            "message": f"{signal}: {what} (test {name}: statistic {det.statistic:.2f} > {det.threshold:.2f} "
                       f"at request {seq})",
            "quarantine": held,
        })

    def snapshot(self, since: int = 0, limit: int = DEFAULT_LIMIT) -> dict:
        """The ``GET /v1/monitor`` answer: signals after ``since`` (at most ``limit``), events and their inputs."""
        with self._lock:
            first = self._signals[0][0] if self._signals else self.seq + 1
            start = max(0, since + 1 - first)
            signals = [{"seq": s, "t": t, "pred": p, "confidence": round(c, 6),
                        "distance": None if d is None else round(d, 6)}
                       for s, t, p, c, d in itertools.islice(self._signals, start, start + limit)]
            events = [dict(e, quarantine=list(e["quarantine"])) for e in self._events if e["seq"] > since]
            wanted = sorted({s for e in events for s in e["quarantine"]})
            quarantine = [dict(self._quarantine[s]) for s in wanted if s in self._quarantine]
            detectors = {name: {"params": det.params(), "threshold": det.threshold, "state": det.state()}
                         for name, det in self.detectors.items()}
            seq = self.seq
        calibration = dict(self.config.get("calibration") or {})
        calibration.setdefault("ert_target", ERT)
        calibration.setdefault("false_alarms_per_10k", None)
        calibration.setdefault("signal", self.config.get("signal", "input"))
        return {"server_id": self.server_id, "seq": seq, "first_seq": first, "signals": signals, "events": events,
                "quarantine": quarantine, "detectors": detectors, "calibration": calibration}
