"""`pocketops bench MODEL.onnx [MODEL2.onnx ...] --dataset NAME [--threads N] [--json]`.

Needs only onnxruntime and numpy (no torch, no onnx): a phone can compare variants built on a
laptop. Each file is measured in a fresh process, then all are re-timed in turns; with several
files the recommendation says which to ship.
"""
from __future__ import annotations

from pathlib import Path

from tui.commands._common import CliError, add_parser, emit, open_db, path_arg


def register(sub) -> None:
    p = add_parser(sub, "bench", "benchmark ONNX files on this device with only onnxruntime")
    p.add_argument("models", nargs="+", type=path_arg, metavar="MODEL.onnx")
    p.add_argument("--dataset", required=True, help="registered dataset whose test split to measure accuracy on")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--reference", type=path_arg, default=None, metavar="FP32.onnx",
                   help="model to measure agreement and max |Δlogit| against (default: a file named *fp32*, else the first)")
    p.add_argument("--prefer", choices=("latency", "size"), default="latency")
    p.add_argument("--budget", type=float, default=1.0, metavar="POINTS", help="allowed accuracy drop vs the reference")
    p.add_argument("--seed", type=int, default=0, help="split seed the model was trained with (default 0)")
    p.set_defaults(func=run)


def _names(paths: list[Path]) -> dict[Path, str]:
    """A short distinct name per file: its stem, or parent/stem where stems repeat (two fp32.onnx)."""
    stems = [p.stem for p in paths]
    return {p: (p.stem if stems.count(p.stem) == 1 else f"{p.parent.name}/{p.stem}") for p in paths}


def run(args) -> int:
    from core import bench, recommend
    from core.errors import ConfigError, PocketopsError
    from core.export_job import eval_data
    from core.optional import require

    if args.threads < 1:
        raise CliError(f"--threads must be 1 or more, not {args.threads}")
    require("onnxruntime", "pocketops bench")
    for path in [*args.models, *([args.reference] if args.reference else [])]:
        if not path.is_file():
            raise CliError(f"{path}: no such file")
    db, _ = open_db(args)
    try:
        data = eval_data(db, args.dataset, {"seed": args.seed})
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    reference_path = args.reference or next((p for p in args.models if "fp32" in p.name), args.models[0])
    names = _names(list(dict.fromkeys([*args.models, reference_path])))
    config = bench.BenchConfig(threads=args.threads)
    try:
        session = bench.open_session(reference_path, args.threads)
        reference = bench.logits(session, bench.check_model(session, reference_path, data.X_test, len(data.classes)),
                                 data.X_test, path=reference_path)
        results = []
        for path in args.models:
            if path != reference_path:  # a wrong file is one clear line before any timing starts
                bench.check_model(bench.open_session(path, args.threads), path, data.X_test, len(data.classes))
            figures = bench.benchmark_isolated(path, data.X_test, data.y_test, reference=reference, config=config)
            results.append({"name": names[path], "path": str(path), **figures})
        if len(results) > 1:  # same conditions for all: re-time in turns
            timed = bench.compare_latency({i: r["path"] for i, r in enumerate(results)}, data.X_test, config)
            for i, r in enumerate(results):
                r["isolated_latency_p50_ms"] = r["latency_p50_ms"]
                r.update(timed[i])
    except PocketopsError as exc:
        raise CliError(str(exc)) from exc
    rec = recommend.recommend(results, prefer=args.prefer, budget_points=args.budget,
                              reference_name=names[reference_path]) if len(results) > 1 else None
    summary = {"dataset": args.dataset, "threads": args.threads, "reference": str(reference_path),
               "models": results, "recommended": rec.as_dict() if rec else None}
    if args.json:
        emit(args, summary)
        return 0
    from tui.commands.export import describe

    for r in results:
        print(describe(r))
    print(f"measured with {args.threads} thread(s) on {len(data.X_test)} test samples of {args.dataset}")
    if rec:
        print(f"recommended: {rec.name} — {rec.reason}")
    return 0
