"""Worker handlers: ``export`` (checkpoint → ONNX → variants → benchmarks → recommendation)
and ``bench`` (re-benchmark registered variants on this device).

Nothing is registered until every requested variant file is built; a failure before that
removes the job's directory, so a failed export leaves no rows and no files. Benchmarks then
land one variant at a time, so the Quantize panel fills in as results arrive. Torch is imported
only inside the export handler: this module is also imported by the CLI.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core import bench, recommend
from core.atomic import sha256_file
from core.errors import ConfigError, PocketopsError
from core.quantize import DEFAULT_VARIANTS, QuantizeConfig, check_names
from store import artifacts as store_artifacts
from store import datasets as store_datasets
from store import runs as store_runs
from store import variants as store_variants
from store.db import transaction

SUMMARY_FIELDS = ("variant_id", "name", "path", "size_bytes", "load_ms", "latency_p50_ms", "latency_p95_ms",
                  "accuracy", "agreement", "max_abs_logit_diff")
EXTRA_FIELDS = ("throughput_per_s", "peak_memory_mb", "threads", "status", "error")


@dataclass
class ExportRequest:
    """The ``export`` job's payload, validated."""

    run_id: int
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    threads: int = 1
    calibration_samples: int = 256
    prefer: str = "latency"
    budget_points: float = recommend.DEFAULT_BUDGET_POINTS

    @classmethod
    def from_payload(cls, payload: dict) -> "ExportRequest":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise ConfigError(f"export job: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "run_id" not in payload:
            raise ConfigError("export job: payload needs run_id")
        req = cls(**payload)
        req.variants = check_names(list(req.variants or DEFAULT_VARIANTS))
        if "fp32" not in req.variants:
            req.variants.insert(0, "fp32")  # the reference every other variant is judged against
        if int(req.threads) < 1:
            raise ConfigError(f"threads must be 1 or more, not {req.threads}")
        if int(req.calibration_samples) < 1:
            raise ConfigError(f"calibration_samples must be 1 or more, not {req.calibration_samples}")
        if req.prefer not in recommend.PREFERENCES:
            raise ConfigError(f"prefer must be one of {', '.join(recommend.PREFERENCES)}, not {req.prefer!r}")
        if float(req.budget_points) < 0:
            raise ConfigError(f"budget_points must be ≥ 0, not {req.budget_points}")
        return req


# -- data ----------------------------------------------------------------------------------

@dataclass
class EvalData:
    """The splits a variant is built from and judged on."""

    X_train: np.ndarray
    X_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    dataset: str
    fingerprint: str
    split: dict


def eval_data(db, dataset_name: str, split: dict | None = None) -> EvalData:
    """A registered dataset's train/val/test arrays, split as training split it."""
    from core.datasets import load_arrays, split_indices

    row = store_datasets.by_name(db, dataset_name)
    if row is None:
        known = ", ".join(r["name"] for r in store_datasets.list_all(db)) or "none"
        raise ConfigError(f"no dataset named {dataset_name!r}; registered: {known} (pocketops datasets add …)")
    split = {"seed": 0, "val": 0.15, "test": 0.15, **(split or {})}
    arrays = load_arrays(row)
    tr, va, te = split_indices(arrays.y, seed=split["seed"], val=split["val"], test=split["test"])
    return EvalData(arrays.X[tr], arrays.X[va], arrays.X[te], arrays.y[te], list(arrays.classes), row["name"],
                    row["fingerprint"], split)


def checkpoint_for(run: dict) -> Path:
    """The run's best checkpoint (``best.pt`` beside the recorded one when it exists)."""
    if not run.get("checkpoint_path"):
        raise ConfigError(f"run {run['id']} has no checkpoint yet (status {run['status']}); "
                          "export a run that has finished at least one epoch")
    recorded = Path(run["checkpoint_path"])
    best = recorded.parent / "best.pt"
    path = best if best.exists() else recorded
    if not path.exists():
        raise ConfigError(f"run {run['id']}: checkpoint {path} is missing; train the run again")
    return path


# -- rows and summary ----------------------------------------------------------------------

def bench_rows(variants: list[dict]) -> list[dict]:
    """Variant rows flattened with their benchmark figures (what recommend() and the panel read)."""
    out = []
    for v in variants:
        b = v.get("bench") or {}
        out.append({"variant_id": v["id"], "name": v["name"], "path": v["path"], "size_bytes": v["size_bytes"],
                    "status": v["status"], **{k: b.get(k) for k in SUMMARY_FIELDS[4:] + EXTRA_FIELDS[:3]},
                    "ops_us": b.get("ops_us") or {}, "error": b.get("error")})
    return out


def baseline_of(variants: list[dict]) -> dict:
    for v in variants:
        if (v.get("meta") or {}).get("baseline"):
            return v["meta"]["baseline"]
    return {}


def summary(run_id: int | None, variants: list[dict], *, prefer: str = "latency",
            budget_points: float = recommend.DEFAULT_BUDGET_POINTS) -> dict:
    """The export result scripts rely on (the last line of ``pocketops export --json``)."""
    rows = bench_rows(variants)
    base = baseline_of(variants)
    rec = recommend.recommend(rows, prefer=prefer, budget_points=budget_points,
                              torch_latency_p50_ms=base.get("torch_latency_p50_ms"))
    return {
        "run_id": run_id,
        "variants": [{k: r.get(k) for k in SUMMARY_FIELDS + EXTRA_FIELDS} for r in rows],
        "baseline": {"torch_latency_p50_ms": base.get("torch_latency_p50_ms"), **base},
        "recommended": rec.as_dict(),
        "prefer": prefer, "budget_points": budget_points,
    }


# -- handlers ------------------------------------------------------------------------------

def _require_tools(names: list[str]) -> None:
    from core.export import require_export_tools
    from core.quantize import require_quantize_tools

    from core.optional import require

    require_export_tools("ONNX export")
    if any(n != "fp32" for n in names):
        require_quantize_tools("Quantization")
    if "fp16" in names:
        from core.quantize import require_fp16_tools

        require_fp16_tools()

    require("onnxruntime", "benchmarking the variants")


def _load(db, req: ExportRequest, ckpt_path: Path):
    """The trained model (eval mode), its checkpoint dict and the data it was trained on."""
    from core.trainer import load_checkpoint

    model, ckpt = load_checkpoint(ckpt_path)
    cfg = ckpt.get("config") or {}
    data = eval_data(db, ckpt.get("dataset") or cfg.get("dataset"), {k: cfg[k] for k in ("seed", "val", "test") if k in cfg})
    if ckpt.get("dataset_fingerprint") and ckpt["dataset_fingerprint"] != data.fingerprint:
        raise ConfigError(f"run {req.run_id}: dataset {data.dataset!r} changed since training "
                          "(fingerprint differs); train again before exporting")
    return model, ckpt, data


def _build(ctx, req: ExportRequest, run: dict, ckpt_path: Path, model, ckpt: dict, data: EvalData, out_dir: Path) -> list[int]:
    """Export, verify, build every variant, then register them all at once; ids in order."""
    from core import export, quantize

    inp = ckpt.get("input") or {}
    shape, dtype = inp.get("shape") or list(data.X_test.shape[1:]), inp.get("dtype") or str(data.X_test.dtype)
    from core.optional import require

    torch = require("torch", "ONNX export")
    total = len(req.variants)
    ctx.progress(stage="export", done=0, total=total, variant="fp32")
    fp32 = out_dir / "fp32.onnx"
    export.export_onnx(model, shape, fp32, input_dtype=dtype, example=torch.from_numpy(data.X_test[:2]))
    check = export.verify(model, fp32, data.X_test)
    built = []
    qcfg = QuantizeConfig(calibration_samples=req.calibration_samples)
    for i, name in enumerate(req.variants):
        ctx.check()
        ctx.progress(stage="quantize", done=i, total=total, variant=name)
        b = quantize.build(name, fp32, out_dir / f"{name}.onnx", X_train=data.X_train, X_check=data.X_val, config=qcfg)
        built.append((b, quantize.op_types(b.path)))
    ctx.check()  # a cancel that came while the last variant was building: register nothing
    common = {"job_id": ctx.job_id, "run_id": req.run_id, "source": "export", "dataset": data.dataset,
              "dataset_fingerprint": data.fingerprint, "split": data.split, "classes": data.classes,
              "input": {"shape": shape, "dtype": dtype}, "checkpoint": str(ckpt_path), "model": run["model"]}
    ids = []
    with transaction(ctx.db):
        for b, ops in built:
            path, sha, size = str(b.path), sha256_file(b.path), b.path.stat().st_size
            meta = {**common, "build": b.meta, "op_types": ops}
            if b.name == "fp32":
                meta.update(verify=check.as_dict())
            store_artifacts.register(ctx.db, kind="onnx", path=path, sha256=sha, size_bytes=size, run_id=req.run_id,
                                     meta={"variant": b.name, "job_id": ctx.job_id})
            ids.append(store_variants.insert(ctx.db, name=b.name, path=path, sha256=sha, size_bytes=size,
                                             run_id=req.run_id, meta=meta))
    ctx.log("info", f"run {req.run_id}: exported {', '.join(b.name for b, _ in built)} "
                    f"(fp32 matches torch: agreement {check.agreement:.1%}, max |Δlogit| {check.max_abs_logit_diff:.1e})")
    return ids


def bench_variants(ctx, variants: list[dict], threads: int, *, only_unmeasured: bool = False,
                   data: EvalData | None = None) -> None:
    """Benchmark variants one by one (each in a fresh process), storing each result as soon as it exists."""
    for v in variants:
        if not (v.get("meta") or {}).get("dataset"):
            store_variants.set_failed(ctx.db, v["id"], "no dataset recorded for this model; "
                                      "register it with `pocketops models add MODEL.onnx --dataset NAME`")
    done = 0
    for members in _by_data(variants):
        dataset, split = members[0]["meta"]["dataset"], members[0]["meta"].get("split") or {}
        if data is None or data.dataset != dataset or data.split != {**data.split, **split}:
            data = eval_data(ctx.db, dataset, split)
        # The reference for agreement and max |Δlogit|: the fp32 variant (or a registered model named like one).
        reference_row = (next((v for v in members if v["name"] == "fp32"), None)
                         or next((v for v in members if "fp32" in v["name"]), None))
        if reference_row is None and members[0].get("run_id"):
            reference_row = next((v for v in store_variants.latest_for_run(ctx.db, members[0]["run_id"])
                                  if v["name"] == "fp32"), None)
        ref = None
        if reference_row is not None and Path(reference_row["path"]).exists():
            session = bench.open_session(reference_row["path"], threads)
            ref = bench.logits(session, bench.check_model(session, reference_row["path"], data.X_test, len(data.classes)),
                               data.X_test, path=reference_row["path"])
        for v in members:
            ctx.check()
            if only_unmeasured and v["status"] == "benchmarked":
                done += 1
                continue
            ctx.progress(stage="bench", done=done, total=len(variants), variant=v["name"])
            try:
                if v is not reference_row:  # a model made for other data is refused with its shapes, not timed
                    bench.check_model(bench.open_session(v["path"], threads), v["path"], data.X_test, len(data.classes))
                figures = bench.benchmark_isolated(v["path"], data.X_test, data.y_test, reference=ref,
                                                   config=bench.BenchConfig(threads=threads))
            except PocketopsError as exc:  # one unreadable file must not hide the others' figures
                store_variants.set_failed(ctx.db, v["id"], str(exc))
                ctx.log("warning", f"variant {v['id']} ({v['name']}): {exc}")
            else:
                store_variants.set_bench(ctx.db, v["id"], figures)
            done += 1
    ctx.progress(stage="bench", done=done, total=len(variants))


def compare_variants(ctx, variants: list[dict], data: EvalData, threads: int, *, model=None) -> dict:
    """Re-time all benchmarked variants (and the torch model, if given) in turns, so they are
    compared under the same conditions; their latencies and the torch baseline are stored."""
    fresh = [store_variants.get(ctx.db, v["id"]) for v in variants]
    ok = [v for v in fresh if v["status"] == "benchmarked" and Path(v["path"]).exists()]
    if not ok:
        return {}
    ctx.check()
    ctx.progress(stage="compare", done=0, total=len(ok), variant="all, in turns")
    config = bench.BenchConfig(threads=threads)
    extra, torch, before = {}, None, None
    if model is not None:
        from core.optional import require

        torch = require("torch", "the torch eager baseline")
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        singles = [torch.from_numpy(np.ascontiguousarray(data.X_test[i:i + 1])) for i in range(min(len(data.X_test), 64))]
        extra["torch"] = lambda i: model(singles[i % len(singles)])
    try:
        with (torch.inference_mode() if torch is not None else _nothing()):
            timed = bench.compare_latency({v["id"]: v["path"] for v in ok}, data.X_test, config, extra)
    finally:
        if torch is not None:
            torch.set_num_threads(before)
    with transaction(ctx.db):
        for v in ok:
            b = v["bench"]
            store_variants.set_bench(ctx.db, v["id"], {**b, "isolated_latency_p50_ms": b.get("isolated_latency_p50_ms", b.get("latency_p50_ms")),
                                                       **timed[v["id"]]})
        if "torch" in timed:
            fp32 = next((v for v in ok if v["name"] == "fp32"), ok[0])
            t = timed["torch"]
            store_variants.update_meta(ctx.db, fp32["id"], baseline={
                "torch_latency_p50_ms": t["latency_p50_ms"], "torch_latency_p95_ms": t["latency_p95_ms"],
                "threads": threads, "repeats": t["repeats"], "latency_method": "interleaved"})
    ctx.progress(stage="compare", done=len(ok), total=len(ok))
    return timed


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run(ctx) -> dict:
    """Job kind ``export``: payload {"run_id", "variants", "threads", "calibration_samples", "prefer", "budget_points"}."""
    req = ExportRequest.from_payload(ctx.payload)
    _require_tools(req.variants)  # before anything is written: fail at once with the way forward
    run_row = store_runs.get(ctx.db, req.run_id)
    if run_row is None:
        raise ConfigError(f"no run {req.run_id}; see `pocketops runs list`")
    ckpt_path = checkpoint_for(run_row)
    model, ckpt, data = _load(ctx.db, req, ckpt_path)
    mine = store_variants.for_job(ctx.db, ctx.job_id)
    if not mine:  # a resumed job keeps what an earlier attempt registered
        out_dir = ctx.files("runs", req.run_id, "onnx", f"job-{ctx.job_id}")
        # An attempt killed before registering left unregistered files (temp files too): start clean.
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            _build(ctx, req, run_row, ckpt_path, model, ckpt, data, out_dir)
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
        mine = store_variants.for_job(ctx.db, ctx.job_id)
    bench_variants(ctx, mine, req.threads, only_unmeasured=True, data=data)
    compare_variants(ctx, mine, data, req.threads, model=model)
    result = summary(req.run_id, store_variants.for_job(ctx.db, ctx.job_id), prefer=req.prefer,
                     budget_points=req.budget_points)
    rec = result["recommended"]
    ctx.log("info", f"run {req.run_id}: recommended {rec['name']} — {rec['reason']}")
    return result


def run_bench(ctx) -> dict:
    """Job kind ``bench``: payload {"run_id"} (its newest variants) or {"variant_ids": [...]}, plus "threads"."""
    payload = ctx.payload
    threads = int(payload.get("threads", 1))
    if threads < 1:
        raise ConfigError(f"threads must be 1 or more, not {threads}")
    from core.optional import require

    require("onnxruntime", "benchmarking a model")
    if payload.get("variant_ids"):
        variants = [store_variants.get(ctx.db, int(i)) for i in payload["variant_ids"]]
        missing = [i for i, v in zip(payload["variant_ids"], variants) if v is None]
        if missing:
            raise ConfigError(f"no variant(s) {', '.join(map(str, missing))}; see `pocketops models list`")
    elif payload.get("run_id") is not None:
        variants = store_variants.latest_for_run(ctx.db, int(payload["run_id"]))
        if not variants:
            raise ConfigError(f"run {payload['run_id']} has no variants yet; export it first (pocketops export {payload['run_id']})")
    else:
        raise ConfigError("bench job: payload needs run_id or variant_ids")
    bench_variants(ctx, variants, threads)
    for group in _by_data(variants):
        first = group[0]["meta"]
        compare_variants(ctx, group, eval_data(ctx.db, first["dataset"], first.get("split")), threads)
    fresh = [store_variants.get(ctx.db, v["id"]) for v in variants]
    return summary(payload.get("run_id"), fresh, prefer=payload.get("prefer", "latency"),
                   budget_points=float(payload.get("budget_points", recommend.DEFAULT_BUDGET_POINTS)))


def queue_export(db, run_id: int, **options) -> int:
    """Queue an export of a finished run (an intent: the dashboard and the CLI call this); the job id.

    ``options`` are the payload's other fields (variants, threads, calibration_samples, prefer,
    budget_points). Refused while an export of the same run is queued or running.
    """
    from store import jobs

    on = options.pop("on", None)  # a cluster builds the variants (core/remote_job.py)
    req = ExportRequest.from_payload({"run_id": run_id, **options})
    run_row = store_runs.get(db, run_id)
    if run_row is None:
        raise ConfigError(f"no run {run_id}; see `pocketops runs list`")
    if run_row["status"] in ("queued", "running"):
        raise ConfigError(f"run {run_id} is still {run_row['status']}; export it when training has finished")
    checkpoint_for(run_row)
    active = jobs.latest_for_run(db, run_id, "export")
    if active and active["status"] in jobs.ACTIVE:
        raise ConfigError(f"run {run_id} is already being exported (job {active['id']}, {active['status']})")
    return jobs.enqueue(db, "export", {**asdict(req), **({"on": on} if on else {})}, run_id=run_id)


def queue_bench(db, run_id: int, *, threads: int = 1) -> int:
    """Queue a re-benchmark of a run's newest variants on this device; the job id."""
    from store import jobs

    if not store_variants.latest_for_run(db, run_id):
        raise ConfigError(f"run {run_id} has no variants yet; export it first")
    if int(threads) < 1:
        raise ConfigError(f"threads must be 1 or more, not {threads}")
    return jobs.enqueue(db, "bench", {"run_id": run_id, "threads": int(threads)}, run_id=run_id)


def cancel(db, run_id: int) -> dict:
    """Cancel the run's export or re-benchmark job that is queued or running (an intent).

    A queued job is cancelled at once; a running one stops at its next safe point (between
    variants): files of an export still building are removed, variants already registered
    stay (re-benchmark them later). Returns ``{"run_id", "job_id", "kind", "status"}``.
    """
    from store import jobs

    active = [j for j in (jobs.latest_for_run(db, run_id, "export"), jobs.latest_for_run(db, run_id, "bench"))
              if j and j["status"] in jobs.ACTIVE]
    if not active:
        if store_runs.get(db, run_id) is None:
            raise ConfigError(f"no run {run_id}; see `pocketops runs list`")
        raise ConfigError(f"run {run_id} has no export or re-benchmark queued or running; nothing to cancel")
    job = max(active, key=lambda j: j["id"])
    status = jobs.request_cancel(db, job["id"])
    return {"run_id": run_id, "job_id": job["id"], "kind": job["kind"],
            "status": "cancelled" if status == "cancelled" else "cancelling"}


def _by_data(variants: list[dict]) -> list[list[dict]]:
    """Variants grouped by the dataset and split they are judged on (those without one dropped)."""
    groups: dict[tuple, list[dict]] = {}
    for v in variants:
        meta = v.get("meta") or {}
        if meta.get("dataset"):
            groups.setdefault((meta["dataset"], tuple(sorted((meta.get("split") or {}).items()))), []).append(v)
    return list(groups.values())


