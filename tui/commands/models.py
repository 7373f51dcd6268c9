"""`pocketops models add MODEL [--dataset NAME] [--name N]`, `models bench ID ...` and `models list`.

``add`` registers a model exported elsewhere (a laptop with ``onnx``, ExecuTorch or LiteRT): an
``.onnx``/``.ort`` file is checked with onnxruntime, a ``.pte`` with ExecuTorch and a ``.tflite``
with LiteRT where they are installed, then copied beside the database and recorded as a variant
(sha256, size, zip size, runtime), so this device can benchmark and deploy it. Where the app
runtime is not installed the file is still registered (its identifier checked), with one line
saying what benchmarking it needs.
"""
from __future__ import annotations

import re

from tui.commands._common import CliError, add_parser, console, emit, fmt_bytes, open_db, path_arg

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def register(sub) -> None:
    p = add_parser(sub, "models", "register models made elsewhere and list every variant")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = add_parser(actions, "add", "register an .onnx, .ort, .pte or .tflite file (copied beside the database)")
    a.add_argument("model", type=path_arg, metavar="MODEL")  # the suffix says the runtime (core.runtimes)
    a.add_argument("--dataset", default=None, help="dataset it was trained on (needed to benchmark it)")
    a.add_argument("--name", default=None, help="variant name, e.g. int8-static (default: custom)")
    a.set_defaults(func=add_cmd)
    b = add_parser(actions, "bench", "benchmark registered variants on this device and store the figures")
    b.add_argument("ids", nargs="+", type=int, metavar="VARIANT_ID")
    b.add_argument("--threads", type=int, default=1, help="intra-op threads of the runtime (default 1)")
    b.set_defaults(func=bench_cmd)
    ls = add_parser(actions, "list", "list model variants, newest first")
    ls.add_argument("--run", type=int, default=None, metavar="RUN_ID", help="only this run's variants")
    ls.set_defaults(func=list_cmd)


def add_cmd(args) -> int:
    from core import bench, paths, runtimes
    from core.atomic import sha256_file, write_bytes
    from core.export_job import eval_data
    from core.optional import require
    from core.quantize import zip_size
    from store import artifacts, variants
    from store.db import transaction

    src = args.model
    if not src.is_file():
        raise CliError(f"{src}: no such file")
    rt = runtimes.check_file(src)  # a suffix no runtime loads, or content that is not what it says: one line
    if rt.name == "onnxruntime":
        require("onnxruntime", "pocketops models add")
    name = args.name or "custom"
    if not _NAME_RE.match(name):
        raise CliError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (up to 64), starting with a letter or digit")
    db, db_path = open_db(args)
    data = eval_data(db, args.dataset) if args.dataset else None
    meta = {"source": str(src.resolve()), "runtime": rt.name}
    absent = runtimes.missing(rt) if rt.name != "onnxruntime" else None
    if absent is None:
        session = bench.open_session(src)  # a file its runtime cannot load: one line, nothing registered
        inp = session.get_inputs()[0]
        meta.update(input={"name": inp.name, "shape": list(inp.shape[1:]), "type": inp.type},
                    outputs=[o.name for o in session.get_outputs()], batch_method=getattr(session, "batch_method", "native"))
        if data is not None:
            # It must run on this data, not just load: input shape and type, batch axis, one logit per class.
            bench.check_model(session, src, data.X_test, len(data.classes))
    if data is not None:
        meta.update(dataset=data.dataset, dataset_fingerprint=data.fingerprint, split=data.split, classes=data.classes)
    meta["zip_bytes"] = zip_size(src)
    sha = sha256_file(src)
    dest = paths.artifact_dir(db_path, "models") / f"{sha[:12]}-{src.name}"
    if not dest.exists():
        write_bytes(dest, src.read_bytes())
    size = dest.stat().st_size
    with transaction(db):
        kind = "onnx" if rt.name == "onnxruntime" else src.suffix.lower().lstrip(".")  # as the export job names them
        artifacts.register(db, kind=kind, path=str(dest), sha256=sha, size_bytes=size, meta={"variant": name, "source": str(src)})
        variant_id = variants.insert(db, name=name, path=str(dest), sha256=sha, size_bytes=size, meta=meta)
    out = {"variant_id": variant_id, "name": name, "path": str(dest), "sha256": sha, "size_bytes": size,
           "zip_bytes": meta["zip_bytes"], "runtime": rt.name, "dataset": meta.get("dataset"), "checked": absent is None}
    if absent is not None:
        # Registered all the same (it deploys or benchmarks where the runtime is): say what this device lacks.
        out["note"] = (f"benchmarking or serving it needs {rt.label} ({rt.package}), not installed here: "
                       f"pip install '{rt.package}' (Termux: {rt.termux}), or run `pocketops models bench` where it is")
        hint = f"; {out['note']}"
    else:
        hint = "" if args.dataset else " (add --dataset NAME to benchmark it)"
    emit(args, out, f"registered {name} as variant {variant_id}: {dest} ({fmt_bytes(size)}, {rt.label}){hint}")
    return 0


def bench_cmd(args) -> int:
    """Queue a bench job for registered variants and wait for it (run here when no worker is alive).

    With ``--json`` the last line is ``{"run_id": null, "variants": [...], "baseline", "recommended"}``,
    the same shape as ``export --json``.
    """
    from core.export_job import summary
    from core.optional import require
    from store import variants
    from tui.commands._common import run_job

    if args.threads < 1:
        raise CliError(f"--threads must be 1 or more, not {args.threads}")
    require("onnxruntime", "pocketops models bench")
    db, db_path = open_db(args)
    found = [variants.get(db, i) for i in args.ids]
    missing = [str(i) for i, v in zip(args.ids, found) if v is None]
    if missing:
        raise CliError(f"no variant {', '.join(missing)}; see `pocketops models list`")
    from core import runtimes

    for v in found:  # a .pte/.tflite variant whose runtime is not here: one line before any job
        if runtimes.runtime_of(v["path"]).name != "onnxruntime":
            runtimes.require(v["path"], f"benchmarking variant {v['id']} ({v['name']})")
    unbound = [str(v["id"]) for v in found if not v["meta"].get("dataset")]
    if unbound:
        raise CliError(f"variant {', '.join(unbound)} has no dataset to be measured on; "
                       "register it again with `pocketops models add MODEL --dataset NAME`")
    job = run_job(db_path, "bench", {"variant_ids": list(dict.fromkeys(args.ids)), "threads": args.threads})
    if job["status"] != "done":
        raise CliError(f"bench job {job['id']} {job['status']}: {job.get('error') or 'no reason recorded'}")
    fresh = [variants.get(db, i) for i in dict.fromkeys(args.ids)]
    result = summary(db, None, fresh)  # judged with the stored preferences of their run (or the global ones)
    if args.json:
        emit(args, result)
        return 0
    from tui.commands.export import describe

    for v in result["variants"]:
        line = describe(v)
        print(line if v.get("status") != "failed" else f"{v['name']:<18} failed: {(v.get('error') or '')}")
    rec = result["recommended"]
    if rec["name"] and len(fresh) > 1:
        print(f"recommended: {rec['name']} (variant {rec['variant_id']}) — {rec['reason']}")
    elif len(fresh) > 1:
        print(f"no recommendation: {rec['reason']}")
    return 0


def list_cmd(args) -> int:
    """List variants; ``recommended`` marks each run's pick (``core.recommend.pick``, its stored preferences)."""
    from core.recommend import SHORT_LABELS, pick, runtime_name
    from store import variants

    db, _ = open_db(args)
    listed = variants.list_all(db, run_id=args.run)
    picks = {pick(db, variants.latest_for_run(db, r), r).variant_id for r in {v["run_id"] for v in listed} if r is not None}
    found = []
    for v in listed:
        b = v["bench"]
        found.append({"variant_id": v["id"], "run_id": v["run_id"], "name": v["name"], "status": v["status"],
                      "recommended": v["id"] in picks,
                      "runtime": runtime_name({**v, "runtime": v["meta"].get("runtime")}),
                      "size_bytes": v["size_bytes"], "zip_bytes": v["meta"].get("zip_bytes"), "latency_p50_ms": b.get("latency_p50_ms"),
                      "accuracy": b.get("accuracy"), "dataset": v["meta"].get("dataset"), "path": v["path"],
                      "sha256": v["sha256"], "error": b.get("error")})
    if args.json:
        emit(args, {"models": found})
        return 0
    from rich.table import Table

    # Short runtime labels (ORT, ET, LiteRT): the names keep the room; --json has the zip size too.
    table = Table("id", "run", "name", "rt", "status", "size", "p50 ms", "acc", "dataset", box=None)
    for r in found:
        table.add_row(str(r["variant_id"]), "–" if r["run_id"] is None else str(r["run_id"]),
                      ("★ " if r["recommended"] else "") + r["name"], SHORT_LABELS.get(r["runtime"], r["runtime"]),
                      r["status"], fmt_bytes(r["size_bytes"]), "–" if r["latency_p50_ms"] is None else f"{r['latency_p50_ms']:.3f}",
                      "–" if r["accuracy"] is None else f"{r['accuracy']:.3f}", r["dataset"] or "–")
    console().print(table)
    return 0
