"""Drift detection on served digits: ours (calibrated at bundle time) vs River's PageHinkley and ADWIN.

    python benchmarks/drift.py            # full: 10 repeats per scenario, 2 stable streams of 10,000
    python benchmarks/drift.py --short    # CI: 4 repeats, 2 stable streams of 10,000, fewer calibration streams

One run does everything. Two digits models are trained with the project's trainer (MLP small,
1 torch thread) and exported to ONNX with its exporter: one on all ten classes, one without
class 9 (for the novel-class scenario). Each gets a real bundle (``build_bundle``: reference
sample, monitor calibrated on the validation split to an expected run length of 10,000
requests). Every request's signals come from the bundle's predictor (onnxruntime, 1 thread):
predicted class, top-1 confidence, distance to the nearest reference sample; inputs are drawn
from the TEST split (never used to calibrate).

Scenarios: stable bootstrap streams (false alarms), and per repeat 300 stable requests then
1,500 drifted ones: Gaussian noise sigma 1.5 and 4 (pixel values 0..16), a 1-2 pixel shift,
a novel class (9s sent to the model trained without them), a gradual noise ramp (sigma 0 -> 4
over 1,000 requests) and a prior shift (60 % of requests one class).

Detectors, all on the same signal streams (distance and confidence as rank scores in [-1, 1]
against held-out values, as ours sees them; River's detectors watch distance and confidence,
one instance each, an alarm of either counts):
- ours: the bundle's monitor (PageHinkley on distance, EWMA on confidence, class-share test);
- River PageHinkley and ADWIN at their defaults;
- the same two calibrated by our procedure (threshold, resp. delta, set on bootstrap streams
  of held-out signals so at most 5 % of 10,000-request streams alarm, per detector);
- always-fire: an alarm every 100 requests (the baseline River PR #1963 asked for).

Figures: false alarms per 10,000 stable requests (alarms before a drift starts count too),
median detection delay in requests (first alarm at or after the drift's start), missed-detection
rate (no alarm during the 1,500 drifted requests). Then the input-space distance is compared
with the model's penultimate features (distance to the reference's features), and the
monitoring overhead (signals + detectors per request, measured in process) is divided by a
served request's end-to-end latency on loopback (the bundle's server, keep-alive).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

PRE = 300          # stable requests before a drift starts
DRIFT = 1500       # drifted requests
STABLE_STREAM = 10_000
ALWAYS_EVERY = 100
NOVEL = 9


# -- models and bundles -----------------------------------------------------------------------

def train_bundle(db, db_path: Path, work: Path, dataset: str, epochs: int) -> Path:
    """Train an MLP on ``dataset`` with the project's trainer, export it, build its bundle; the bundle dir."""
    from core import datasets, paths
    from core.atomic import sha256_file
    from core.export import export_onnx
    from core.trainer import TrainConfig, Trainer, load_checkpoint
    from deployers.bundle import build_bundle
    from store import datasets as store_datasets
    from store import runs
    from store import variants as store_variants

    row = store_datasets.by_name(db, dataset)
    cfg = TrainConfig(dataset=dataset, model="mlp", preset="small", epochs=epochs, batch_size=32, threads=1,
                      pause_on_low_battery=False)
    run_id = runs.create(db, dataset_id=row["id"], model="mlp", config=cfg.to_dict(), epochs_total=epochs)
    arrays = datasets.load_arrays(row)
    summary = Trainer(cfg, arrays, paths.artifact_dir(db_path, "runs", run_id)).fit()
    runs.update(db, run_id, checkpoint_path=summary["checkpoint"], status="done", epochs_done=epochs)
    model, _ckpt = load_checkpoint(summary["checkpoint"])
    onnx_path = export_onnx(model, arrays.input_shape, work / f"{dataset}.onnx")
    vid = store_variants.insert(db, name="fp32", path=str(onnx_path), sha256=sha256_file(onnx_path),
                                size_bytes=onnx_path.stat().st_size, run_id=run_id,
                                meta={"dataset": dataset, "labels": arrays.classes, "input_shape": arrays.input_shape})
    started = time.perf_counter()
    bundle = build_bundle(db, db_path, vid, out_dir=work / f"bundle-{dataset}", register=False)
    print(f"{dataset}: test accuracy {summary['test_accuracy']:.3f}, bundle built and calibrated in "
          f"{time.perf_counter() - started:.1f} s")
    return bundle.path


def register_without(db, db_path: Path, cls: int) -> str:
    """The built-in digits without one class, as a dataset of its own."""
    from core import datasets

    proc = datasets._digits()
    keep = proc.y != cls
    classes = [c for i, c in enumerate(proc.classes) if i != cls]
    y = proc.y[keep]
    y = np.where(y > cls, y - 1, y)
    name = f"digits-no{cls}"
    datasets._register(db, db_path, datasets._Processed(raw=proc.raw[keep], y=y, classes=classes, kind="images",
                                                        meta=proc.meta), name=name, source=None, kind="derived")
    return name


def test_inputs(db, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The test split's raw pixel values (0..16) and labels."""
    from core.datasets import load_arrays, split_indices
    from store import datasets as store_datasets

    arrays = load_arrays(store_datasets.by_name(db, dataset))
    _tr, _va, te = split_indices(arrays.y)
    return arrays.X[te] * 16.0, arrays.y[te]


# -- streams ------------------------------------------------------------------------------------

def shift(x: np.ndarray, rng) -> np.ndarray:
    """Each image moved by 1 or 2 pixels in a random direction (zeros shifted in)."""
    out = np.zeros_like(x)
    for i in range(len(x)):
        dy, dx = 0, 0
        while dy == 0 and dx == 0:
            dy, dx = rng.integers(-2, 3, 2)
        img = np.roll(x[i, 0], (dy, dx), axis=(0, 1))
        if dy > 0:
            img[:dy] = 0
        elif dy < 0:
            img[dy:] = 0
        if dx > 0:
            img[:, :dx] = 0
        elif dx < 0:
            img[:, dx:] = 0
        out[i, 0] = img
    return out


def noisy(x: np.ndarray, sigma, rng) -> np.ndarray:
    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1, *([1] * (x.ndim - 1)))
    return np.clip(x + rng.normal(size=x.shape) * sigma, 0, 16)


def scenario_inputs(name: str, X: np.ndarray, y: np.ndarray, novel: np.ndarray, rng) -> np.ndarray:
    """PRE stable then DRIFT drifted raw inputs."""
    pre = X[rng.integers(0, len(X), PRE)]
    base = X[rng.integers(0, len(X), DRIFT)]
    if name == "noise 1.5":
        drifted = noisy(base, 1.5, rng)
    elif name == "noise 4":
        drifted = noisy(base, 4.0, rng)
    elif name == "shift 1-2 px":
        drifted = shift(base, rng)
    elif name == "novel class":
        drifted = novel[rng.integers(0, len(novel), DRIFT)]
    elif name == "noise ramp":
        drifted = noisy(base, np.minimum(np.arange(DRIFT) / 1000.0, 1.0) * 4.0, rng)
    elif name == "prior shift":
        one = X[y == 3]
        take = rng.random(DRIFT) < 0.6
        drifted = base.copy()
        drifted[take] = one[rng.integers(0, len(one), int(take.sum()))]
    else:
        raise ValueError(name)
    return np.concatenate([pre, drifted])


SCENARIOS = ("noise 1.5", "noise 4", "shift 1-2 px", "novel class", "noise ramp", "prior shift")


def signals(predictor, X: np.ndarray, distance=None) -> dict:
    """Per-request signals from the bundle's predictor, 64 requests per call."""
    preds, confs, dists = [], [], []
    for i in range(0, len(X), 64):
        p, c, d = predictor.signals(X[i:i + 64])
        preds.append(p)
        confs.append(c)
        dists.append(d if distance is None else distance(X[i:i + 64]))
    return {"pred": np.concatenate(preds), "conf": np.concatenate(confs), "dist": np.concatenate(dists)}


# -- detectors ----------------------------------------------------------------------------------

def ours_alarms(config: dict, sig: dict) -> list[int]:
    """Indices at which the bundle's monitor raises an event (a fresh monitor per stream)."""
    from deployers.runtime.monitor import Monitor

    m = Monitor(config, events=10_000)
    n = len(sig["pred"])
    dummy = np.zeros((n, 1))
    for i in range(0, n, 64):
        m.observe(dummy[i:i + 64], sig["pred"][i:i + 64], sig["conf"][i:i + 64], sig["dist"][i:i + 64])
    return sorted({e["seq"] - 1 for e in m.snapshot(0, 1)["events"]})


def scores(config: dict, sig: dict) -> tuple[np.ndarray, np.ndarray]:
    """(distance score, confidence deficit score) as ours sees them; River gets the same values."""
    from deployers.runtime.monitor import Scorer

    d = Scorer(**config["scorers"]["distance"])(sig["dist"])
    c = -Scorer(**config["scorers"]["confidence"])(sig["conf"])
    return d, c


def river_alarms(make, streams: tuple[np.ndarray, ...]) -> list[int]:
    """Alarm indices of one River detector per signal stream (an alarm of any counts)."""
    hits = set()
    for s in streams:
        det = make()
        for i, v in enumerate(s.tolist()):
            det.update(v)
            if det.drift_detected:
                hits.add(i)
    return sorted(hits)


def always_alarms(n: int) -> list[int]:
    return list(range(ALWAYS_EVERY - 1, n, ALWAYS_EVERY))


def calibrate_river(kind: str, held: np.ndarray, streams: int, budget: float, seed: int):
    """A River detector factory whose one parameter is set by our procedure on bootstrap streams of ``held``."""
    from river import drift

    from deployers.runtime.monitor import ERT, bootstrap_streams

    data = held[bootstrap_streams(len(held), streams, ERT, seed)]

    def share(make) -> float:
        alarmed = 0
        for s in data:
            det = make()
            for v in s.tolist():
                det.update(v)
                if det.drift_detected:
                    alarmed += 1
                    break
        return alarmed / len(data)

    if kind == "PH":
        lo, hi = 1.0, 400.0  # threshold: more is quieter
        for _ in range(10):
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if share(lambda: drift.PageHinkley(threshold=mid)) > budget else (lo, mid)
        return hi, (lambda: drift.PageHinkley(threshold=hi))
    lo, hi = -30.0, math.log(0.5)  # log delta: less is quieter
    for _ in range(10):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if share(lambda: drift.ADWIN(delta=math.exp(mid))) > budget else (mid, hi)
    return math.exp(lo), (lambda: drift.ADWIN(delta=math.exp(lo)))


# -- evaluation ---------------------------------------------------------------------------------

class Tally:
    """False alarms, delays and misses of one detector over all streams."""

    def __init__(self):
        self.false_alarms = 0
        self.stable = 0
        self.delays: dict[str, list[int]] = {}
        self.missed: dict[str, int] = {}
        self.runs: dict[str, int] = {}

    def stable_stream(self, alarms: list[int], n: int) -> None:
        self.false_alarms += len(alarms)
        self.stable += n

    def drift_stream(self, scenario: str, alarms: list[int]) -> None:
        before = [a for a in alarms if a < PRE]
        self.stable_stream(before, PRE)
        after = [a for a in alarms if a >= PRE]
        self.runs[scenario] = self.runs.get(scenario, 0) + 1
        if after:
            self.delays.setdefault(scenario, []).append(after[0] - PRE)
        else:
            self.missed[scenario] = self.missed.get(scenario, 0) + 1

    def fa_per_10k(self) -> float:
        return self.false_alarms * 10_000 / max(self.stable, 1)

    def delay(self, scenario: str) -> float | None:
        d = self.delays.get(scenario)
        return float(statistics.median(d)) if d else None

    def miss_rate(self, scenario: str) -> float:
        return self.missed.get(scenario, 0) / max(self.runs.get(scenario, 1), 1)

    def median_delay(self) -> float | None:
        every = [v for d in self.delays.values() for v in d]
        return float(statistics.median(every)) if every else None


def penultimate(bundle: Path, work: Path):
    """A distance function on the model's penultimate features (the last Gemm's input as a second output)."""
    import onnx
    import onnxruntime as ort

    from deployers.runtime.predictor import Predictor

    model = onnx.load(str(bundle / "model.onnx"))
    last = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    model.graph.output.append(onnx.helper.make_tensor_value_info(last.input[0], onnx.TensorProto.FLOAT, None))
    path = work / f"{bundle.name}-features.onnx"
    onnx.save(model, str(path))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    pred = Predictor(bundle, monitor=False)

    def feats(raw: np.ndarray) -> np.ndarray:
        x = pred.model_input(raw.reshape((len(raw), *pred.sample_shape)))
        return session.run([last.input[0]], {pred.input_name: x})[0].astype(np.float64).reshape(len(raw), -1)

    with np.load(bundle / "reference.npz") as data:
        ref = feats(np.asarray(data["X"], dtype=np.float64))

    def distance(raw: np.ndarray) -> np.ndarray:
        f = feats(raw)
        sq = (f * f).sum(1)[:, None] + (ref * ref).sum(1)[None, :] - 2.0 * f @ ref.T
        return np.sqrt(np.maximum(sq, 0.0)).min(axis=1)

    return distance, last.input[0]


def features_config(bundle: Path, distance, db, dataset: str) -> dict:
    """Our monitor calibrated as at bundle time, with distances in feature space."""
    from core.datasets import load_arrays, split_indices
    from deployers.runtime import monitor
    from deployers.runtime.predictor import Predictor
    from store import datasets as store_datasets

    arrays = load_arrays(store_datasets.by_name(db, dataset))
    _tr, va, _te = split_indices(arrays.y)
    val = arrays.X[va] * 16.0
    p, c, _d = Predictor(bundle, monitor=False).signals(val)
    # Training samples are no null sample for features the model was fitted on: validation only.
    return monitor.calibrate(distance(val), c, p, len(arrays.classes), signal="features")


def overhead(bundle: Path, requests: int) -> tuple[float, float, float, float]:
    """(monitoring µs per request in process, of which the detectors and ring, served end-to-end µs, percent)."""
    from deployers.runtime.predictor import Predictor
    from tests._serve_helpers import call, running_server

    with np.load(bundle / "reference.npz") as data:
        X = np.asarray(data["X"], dtype=np.float64)
    on = Predictor(bundle, threads=1)
    sample = X[:1]
    probs = np.full((1, len(on.labels)), 1.0 / len(on.labels))
    times, detectors = [], []
    for i in range(requests):
        xi = on.model_input(X[i % len(X)][None])
        t = time.perf_counter()
        d = on.distances(xi)
        t1 = time.perf_counter()
        on.monitor.observe(xi, probs.argmax(1), probs.max(1), d)
        t2 = time.perf_counter()
        times.append(t2 - t)
        detectors.append(t2 - t1)
    monitor_us = statistics.median(times) * 1e6
    detectors_us = statistics.median(detectors) * 1e6
    body = json.dumps({"inputs": sample.tolist()}).encode()
    with running_server(bundle) as server:
        import socket

        sock = socket.create_connection(("127.0.0.1", server.port))
        request = (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        f = sock.makefile("rb")
        lat = []
        for i in range(requests):
            t = time.perf_counter()
            sock.sendall(request)
            length = 0
            while True:
                line = f.readline()
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                if line in (b"\r\n", b""):
                    break
            f.read(length)
            lat.append(time.perf_counter() - t)
        sock.close()
        mon = call(server.port, "GET", "/v1/monitor?since=0&limit=1").json()
        assert mon["seq"] >= requests, mon["seq"]
    e2e_us = statistics.median(lat) * 1e6
    return monitor_us, detectors_us, e2e_us, 100.0 * monitor_us / e2e_us


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="fewer repeats and calibration streams (CI)")
    args = parser.parse_args()
    reps = 4 if args.short else 10
    river_streams = 30 if args.short else 100
    stable_streams = 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import store
    from core.datasets import ensure_builtin
    from deployers.runtime.predictor import Predictor

    t0 = time.perf_counter()
    print(f"drift benchmark: {'short' if args.short else 'full'}; torch and onnxruntime 1 thread; "
          f"{reps} repeats per scenario of {PRE} stable + {DRIFT} drifted requests; "
          f"{stable_streams} stable streams of {STABLE_STREAM}")
    with tempfile.TemporaryDirectory(prefix="pocketops-drift-") as tmp:
        work = Path(tmp)
        db_path = work / "bench.db"
        db = store.connect(db_path)
        ensure_builtin(db, db_path)
        no9 = register_without(db, db_path, NOVEL)
        epochs = 15 if args.short else 30
        bundle = train_bundle(db, db_path, work, "digits", epochs)
        bundle9 = train_bundle(db, db_path, work, no9, epochs)
        config = json.loads((bundle / "monitor.json").read_text())
        config9 = json.loads((bundle9 / "monitor.json").read_text())
        cal = config["calibration"]
        print(f"calibration (digits bundle): {cal['held_out']} held-out requests, {cal['distance_samples']} distance "
              f"samples, thresholds " + ", ".join(f"{k} {d['params']['threshold']:.3g}" for k, d in config["detectors"].items())
              + f"; measured on fresh bootstrap streams: {cal['false_alarms_per_10k']} false alarms per 10k "
              f"(ERT ~{cal['ert_estimate']})")
        pred, pred9 = Predictor(bundle, monitor=False), Predictor(bundle9, monitor=False)
        X, y = test_inputs(db, "digits")
        X9, y9 = test_inputs(db, no9)
        from core.datasets import BUILTIN_FILE
        with np.load(BUILTIN_FILE) as data:
            novel = data["images"][data["labels"] == NOVEL][:, None].astype(np.float64)

        # The same streams for every detector.
        rng = np.random.default_rng(2026)
        stable_raw = [X[rng.integers(0, len(X), STABLE_STREAM)] for _ in range(stable_streams)]
        stable = [signals(pred, raw) for raw in stable_raw]
        runs = []
        for name in SCENARIOS:
            for _ in range(reps):
                if name == "novel class":
                    raw = scenario_inputs(name, X9, y9, novel, rng)
                    runs.append((name, raw, signals(pred9, raw), config9))
                else:
                    raw = scenario_inputs(name, X, y, novel, rng)
                    runs.append((name, raw, signals(pred, raw), config))
        print(f"signals of {sum(len(s['pred']) for s in stable) + sum(len(r[2]['pred']) for r in runs)} requests "
              f"through the predictor: {time.perf_counter() - t0:.0f} s so far")

        from river import drift

        held_d, held_c = scores(config, signals(pred, _val_inputs(db, "digits")))
        cal_started = time.perf_counter()
        ph_thr, ph_cal = calibrate_river("PH", np.concatenate([held_d, held_c]), river_streams, 0.05, 7)
        ad_delta, ad_cal = calibrate_river("ADWIN", np.concatenate([held_d, held_c]), river_streams, 0.05, 8)
        print(f"River calibrated by our procedure ({river_streams} streams of 10,000, ≤ 5 % alarm): "
              f"PageHinkley threshold {ph_thr:.3g}, ADWIN delta {ad_delta:.3g} "
              f"({time.perf_counter() - cal_started:.0f} s)")
        detectors = {
            "ours": None,
            "river PH": lambda: drift.PageHinkley(),
            "river ADWIN": lambda: drift.ADWIN(),
            "river PH cal": ph_cal,
            "river ADWIN cal": ad_cal,
            "always-fire": "always",
        }
        tallies = {k: Tally() for k in detectors}

        def alarms_of(key, make, sig, cfg):
            if make is None:
                return ours_alarms(cfg, sig)
            if make == "always":
                return always_alarms(len(sig["pred"]))
            return river_alarms(make, scores(cfg, sig))

        for key, make in detectors.items():
            for sig in stable:
                tallies[key].stable_stream(alarms_of(key, make, sig, config), len(sig["pred"]))
            for name, _raw, sig, cfg in runs:
                tallies[key].drift_stream(name, alarms_of(key, make, sig, cfg))

        # Input space vs the model's penultimate features for our distance signal.
        feat_dist, feat_name = penultimate(bundle, work)
        feat_dist9, _ = penultimate(bundle9, work)
        fconfig, fconfig9 = features_config(bundle, feat_dist, db, "digits"), features_config(bundle9, feat_dist9, db, no9)
        feats = Tally()
        for raw, sig in zip(stable_raw, stable):
            feats.stable_stream(ours_alarms(fconfig, {**sig, "dist": _chunked(feat_dist, raw)}), len(raw))
        for name, raw, sig, cfg in runs:
            fd, fc = (feat_dist9, fconfig9) if name == "novel class" else (feat_dist, fconfig)
            feats.drift_stream(name, ours_alarms(fc, {**sig, "dist": _chunked(fd, raw)}))

        print()
        head = f"{'detector':<17}{'FA/10k':>8}{'median delay':>14}" + "".join(f"{s[:12]:>14}" for s in SCENARIOS)
        print(head + "   (per scenario: median delay / missed share)")
        for key, t in [*tallies.items(), ("ours, features", feats)]:
            cells = "".join(f"{_fmt(t.delay(s)):>8}/{t.miss_rate(s):<5.2f}" for s in SCENARIOS)
            print(f"{key:<17}{t.fa_per_10k():>8.2f}{_fmt(t.median_delay()):>14}{cells}")
        print(f"(stable requests counted: {tallies['ours'].stable}; features: the input of the last Gemm, "
              f"{feat_name!r}, distance to the reference's features)")

        ours = tallies["ours"]
        verdicts = []
        for s in SCENARIOS:
            rivals = [k for k in ("river PH", "river ADWIN", "river PH cal", "river ADWIN cal")
                      if tallies[k].fa_per_10k() <= ours.fa_per_10k() and tallies[k].miss_rate(s) < 1.0]
            best = min((tallies[k].delay(s) for k in rivals if tallies[k].delay(s) is not None), default=None)
            mine = ours.delay(s)
            verdicts.append(f"{s}: ours {_fmt(mine)} vs best eligible River {_fmt(best)}"
                            + ("" if best is None or (mine is not None and mine <= best) else "  <- slower"))
        print("delay vs the best River detector with no more false alarms than ours: " + "; ".join(verdicts))
        print(f"missed: novel class {ours.miss_rate('novel class'):.2f}, noise 4 {ours.miss_rate('noise 4'):.2f}")
        win = "input" if _score(ours) <= _score(feats) else "features"
        print(f"signal: input space FA/10k {ours.fa_per_10k():.2f}, median delay {_fmt(ours.median_delay())}, "
              f"missed {_misses(ours):.2f}; features FA/10k {feats.fa_per_10k():.2f}, median delay "
              f"{_fmt(feats.median_delay())}, missed {_misses(feats):.2f} -> {win} detects better")
        mon_us, det_us, e2e_us, pct = overhead(bundle, 1000 if args.short else 3000)
        print(f"overhead: monitoring {mon_us:.1f} µs per request in process (distance {mon_us - det_us:.1f} + "
              f"detectors and ring {det_us:.1f}), served request {e2e_us:.0f} µs end to end on loopback "
              f"(median, keep-alive, 1 thread): {pct:.1f} % ({100 * det_us / e2e_us:.1f} % without the distance, "
              f"which /v1/stats computed before the monitor existed)")
        print(f"total time {time.perf_counter() - t0:.0f} s")
        print(f"false alarms per 10k: {ours.fa_per_10k():.2f}")
        print(f"median delay: {_fmt(ours.median_delay())}")
        print(f"missed novel class: {ours.miss_rate('novel class'):.2f}")
        print(f"missed noise 4: {ours.miss_rate('noise 4'):.2f}")
        print(f"overhead pct: {pct:.2f}")
        print(f"drift: false alarms per 10k {ours.fa_per_10k():.2f} (river PH {tallies['river PH'].fa_per_10k():.2f}, "
              f"ADWIN {tallies['river ADWIN'].fa_per_10k():.2f}), median delay {_fmt(ours.median_delay())} "
              f"(river PH {_fmt(tallies['river PH'].median_delay())}, ADWIN {_fmt(tallies['river ADWIN'].median_delay())}), "
              f"overhead {pct:.1f}%")
    return 0


def _val_inputs(db, dataset: str) -> np.ndarray:
    from core.datasets import load_arrays, split_indices
    from store import datasets as store_datasets

    arrays = load_arrays(store_datasets.by_name(db, dataset))
    _tr, va, _te = split_indices(arrays.y)
    return arrays.X[va] * 16.0


def _chunked(fn, raw: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(raw[i:i + 256]) for i in range(0, len(raw), 256)])


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def _misses(t: Tally) -> float:
    return sum(t.missed.values()) / max(sum(t.runs.values()), 1)


def _score(t: Tally) -> tuple:
    """Fewer misses first, then fewer false alarms, then a shorter delay."""
    return (round(_misses(t), 3), round(t.fa_per_10k(), 2), t.median_delay() or math.inf)


if __name__ == "__main__":
    sys.exit(main())
