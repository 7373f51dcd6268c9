"""Worker handlers: ``export`` (checkpoint → ONNX → variants → benchmarks → recommendation)
and ``bench`` (re-benchmark registered variants on this device).

Nothing is registered until every requested variant file is built; a failure before that
removes the job's directory, so a failed export leaves no rows and no files. Benchmarks then
land one variant at a time, so the Quantize panel fills in as results arrive. Torch is imported
only inside the export handler: this module is also imported by the CLI.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import bench, jobkinds, recommend, runtimes
from core.atomic import sha256_file
from core.errors import ConfigError, PocketopsError
from core.quantize import QuantizeConfig
from core.recommend import EXTRA_FIELDS, SUMMARY_FIELDS, baseline_of, bench_rows  # noqa: F401  (importers use them here)
from store import artifacts as store_artifacts
from store import datasets as store_datasets
from store import runs as store_runs
from store import variants as store_variants
from store.db import transaction


# The ``export`` job's payload, validated field by field (core.jobkinds); the old name stays for callers.
ExportRequest = jobkinds.ExportPayload


# -- data ----------------------------------------------------------------------------------

@dataclass
class EvalData:
    """The splits a variant is built from and judged on."""

    X_train: np.ndarray
    X_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    y_train: np.ndarray
    y_val: np.ndarray
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
    return EvalData(arrays.X[tr], arrays.X[va], arrays.X[te], arrays.y[te], arrays.y[tr], arrays.y[va],
                    list(arrays.classes), row["name"], row["fingerprint"], split)


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

def summary(db, run_id: int | None, variants: list[dict], *, prefs: recommend.Prefs | None = None) -> dict:
    """The export result scripts rely on (the last line of ``pocketops export --json``).

    The recommendation is :func:`core.recommend.pick` with the run's stored preferences (the
    global default for variants of no run or of several), or ``prefs`` for this result only.
    """
    rows = bench_rows(variants)
    base = baseline_of(variants)
    prefs = prefs or recommend.load_prefs(db, run_id if run_id is not None else recommend.run_of(variants))
    rec = recommend.pick(db, variants, run_id, prefs=prefs)
    return {
        "run_id": run_id,
        "variants": [{k: r.get(k) for k in SUMMARY_FIELDS + EXTRA_FIELDS} for r in rows],
        "baseline": {"torch_latency_p50_ms": base.get("torch_latency_p50_ms"), **base},
        "recommended": rec.as_dict(),
        "prefer": prefs.prefer, "budget_points": prefs.budget_points, "runtime": prefs.runtime,
    }


def _artifact_kind(path: Path) -> str:
    """The artifact kind of a variant file: ``onnx`` for onnxruntime's files (.onnx, .ort), else its suffix."""
    return "onnx" if runtimes.runtime_of(path).name == "onnxruntime" else path.suffix.lstrip(".")


# -- handlers ------------------------------------------------------------------------------

def _require_tools(names: list[str], family: str | None = None) -> None:
    from core.export import require_export_tools
    from core.quantize import TORCH_VARIANTS, require_quantize_tools, torch_refusal

    from core.optional import require

    refused = torch_refusal(names, family)  # the app runtimes' exporters: one line naming the package
    if refused:
        raise ConfigError(refused)
    require_export_tools("ONNX export")
    names = [n for n in names if n not in TORCH_VARIANTS or TORCH_VARIANTS[n].runtime == "onnxruntime"]
    if any(n != "fp32" for n in names):
        require_quantize_tools("Quantization")
    if "fp16" in names:
        from core.quantize import require_fp16_tools

        require_fp16_tools()
    if "ort-format" in names:
        from core.quantize import require_ort_format_tools

        require_ort_format_tools()

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
    source = quantize.TorchSource(model, ckpt, data, shape, dtype, torch.from_numpy(data.X_test[:1]))
    for i, name in enumerate(req.variants):
        ctx.check()
        ctx.progress(stage="quantize", done=i, total=total, variant=name)
        target = out_dir / f"{name}{quantize.suffix(name)}"
        if name in quantize.TORCH_VARIANTS:
            b = quantize.build_torch_variant(name, source, target, qcfg)
        else:
            b = quantize.build(name, fp32, target, X_train=data.X_train, X_check=data.X_val, config=qcfg)
        built.append((b, quantize.ops_of(b)))
    ctx.check()  # a cancel that came while the last variant was building: register nothing
    common = {"job_id": ctx.job_id, "run_id": req.run_id, "source": "export", "dataset": data.dataset,
              "dataset_fingerprint": data.fingerprint, "split": data.split, "classes": data.classes,
              "input": {"shape": shape, "dtype": dtype}, "checkpoint": str(ckpt_path), "model": run["model"]}
    ids = []
    with transaction(ctx.db):
        for b, ops in built:
            path, sha, size = str(b.path), sha256_file(b.path), b.path.stat().st_size
            meta = {**common, "build": b.meta, "op_types": ops, "zip_bytes": quantize.zip_size(b.path),
                    "runtime": runtimes.runtime_of(b.path).name}
            if b.name == "fp32":
                meta.update(verify=check.as_dict())
            store_artifacts.register(ctx.db, kind=_artifact_kind(b.path), path=path, sha256=sha, size_bytes=size, run_id=req.run_id,
                                     meta={"variant": b.name, "job_id": ctx.job_id})
            ids.append(store_variants.insert(ctx.db, name=b.name, path=path, sha256=sha, size_bytes=size,
                                             run_id=req.run_id, meta=meta))
    ctx.log("info", f"run {req.run_id}: exported {', '.join(b.name for b, _ in built)} "
                    f"(fp32 matches torch: agreement {check.agreement:.1%}, max |Δlogit| {check.max_abs_logit_diff:.1e})")
    return ids


def measure_variants(ctx, variants: list[dict], threads: int, *, only_unmeasured: bool = False,
                     data: EvalData | None = None, model=None) -> None:
    """Benchmark stored variants with :func:`core.bench.measure`, one dataset at a time, storing
    each variant's figures as soon as they exist and the final (in turns) ones at the end.

    ``model`` (the torch model) joins the turns as the torch eager baseline, stored on the
    reference variant's meta. The reference is the rule's pick among each group
    (:func:`core.recommend.reference_of`); a run's variants measured without any fp32 among
    them are compared with the run's newest fp32 variant.
    """
    from core.export import torch_contender

    for v in variants:
        if not (v.get("meta") or {}).get("dataset"):
            store_variants.set_failed(ctx.db, v["id"], "no dataset recorded for this model; "
                                      "register it with `pocketops models add MODEL.onnx --dataset NAME`")

    def progress(stage: str, done: int, total: int, name: str | None) -> None:
        ctx.check()
        ctx.progress(stage=stage, done=done, total=total, **({"variant": name} if name else {}))

    def stored(model_: bench.Contender, figures: dict) -> None:
        store_variants.set_bench(ctx.db, model_.key, figures)

    def failed(model_: bench.Contender, exc: PocketopsError) -> None:
        store_variants.set_failed(ctx.db, model_.key, str(exc))
        ctx.log("warning", f"variant {model_.key} ({model_.name}): {exc}")

    for members in _by_data(variants):
        dataset, split = members[0]["meta"]["dataset"], members[0]["meta"].get("split") or {}
        if data is None or data.dataset != dataset or data.split != {**data.split, **split}:
            data = eval_data(ctx.db, dataset, split)
        contenders = [bench.Contender(v["id"], v["name"], Path(v["path"])) for v in members]
        reference = None
        run_id = recommend.run_of(members)
        if run_id is not None and not any(recommend.REFERENCE_NAME in v["name"] for v in members):
            own = next((v for v in store_variants.latest_for_run(ctx.db, run_id) if v["name"] == recommend.REFERENCE_NAME),
                       None)
            if own is not None and Path(own["path"]).exists():
                reference = bench.Contender(own["id"], own["name"], Path(own["path"]))
        done = {v["id"]: v["bench"] for v in members if only_unmeasured and v["status"] == "benchmarked"}
        with torch_contender(model, data.X_test, threads) as extra:
            found = bench.measure(contenders, data, reference, threads, measured=done, extra=extra,
                                  on_figures=stored, on_error=failed, progress=progress)
        with transaction(ctx.db):
            for key, figures in found.figures.items():
                store_variants.set_bench(ctx.db, key, figures)
            if "torch" in found.extra and found.figures:
                ref = found.reference.key if found.reference and found.reference.key in found.figures else next(iter(found.figures))
                t = found.extra["torch"]
                store_variants.update_meta(ctx.db, ref, baseline={
                    "torch_latency_p50_ms": t["latency_p50_ms"], "torch_latency_p95_ms": t["latency_p95_ms"],
                    "threads": threads, "repeats": t["repeats"], "latency_method": "interleaved"})


def run(ctx) -> dict:
    """Job kind ``export``: payload {"run_id", "variants", "threads", "calibration_samples", "prefer", "budget_points",
    "runtime"}."""
    req = jobkinds.payload_of(ctx.job)
    run_row = store_runs.get(ctx.db, req.run_id)
    # before anything is written: fail at once with the way forward
    _require_tools(req.variants, run_row["model"] if run_row else None)
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
    measure_variants(ctx, mine, req.threads, only_unmeasured=True, data=data, model=model)
    result = summary(ctx.db, req.run_id, store_variants.for_job(ctx.db, ctx.job_id))
    rec = result["recommended"]
    ctx.log("info", f"run {req.run_id}: recommended {rec['name']} — {rec['reason']}")
    return result


def run_bench(ctx) -> dict:
    """Job kind ``bench``: payload {"run_id"} (its newest variants) or {"variant_ids": [...]}, plus "threads"
    and, for this result only, "prefer" / "budget_points" / "runtime" (otherwise the stored ones)."""
    payload = jobkinds.payload_of(ctx.job)  # threads ≥ 1, exactly one of run_id / variant_ids
    threads = payload.threads
    from core.optional import require

    require("onnxruntime", "benchmarking a model")
    if payload.variant_ids:
        variants = [store_variants.get(ctx.db, int(i)) for i in payload.variant_ids]
        missing = [i for i, v in zip(payload.variant_ids, variants) if v is None]
        if missing:
            raise ConfigError(f"no variant(s) {', '.join(map(str, missing))}; see `pocketops models list`")
    else:
        variants = store_variants.latest_for_run(ctx.db, payload.run_id)
        if not variants:
            raise ConfigError(f"run {payload.run_id} has no variants yet; export it first (pocketops export {payload.run_id})")
    measure_variants(ctx, variants, threads)
    fresh = [store_variants.get(ctx.db, v["id"]) for v in variants]
    return summary(ctx.db, payload.run_id, fresh,
                   prefs=recommend.override(ctx.db, fresh, payload.prefer, payload.budget_points, payload.runtime))


def _refuse_family(names: list[str], family: str | None) -> None:
    """A variant that does not apply to this run's model family (pruned-int8 of an mlp): one line, before
    a job exists. Only the family is judged here: a missing exporter may be there on ``--on CLUSTER``."""
    from core.quantize import TORCH_VARIANTS, torch_refusal

    for name in names:
        tv = TORCH_VARIANTS.get(name)
        if tv is not None and tv.families is not None and family not in tv.families:
            raise ConfigError(torch_refusal([name], family))


def queue_export(db, run_id: int, **options) -> int:
    """Queue an export of a finished run (an intent: the dashboard and the CLI call this); the job id.

    ``options`` are the payload's other fields (variants, threads, calibration_samples, prefer,
    budget_points, runtime); a ``prefer``/``budget_points``/``runtime`` given is stored as the run's own preference
    (what the result, the panel and the Deploy form then judge with). Refused while an export of
    the same run is queued or running.
    """
    from store import jobs

    req = jobkinds.validate("export", {"run_id": run_id, **options})
    run_row = store_runs.get(db, run_id)
    if run_row is None:
        raise ConfigError(f"no run {run_id}; see `pocketops runs list`")
    if run_row["status"] in ("queued", "running"):
        raise ConfigError(f"run {run_id} is still {run_row['status']}; export it when training has finished")
    _refuse_family(req.variants, run_row["model"])
    checkpoint_for(run_row)
    active = jobs.latest_for_run(db, run_id, "export")
    if active and active["status"] in jobs.ACTIVE:
        raise ConfigError(f"run {run_id} is already being exported (job {active['id']}, {active['status']})")
    with transaction(db):
        if req.prefer is not None or req.budget_points is not None or req.runtime is not None:
            # Asked for now: this run's own from here on.
            recommend.save_prefs(db, prefer=req.prefer, budget_points=req.budget_points, runtime=req.runtime,
                                 run_id=run_id)
        return jobkinds.queue(db, "export", req)


def queue_bench(db, run_id: int, *, threads: int = 1) -> int:
    """Queue a re-benchmark of a run's newest variants on this device; the job id."""
    if not store_variants.latest_for_run(db, run_id):
        raise ConfigError(f"run {run_id} has no variants yet; export it first")
    return jobkinds.queue(db, "bench", run_id=run_id, threads=threads)


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


