"""`pocketops bench MODEL.onnx [MODEL2.onnx ...] --dataset NAME [--threads N] [--json]`.

Needs only onnxruntime and numpy (no torch, no onnx): a phone can compare variants built on a
laptop. ``core.bench.measure`` does the work (each file in a fresh process, then all re-timed in
turns, against the one fp32 reference rule); with several files the recommendation says which
to ship, judged with the stored global preference unless ``--prefer``/``--budget``/``--runtime``
are given. Each model's line names its runtime and its zip-compressed size.
"""
from __future__ import annotations

from pathlib import Path

from core.recommend import RUNTIME_CHOICES
from tui.commands._common import CliError, add_parser, emit, open_db, path_arg


def register(sub) -> None:
    p = add_parser(sub, "bench", "benchmark ONNX files on this device with only onnxruntime")
    p.add_argument("models", nargs="+", type=path_arg, metavar="MODEL.onnx")
    p.add_argument("--dataset", required=True, help="registered dataset whose test split to measure accuracy on")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--reference", type=path_arg, default=None, metavar="FP32.onnx",
                   help="model to measure agreement, max |Δlogit| and the accuracy drop against "
                        "(default: one named fp32, else the first containing fp32, else the most accurate)")
    p.add_argument("--prefer", choices=("latency", "size"), default=None,
                   help="what the recommendation optimises (default: the stored preference)")
    p.add_argument("--budget", type=float, default=None, metavar="POINTS",
                   help="allowed accuracy drop vs the reference, in points (default: the stored budget)")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default=None,
                   help="recommend only files of this runtime (the one your app ships with; default: the stored one)")
    p.add_argument("--seed", type=int, default=0, help="split seed the model was trained with (default 0)")
    p.set_defaults(func=run)


def _names(paths: list[Path]) -> dict[Path, str]:
    """A short distinct name per file: its stem, or parent/stem where stems repeat (two fp32.onnx)."""
    stems = [p.stem for p in paths]
    return {p: (p.stem if stems.count(p.stem) == 1 else f"{p.parent.name}/{p.stem}") for p in paths}


def run(args) -> int:
    from core import bench, recommend
    from core.export_job import eval_data
    from core.optional import require

    if args.threads < 1:
        raise CliError(f"--threads must be 1 or more, not {args.threads}")
    require("onnxruntime", "pocketops bench")
    for path in [*args.models, *([args.reference] if args.reference else [])]:
        if not path.is_file():
            raise CliError(f"{path}: no such file")
    db, _ = open_db(args)
    # A PocketopsError from here on (unknown dataset, bad model) is printed by tui/cli.py as one line, exit 1.
    data = eval_data(db, args.dataset, {"seed": args.seed})
    names = _names(list(dict.fromkeys([*args.models, *([args.reference] if args.reference else [])])))
    models = [bench.Contender(p, names[p], p) for p in dict.fromkeys(args.models)]
    reference = bench.Contender(args.reference, names[args.reference], args.reference) if args.reference else None
    prefs = recommend.override(db, [], args.prefer, args.budget, args.runtime) or recommend.load_prefs(db)
    found = bench.measure(models, data, reference, args.threads)
    from core.quantize import zip_size

    results = [{"name": m.name, "path": str(m.path), "zip_bytes": zip_size(m.path), **found.figures[m.key]}
               for m in models]
    for r in results:  # the harness says which runtime ran each file; a file's suffix says it otherwise
        r["runtime"] = recommend.runtime_name(r)
    rec = recommend.recommend(results, prefer=prefs.prefer, budget_points=prefs.budget_points, runtime=prefs.runtime,
                              reference_name=found.reference.name) if len(results) > 1 else None
    summary = {"dataset": args.dataset, "threads": args.threads, "reference": str(found.reference.path),
               "models": results, "recommended": rec.as_dict() if rec else None,
               "prefer": prefs.prefer, "budget_points": prefs.budget_points, "runtime": prefs.runtime}
    if args.json:
        emit(args, summary)
        return 0
    from tui.commands.export import describe

    for r in results:
        print(describe(r))
    print(f"measured with {args.threads} thread(s) on {len(data.X_test)} test samples of {args.dataset}")
    if rec:
        print(f"recommended: {rec.name} — {rec.reason}" if rec.name else f"no recommendation: {rec.reason}")
    return 0
