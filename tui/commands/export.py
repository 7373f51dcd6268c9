"""`pocketops export RUN_ID [--variants ...] [--threads N] [--wait] [--json]`: build and compare variants.

With ``--json`` the last line is the summary scripts rely on: ``{"run_id", "variants": [...],
"baseline": {"torch_latency_p50_ms"}, "recommended": {"variant_id", "name", "reason"}}``.
"""
from __future__ import annotations

import sys

from core.recommend import RUNTIME_CHOICES
from tui.commands._common import CliError, add_parser, fmt_bytes, open_db, wait_for_job


def register(sub) -> None:
    p = add_parser(sub, "export", "export a run's best checkpoint to ONNX, build variants and benchmark them on this device")
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("--variants", default=None, help="comma-separated: fp32,fp16,int8-dynamic,int8-static "
                   "(default: all four; int8-dynamic-conv measures ConvInteger; "
                   "ort-format is fp32 as ONNX Runtime's mobile .ort file)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime and torch threads while benchmarking (default 1)")
    p.add_argument("--calibration-samples", type=int, default=256, help="training samples int8-static calibrates on")
    p.add_argument("--prefer", choices=("latency", "size"), default=None,
                   help="what the recommendation optimises; stored as this run's own (default: the stored preference)")
    p.add_argument("--budget", type=float, default=None, metavar="POINTS",
                   help="allowed accuracy drop vs fp32, in points; stored as this run's own (default: the stored budget)")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default=None,
                   help="recommend only variants of this runtime (the one your app ships with; any: every runtime); "
                        "stored as this run's own (default: the stored one)")
    p.add_argument("--wait", action="store_true", help="run now (or wait for a worker) and stream progress")
    p.add_argument("--on", default=None, metavar="CLUSTER", help="export and quantize on this Ray cluster (it has onnx); "
                   "the variants come back and are benchmarked here")
    p.add_argument("--cancel", action="store_true",
                   help="cancel the run's queued or running export (or re-benchmark) instead of starting one")
    p.set_defaults(func=run)


def request_from_args(args):
    """The export job payload from the command line, validated (a one-line ConfigError names the bad field)."""
    from core import jobkinds

    payload = {"run_id": args.run_id, "threads": args.threads, "calibration_samples": args.calibration_samples}
    if args.prefer is not None:
        payload["prefer"] = args.prefer
    if args.budget is not None:
        payload["budget_points"] = args.budget
    if args.runtime is not None:
        payload["runtime"] = args.runtime
    if args.variants:
        payload["variants"] = [v.strip() for v in args.variants.split(",") if v.strip()]
    return jobkinds.validate("export", payload)


def run(args) -> int:
    from core.export_job import _require_tools, queue_export

    out = sys.stdout  # the exporter silences sys.stdout while it runs in our thread; keep ours
    if args.cancel:
        return cancel(args, out)
    req = request_from_args(args)
    # Fail at once, before the store is read or a job exists (MissingDependency → one line): on a
    # phone without onnx no run could be exported here, so that is the thing to say.
    on = getattr(args, "on", None)
    if on is None:
        _require_tools(req.variants)
    db, db_path = open_db(args)
    from store import runs

    if runs.get(db, req.run_id) is None:
        raise CliError(f"no run {req.run_id}; see `pocketops runs list`")
    options = {k: v for k, v in vars(req).items() if k not in ("run_id", "on")}
    if on is not None:
        from core import clusters

        clusters.get(db, on)  # an unknown cluster: one line, nothing queued
        options["on"] = on
    job_id = queue_export(db, req.run_id, **options)
    if not args.wait:
        _emit(args, out, {"run_id": req.run_id, "job_id": job_id, "status": "queued"},
              f"export of run {req.run_id} queued (job {job_id}); a worker will pick it up")
        return 0
    return stream(args, out, db_path, req.run_id, job_id)


def cancel(args, out) -> int:
    """`export RUN_ID --cancel`: {"run_id", "job_id", "kind", "status": "cancelled" | "cancelling"}."""
    from core.export_job import cancel as cancel_job

    db, _ = open_db(args)
    done = cancel_job(db, args.run_id)
    _emit(args, out, done, f"run {args.run_id}: {done['kind']} job {done['job_id']} " + (
        "cancelled" if done["status"] == "cancelled" else "cancel requested; the worker stops after the current variant"))
    return 0


def _emit(args, out, data: dict, text: str | None = None) -> None:
    import json

    if args.json:
        print(json.dumps(data, default=str), file=out, flush=True)
    elif text is not None:
        print(text, file=out, flush=True)


def describe(v: dict) -> str:
    """One line per variant for humans: its runtime, its size (and zipped, when measured), then its figures."""
    from core.recommend import runtime_label, runtime_name

    def num(key, fmt):
        return "–" if v.get(key) is None else format(v[key], fmt)

    zipped = f" (zip {fmt_bytes(v['zip_bytes'])})" if v.get("zip_bytes") else ""
    # A loop's throughput is batch-1 latency times the batch (core.runtimes): say so beside the figure.
    loop = " (loop)" if v.get("batch_method") == "loop" else ""
    return (f"{v['name']:<18} {runtime_label(runtime_name(v)):<12} {fmt_bytes(v.get('size_bytes')):>9}{zipped}  "
            f"load {num('load_ms', '.1f')} ms  "
            f"p50 {num('latency_p50_ms', '.3f')} ms  p95 {num('latency_p95_ms', '.3f')} ms  "
            f"acc {num('accuracy', '.3f')}  agree {num('agreement', '.3f')}  max|Δ| {num('max_abs_logit_diff', '.2g')}  "
            f"{num('throughput_per_s', '.0f')}/s at batch 8{loop}  mem {num('peak_memory_mb', '.1f')} MB")


def stream(args, out, db_path, run_id: int, job_id: int) -> int:
    """Wait for the export job, printing progress and each variant as it is measured; last line the summary."""
    from core.export_job import bench_rows
    from store import jobs
    from store import variants as store_variants

    seen: dict[int, str] = {}
    last = {"progress": None}
    show_bar = not args.json and out.isatty()
    progress = task = None
    if show_bar:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn(f"[bold]export run {run_id}[/]"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.description}"), TimeElapsedColumn(), console=Console(file=out))
        progress.start()
        task = progress.add_task("starting", total=None)

    def tick(db) -> None:
        job = jobs.get(db, job_id)
        p = job["progress"] if job else {}
        if p and p != last["progress"]:
            last["progress"] = dict(p)
            _emit(args, out, {"event": "progress", "job_id": job_id, **p},
                  None if show_bar else f"{p.get('stage', '')} {p.get('variant', '')} ({p.get('done', 0)}/{p.get('total', '?')})")
            if show_bar:
                progress.update(task, total=p.get("total"), completed=p.get("done", 0),
                                description=f"{p.get('stage', '')} {p.get('variant', '')}".strip())
        for row in bench_rows(store_variants.for_job(db, job_id)):
            # One event per variant when its first figures land; the summary has the final ones.
            if row["status"] in ("benchmarked", "failed") and seen.get(row["variant_id"]) != row["status"]:
                seen[row["variant_id"]] = row["status"]
                _emit(args, out, {"event": "variant", **{k: row.get(k) for k in (
                    "variant_id", "name", "status", "runtime", "size_bytes", "zip_bytes", "load_ms", "latency_p50_ms", "latency_p95_ms",
                    "accuracy", "agreement", "max_abs_logit_diff", "error")}},
                    None if show_bar or row["status"] != "failed" else f"{row['name']}: failed: {row['error']}")

    try:
        job = wait_for_job(db_path, job_id, tick=tick)
    finally:
        if progress is not None:
            progress.stop()
    if job["status"] != "done":
        raise CliError(f"export of run {run_id} {job['status']}: {job.get('error') or 'no reason recorded'}")
    result = job["result"]
    if args.json:
        _emit(args, out, result)
        return 0
    for v in result["variants"]:
        print(describe(v), file=out)
    base = (result.get("baseline") or {}).get("torch_latency_p50_ms")
    if base is not None:
        print(f"{'torch eager':<18} {'PyTorch':<12} {'':>9}  p50 {base:.3f} ms (same threads, measured in turns with the variants)", file=out)
    rec = result["recommended"]
    print(f"recommended: {rec['name']} (variant {rec['variant_id']}) — {rec['reason']}" if rec["name"]
          else f"no recommendation: {rec['reason']}", file=out, flush=True)
    return 0
