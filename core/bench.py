"""Benchmark any ONNX file with only onnxruntime and numpy: the figures that pick a variant.

Warm-up, then timed repeats with a fixed thread count (recorded); medians and percentiles.
:func:`measure` is the one orchestration (check, fp32 reference, each model in a fresh
process, then all in turns) that the export and bench jobs, ``pocketops bench`` and
``benchmarks/quantization.py`` (through the export job) run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.errors import PocketopsError
from core.optional import require


@dataclass
class BenchConfig:
    """How long and how to measure; the defaults take well under a second for a tiny model."""

    threads: int = 1
    warmup: int = 20
    repeats: int = 300
    throughput_batch: int = 8
    throughput_repeats: int = 60
    loads: int = 3
    budget_s: float = 3.0          # stop a timed loop early past this (keeping ≥ 20 repeats)
    profile: bool = True
    isolate: bool = True           # measure in a fresh process: clean peak memory, no warm caches


def percentile_ms(times_ns: list[int], q: float) -> float:
    """The ``q``-th percentile of nanosecond timings, in milliseconds."""
    return float(np.percentile(np.asarray(times_ns, dtype=np.float64), q) / 1e6)


def time_calls(call: Callable[[int], object], *, warmup: int, repeats: int, budget_s: float) -> list[int]:
    """Run ``call(i)`` ``warmup`` times untimed, then time up to ``repeats`` calls (ns each)."""
    for i in range(warmup):
        call(i)
    times: list[int] = []
    deadline = time.perf_counter() + budget_s
    for i in range(repeats):
        t0 = time.perf_counter_ns()
        call(i)
        times.append(time.perf_counter_ns() - t0)
        if len(times) >= 20 and time.perf_counter() > deadline:
            break
    return times


def interleaved_times(calls: dict[str, Callable[[int], object]], *, warmup: int, repeats: int, rounds: int = 10,
                      budget_s: float = 10.0) -> dict[str, list[int]]:
    """Time several contenders in turns (ns per call each), rotating who goes first.

    Measured one after another, a phone that heats up (or a busy laptop) makes whoever comes
    last look slow; in turns every contender sees the same conditions.
    """
    names = list(calls)
    for name in names:
        for i in range(warmup):
            calls[name](i)
    times: dict[str, list[int]] = {n: [] for n in names}
    per = max(1, repeats // max(1, rounds))
    deadline = time.perf_counter() + budget_s
    for r in range(max(1, rounds)):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            call = calls[name]
            for k in range(per):
                t0 = time.perf_counter_ns()
                call(r * per + k)
                times[name].append(time.perf_counter_ns() - t0)
        if r >= 1 and time.perf_counter() > deadline:
            break
    return times


def compare_latency(paths: dict, X: np.ndarray, config: BenchConfig | None = None,
                    extra: dict[str, Callable[[int], object]] | None = None) -> dict:
    """Batch-1 p50/p95 and batch-8 throughput of several ONNX files measured in turns.

    ``extra`` adds other batch-1 contenders (the torch eager model) to the same turns; their
    callables get a sample index. Returns ``{key: {"latency_p50_ms", ...}}`` for every key.
    """
    config = config or BenchConfig()
    singles = [np.ascontiguousarray(X[i:i + 1]) for i in range(min(len(X), 64))]
    batch = np.ascontiguousarray(np.resize(X, (config.throughput_batch, *X.shape[1:])).astype(X.dtype))
    sessions = {}
    for key, path in paths.items():
        session = open_session(path, config.threads)
        sessions[key] = (session, check_input(session, path, X))
    ones = {key: (lambda i, s=s, n=n: s.run(None, {n: singles[i % len(singles)]})) for key, (s, n) in sessions.items()}
    ones.update(extra or {})
    t1 = interleaved_times(ones, warmup=config.warmup, repeats=config.repeats, budget_s=config.budget_s * len(ones))
    t8 = interleaved_times({key: (lambda i, s=s, n=n: s.run(None, {n: batch})) for key, (s, n) in sessions.items()},
                           warmup=max(2, config.warmup // 4), repeats=config.throughput_repeats,
                           budget_s=config.budget_s * max(1, len(sessions)))
    out = {}
    for key, times in t1.items():
        out[key] = {"latency_p50_ms": round(percentile_ms(times, 50), 4), "latency_p95_ms": round(percentile_ms(times, 95), 4),
                    "repeats": len(times), "threads": config.threads, "latency_method": "interleaved"}
        if key in t8:
            out[key]["throughput_per_s"] = round(config.throughput_batch / (float(np.median(t8[key])) / 1e9), 1)
    return out


def open_session(path: str | Path, threads: int = 1, *, profile_prefix: str | None = None):
    """A session on the file's runtime (``core.runtimes``: .onnx/.ort onnxruntime, .pte ExecuTorch,
    .tflite LiteRT) with a fixed thread count; a missing runtime or a bad file is one clear error."""
    from core import runtimes

    path = Path(path)
    rt = runtimes.runtime_of(path)
    if rt.name == "onnxruntime":
        require("onnxruntime", "benchmarking an ONNX model")  # the message users know (Linux and Termux ways)
    if not path.is_file():
        raise PocketopsError(f"{path}: no such {'ONNX' if rt.name == 'onnxruntime' else rt.label} file")
    options = {"profile_prefix": profile_prefix} if profile_prefix and rt.name == "onnxruntime" else {}
    try:
        return runtimes.open_session(path, threads, **options)
    except PocketopsError:
        raise
    except Exception as exc:  # each runtime raises its own exception types for unreadable models
        raise PocketopsError(f"{path}: {rt.name} cannot load this model ({type(exc).__name__}: {str(exc)[:200]})"
                             + ("; is it an ONNX file with a dynamic batch axis?" if rt.name == "onnxruntime" else "")
                             ) from exc


# onnxruntime's input types and the numpy dtypes a dataset's samples come in.
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}


def check_input(session, path: str | Path, X: np.ndarray) -> str:
    """The model's input name, after checking ``X`` fits its input spec (shape, dtype, batch axis)."""
    inp = session.get_inputs()[0]
    name = Path(path).name
    want = list(inp.shape[1:])
    got = list(X.shape[1:])
    fixed = [d if isinstance(d, int) else None for d in want]
    if len(want) != len(got) or any(w is not None and w != g for w, g in zip(fixed, got)):
        raise PocketopsError(f"{name}: input {inp.name!r} expects samples of shape {want}, "
                             f"the dataset has {got}; pick the dataset this model was trained on")
    expected = _ORT_DTYPES.get(inp.type)
    if expected is not None and np.dtype(expected) != X.dtype:
        raise PocketopsError(f"{name}: input {inp.name!r} expects {inp.type} ({expected}), the dataset's samples are "
                             f"{X.dtype}; pick the dataset this model was trained on")
    batch = inp.shape[0] if inp.shape else None
    if isinstance(batch, int) and batch > 0:
        raise PocketopsError(f"{name}: input {inp.name!r} has a fixed batch size of {batch} (shape {inp.shape}); "
                             "latency at batch 1, throughput at batch 8 and accuracy need a dynamic batch axis: "
                             "re-export it with one (torch.onnx.export(..., dynamic_shapes=...) or "
                             "dynamic_axes={'input': {0: 'batch'}}), as pocketops export does")
    return inp.name


def check_model(session, path: str | Path, X: np.ndarray, n_classes: int | None = None) -> str:
    """:func:`check_input`, then run two samples: the output must be one logit per class of the dataset."""
    name = check_input(session, path, X)
    out = logits(session, name, X[:2], path=path)
    if out.ndim != 2 or (n_classes is not None and out.shape[1] != n_classes):
        raise PocketopsError(f"{Path(path).name}: output {session.get_outputs()[0].name!r} gives shape "
                             f"{list(out.shape[1:])} per sample, expected [{n_classes if n_classes else 'classes'}] "
                             "(one logit per class of the dataset); pick the dataset this model was trained on")
    return name


def logits(session, name: str, X: np.ndarray, batch_size: int = 256, *, path: str | Path | None = None) -> np.ndarray:
    """The model's outputs on ``X`` in batches; an onnxruntime failure is one clear error."""
    try:
        out = [session.run(None, {name: np.ascontiguousarray(X[s:s + batch_size])})[0]
               for s in range(0, len(X), batch_size)]
    except Exception as exc:  # onnxruntime raises its own exception types (InvalidArgument, Fail, ...)
        label = Path(path).name if path else "the model"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise PocketopsError(f"{label}: {getattr(session, 'runtime', 'onnxruntime')} failed to run it on the dataset's samples "
                             f"({type(exc).__name__}: {first}); check it was made for this dataset") from exc
    return np.concatenate(out).astype(np.float32)


def _rss_mb() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss / 2**20


def profile_ops(path: str | Path, X: np.ndarray, threads: int = 1, runs: int = 60, warmup: int = 20) -> dict[str, float]:
    """Microseconds per batch-1 run spent in each op type, from onnxruntime's own profiler.

    Needs only onnxruntime (no ``onnx``), so it also names the slow op on a phone. The first
    ``warmup`` runs are left out: they include one-time allocations.
    """
    with tempfile.TemporaryDirectory(prefix="pocketops-prof-") as tmp:
        session = open_session(path, threads, profile_prefix=str(Path(tmp) / "p"))
        name = session.get_inputs()[0].name
        for i in range(warmup + runs):
            session.run(None, {name: np.ascontiguousarray(X[i % len(X):i % len(X) + 1])})
        trace = session.end_profiling()
        with open(trace) as handle:
            events = json.load(handle)
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    cutoff = starts[warmup] if len(starts) > warmup else 0
    counted = max(1, len(starts) - warmup) if len(starts) > warmup else max(1, len(starts))
    totals: dict[str, float] = {}
    for event in events:
        args = event.get("args") or {}
        if (event.get("cat") == "Node" and "op_name" in args and event.get("ts", 0) >= cutoff
                and event.get("name", "").endswith("_kernel_time")):
            totals[args["op_name"]] = totals.get(args["op_name"], 0.0) + float(event.get("dur", 0))
    return {op: round(us / counted, 3) for op, us in sorted(totals.items(), key=lambda kv: -kv[1])}


def benchmark(path: str | Path, X: np.ndarray, y: np.ndarray | None = None, *, reference: np.ndarray | None = None,
              config: BenchConfig | None = None, hwm: dict | None = None) -> dict:
    """Measure one ONNX file on samples ``X`` (the test split); a JSON-able dict of figures.

    ``reference`` is the fp32 model's logits on the same ``X``: agreement and max |Δlogit|
    are measured against it (None when there is no reference). Memory is read while serving
    (batch 1 and batch 8), before the accuracy pass (batches of 256) and the profiler (which
    parses its trace in Python) could raise it; ``hwm["serving"]`` gets the process's
    high-water mark at that point (read by the isolated child).
    """
    config = config or BenchConfig()
    path = Path(path)
    if len(X) == 0:
        raise PocketopsError(f"{path.name}: no test samples to benchmark on")
    rss0 = _rss_mb()
    load_times = []
    session = None
    for _ in range(max(1, config.loads)):
        session = None  # release the previous session first: two alive at once would inflate the memory figure
        t0 = time.perf_counter_ns()
        session = open_session(path, config.threads)
        load_times.append(time.perf_counter_ns() - t0)
    name = check_input(session, path, X)

    singles = [np.ascontiguousarray(X[i:i + 1]) for i in range(min(len(X), 64))]
    logits(session, name, X[:1], path=path)  # a model that loads but cannot run on these samples: one clear line
    t1 = time_calls(lambda i: session.run(None, {name: singles[i % len(singles)]}),
                    warmup=config.warmup, repeats=config.repeats, budget_s=config.budget_s)
    b = config.throughput_batch
    batch = np.ascontiguousarray(np.resize(X, (b, *X.shape[1:])).astype(X.dtype))
    t8 = time_calls(lambda i: session.run(None, {name: batch}), warmup=max(2, config.warmup // 4),
                    repeats=config.throughput_repeats, budget_s=config.budget_s)
    rss_serving = _rss_mb()
    if hwm is not None:
        hwm["serving"] = _maxrss_mb()

    out = logits(session, name, X, path=path)
    result: dict = {
        "threads": config.threads, "samples": int(len(X)), "size_bytes": path.stat().st_size,
        "load_ms": round(float(np.median(load_times)) / 1e6, 3),
    }
    if y is not None:
        result["accuracy"] = round(float(np.mean(out.argmax(1) == np.asarray(y))), 6)
    if reference is not None:
        if reference.shape != out.shape:
            raise PocketopsError(f"{path.name}: logits of shape {out.shape} cannot be compared with the fp32 reference {reference.shape}")
        result["agreement"] = round(float(np.mean(out.argmax(1) == reference.argmax(1))), 6)
        result["max_abs_logit_diff"] = float(np.max(np.abs(out.astype(np.float64) - reference)))
    result.update({
        "latency_p50_ms": round(percentile_ms(t1, 50), 4),
        "latency_p95_ms": round(percentile_ms(t1, 95), 4),
        "repeats": len(t1), "warmup": config.warmup,
        "throughput_batch": b, "throughput_per_s": round(b / (float(np.median(t8)) / 1e9), 1),
        # Resident memory the session added to this process while serving (in a shared process
        # the allocator may reuse freed pages: the isolated child replaces it with its high-water mark).
        "peak_memory_mb": round(max(0.0, rss_serving - rss0), 2) if rss0 is not None and rss_serving is not None else None,
        "memory_method": "rss while serving (batch 1 and 8)",
    })
    result["runtime"] = getattr(session, "runtime", "onnxruntime")
    result["batch_method"] = getattr(session, "batch_method", "native")
    if config.profile and result["runtime"] == "onnxruntime":  # the op profiler is onnxruntime's own
        result["ops_us"] = profile_ops(path, X, config.threads)
    result["measured_at"] = time.time()
    result["host_cpus"] = os.cpu_count()
    return result


def _maxrss_mb() -> float | None:
    """This process's peak resident memory since it started (exec), in MiB."""
    try:
        # VmHWM belongs to the address space, so it restarts at exec; ru_maxrss would carry the
        # parent's peak over the fork (a worker holding torch would read ~500 MB for any model).
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux and Android


def benchmark_isolated(path: str | Path, X: np.ndarray, y: np.ndarray | None = None, *,
                       reference: np.ndarray | None = None, config: BenchConfig | None = None,
                       timeout_s: float = 600) -> dict:
    """:func:`benchmark` in a fresh Python process (``python -m core.bench``).

    A model's peak memory can only be read in a process of its own: in a shared one the
    allocator reuses what earlier sessions freed. Costs ~0.3 s of process start per model.
    """
    config = config or BenchConfig()
    if not config.isolate:
        return benchmark(path, X, y, reference=reference, config=config)
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="pocketops-bench-") as tmp:
        data = Path(tmp) / "data.npz"
        arrays = {"X": X}
        if y is not None:
            arrays["y"] = np.asarray(y)
        if reference is not None:
            arrays["reference"] = reference
        np.savez(data, **arrays)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        cmd = [sys.executable, "-m", "core.bench", str(path), "--data", str(data), "--config", json.dumps(asdict(config))]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=str(root))
        except subprocess.TimeoutExpired:
            raise PocketopsError(f"{Path(path).name}: benchmark took longer than {timeout_s:.0f} s; "
                                 "lower the repeats or check the device is not throttling") from None
    if proc.returncode != 0:
        lines = (proc.stderr or "").strip().splitlines()
        raise PocketopsError(lines[-1].removeprefix("pocketops: ") if lines else
                             f"{Path(path).name}: benchmark process exited with code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Contender:
    """One ONNX model to measure: the key its caller knows it by (a variant id, a file), its name, its file."""

    key: Any
    name: str
    path: Path


@dataclass
class Measurement:
    """What :func:`measure` found: final figures per key, one-line errors per key, the reference used."""

    figures: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    reference: Contender | None = None
    extra: dict = field(default_factory=dict)     # timings of the extra contenders (torch eager), by name


def measure(models: list[Contender], data, reference: Contender | None = None, threads: int = 1, *,
            config: BenchConfig | None = None, measured: dict | None = None,
            extra: dict[str, Callable[[int], object]] | None = None,
            on_figures: Callable[[Contender, dict], None] | None = None,
            on_error: Callable[[Contender, PocketopsError], None] | None = None,
            progress: Callable[[str, int, int, str | None], None] | None = None) -> Measurement:
    """Benchmark ``models`` on ``data`` (``X_test``, ``y_test``, ``classes``): the one orchestration.

    1. Every model is checked against the data (input spec, batch axis, one logit per class)
       before any timing; a failure goes to ``on_error`` (the others are still measured) or,
       without one, is raised.
    2. The fp32 reference: ``reference`` when given, else the one ``core.recommend.reference_of``
       picks among the models (named ``fp32``, else containing ``fp32``, else the most
       accurate). Agreement and max |Δlogit| are measured against its logits.
    3. Each model is benchmarked in a fresh process (:func:`benchmark_isolated`);
       ``on_figures`` gets each result as soon as it exists. Keys in ``measured`` (figures of a
       resumed job) are not benchmarked again.
    4. With two contenders or more (models, plus ``extra`` callables such as torch eager), all
       are re-timed in turns (:func:`compare_latency`): those latencies are the final ones, the
       isolated p50 is kept as ``isolated_latency_p50_ms``.

    ``progress(stage, done, total, name)`` is called before each step ("bench", "compare");
    it may raise to stop (a cancelled job). ``threads`` fixes onnxruntime's intra-op threads.
    """
    from core.recommend import REFERENCE_NAME, reference_of

    config = config or BenchConfig(threads=threads)
    if config.threads != threads:
        config = BenchConfig(**{**asdict(config), "threads": threads})
    measured = dict(measured or {})
    X, y, n_classes = data.X_test, data.y_test, len(data.classes)
    result = Measurement()
    step = progress or (lambda stage, done, total, name: None)

    def failed(model: Contender, exc: PocketopsError) -> None:
        if on_error is None:
            raise exc
        result.errors[model.key] = str(exc)
        on_error(model, exc)

    ok: list[Contender] = []
    for model in models:  # a model made for other data is refused with its shapes, not timed
        try:
            check_model(open_session(model.path, threads), model.path, X, n_classes)
        except PocketopsError as exc:
            failed(model, exc)
        else:
            ok.append(model)
    ref_logits = None
    if reference is None and ok:
        if not any(REFERENCE_NAME in m.name for m in ok):  # the rule falls back to the most accurate
            accuracy = {m.key: float(np.mean(_logits_of(m.path, X, threads).argmax(1) == np.asarray(y))) for m in ok}
            rows = [{"name": m.name, "key": m.key, "accuracy": accuracy[m.key]} for m in ok]
        else:
            rows = [{"name": m.name, "key": m.key} for m in ok]
        chosen = reference_of(rows)
        reference = next(m for m in ok if m.key == chosen["key"])
    if reference is not None:
        ref_logits = _logits_of(reference.path, X, threads, n_classes)
        result.reference = reference

    todo = [m for m in ok if m.key not in measured]
    done = len(ok) - len(todo)
    for model in todo:
        step("bench", done, len(ok), model.name)
        try:
            figures = benchmark_isolated(model.path, X, y, reference=ref_logits, config=config)
        except PocketopsError as exc:  # one unreadable file must not hide the others' figures
            failed(model, exc)
        else:
            measured[model.key] = figures
            if on_figures is not None:
                on_figures(model, figures)
        done += 1
    step("bench", done, len(ok), None)

    timed_ok = [m for m in ok if m.key in measured]
    result.figures = {m.key: measured[m.key] for m in timed_ok}
    if timed_ok and len(timed_ok) + len(extra or {}) >= 2:
        step("compare", 0, len(timed_ok), "all, in turns")
        keys = {("model", m.key): m.path for m in timed_ok}
        timed = compare_latency(keys, X, config, {("extra", name): call for name, call in (extra or {}).items()})
        for m in timed_ok:
            before = result.figures[m.key]
            result.figures[m.key] = {**before, "isolated_latency_p50_ms": before.get("isolated_latency_p50_ms",
                                                                                      before.get("latency_p50_ms")),
                                     **timed[("model", m.key)]}
        result.extra = {name: timed[("extra", name)] for name in (extra or {})}
        step("compare", len(timed_ok), len(timed_ok), None)
    return result


def _logits_of(path: Path, X: np.ndarray, threads: int, n_classes: int | None = None) -> np.ndarray:
    session = open_session(path, threads)
    return logits(session, check_model(session, path, X, n_classes), X, path=path)


def main(argv: list[str] | None = None) -> int:
    """Child side of :func:`benchmark_isolated`: one JSON line on stdout, or one line on stderr."""
    parser = argparse.ArgumentParser(prog="python -m core.bench")
    parser.add_argument("model")
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", default="{}")
    args = parser.parse_args(argv)
    config = BenchConfig(**{**json.loads(args.config), "isolate": False})
    with np.load(args.data) as data:
        X = data["X"]
        y = data["y"] if "y" in data else None
        reference = data["reference"] if "reference" in data else None
    from core import runtimes

    try:
        runtimes.require(args.model, f"benchmarking {Path(args.model).name}")
    except PocketopsError as exc:
        print(f"pocketops: {exc}", file=sys.stderr)
        return 1
    before = _rss_mb()
    hwm: dict = {}
    try:
        result = benchmark(args.model, X, y, reference=reference, config=config, hwm=hwm)
    except PocketopsError as exc:
        print(f"pocketops: {exc}", file=sys.stderr)
        return 1
    serving, peak = hwm.get("serving"), _maxrss_mb()
    if serving is not None and before is not None:
        # The process's high-water mark while serving minus what it held before the first
        # session: the model's share at batch 1 and 8. The whole run's peak (accuracy pass in
        # batches of 256, profiler) is kept beside it.
        result["peak_memory_mb"] = round(max(0.0, serving - before), 2)
        result["memory_method"] = "high-water mark while serving (batch 1 and 8), fresh process"
        result["run_peak_memory_mb"] = round(max(0.0, peak - before), 2)
        result["process_peak_mb"] = round(peak, 1)
    result["isolated"] = True
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
