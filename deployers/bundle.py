"""Build the one platform-agnostic bundle of a variant: the model, model.json, runtime, reference sample.

The bundle directory is everything a target needs to serve the model with numpy + the model's
runtime only (onnxruntime for ``model.onnx``/``model.ort``, ExecuTorch for ``model.pte``, LiteRT
for ``model.tflite``: ``core/runtimes.py`` and the adapter it needs are copied in); every target adapts it (a local process, a static page, a Docker Space, a Cloud Run
function). Bundles are content-addressed (variant + model sha) and written atomically:
a bundle directory either is complete or does not exist.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

from core import paths, runtimes
from core.atomic import no_space_as_error, sha256_file, write_bytes, write_text
from core.optional import require
from deployers.base import Bundle, DeployError
from store import artifacts as store_artifacts
from store import datasets as store_datasets
from store import deployments as store_deployments
from store import runs as store_runs

FORMAT = "pocketops-bundle/1"
RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
RUNTIME_FILES = ("api.py", "monitor.py", "predictor.py", "server.py")
CORE_DIR = Path(runtimes.__file__).resolve().parent
REFERENCE_ROWS = 200
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32",
               "tensor(float16)": "float16", "tensor(double)": "float64"}


def model_file(model_path: str | os.PathLike) -> str:
    """The model's name inside a bundle: ``model`` + its suffix (onnxruntime and the others tell the format by it)."""
    runtimes.runtime_of(model_path)  # a suffix no runtime loads is a one-line error
    return "model" + Path(model_path).suffix.lower()


def runtime_sources(model_name: str) -> dict[str, Path]:
    """Bundle file name -> source of every runtime file a bundle of ``model_name`` ships.

    The predictor and its server, ``runtimes.py`` (the runtime table and the onnxruntime
    session) and, for a .pte or .tflite model, its session adapter (``runtime_pte.py`` /
    ``runtime_tflite.py``): a pocketops upgrade that changes any of them rebuilds the bundle.
    """
    files = {name: RUNTIME_DIR / name for name in RUNTIME_FILES}
    files["runtimes.py"] = CORE_DIR / "runtimes.py"
    module = runtimes.runtime_of(model_name).session.partition(":")[0]
    if module != "core.runtimes":
        name = module.rpartition(".")[2] + ".py"
        files[name] = CORE_DIR / name
    return files


def load_variant(db, variant_id: int) -> dict:
    """The variant row (meta decoded) or a DeployError saying how to list variants."""
    try:
        from store import variants as store_variants  # issue 3's module, when present
        row = store_variants.get(db, variant_id)
    except ImportError:
        row = store_deployments.variant(db, variant_id)
    if row is None:
        raise DeployError(f"variant {variant_id} does not exist; list variants with `pocketops models list` "
                          f"or export a run with `pocketops export RUN_ID`")
    if isinstance(row.get("meta"), str):
        row = {**row, "meta": json.loads(row["meta"] or "{}")}
    return row


def _dataset_for(db, variant: dict) -> dict | None:
    meta = variant.get("meta") or {}
    ds = meta.get("dataset")
    if isinstance(ds, dict):
        ds = ds.get("name") or ds.get("id")
    if isinstance(ds, str):
        found = store_datasets.by_name(db, ds)
        if found:
            return found
    if isinstance(ds, int):
        return store_datasets.get(db, ds)
    if meta.get("dataset_id"):
        return store_datasets.get(db, int(meta["dataset_id"]))
    run_id = variant.get("run_id") or meta.get("run_id")
    if run_id:
        run = store_runs.get(db, int(run_id))
        if run:
            return store_datasets.get(db, run["dataset_id"])
    return None


def describe(model_path: Path, variant: dict, dataset: dict | None) -> dict:
    """The model.json fields that describe inputs, labels and preprocessing."""
    rt = runtimes.runtime_of(model_path)
    if rt.name == "onnxruntime":
        require("onnxruntime", "Building a deploy bundle")  # the message users know (Linux and Termux ways)
    else:
        runtimes.require(rt.name, f"building the deploy bundle of {Path(model_path).name}")
    try:
        session = runtimes.open_session(model_path, 1)
    except runtimes.RuntimeMissing:
        raise
    except Exception as exc:  # each runtime's own exception types (InvalidProtobuf, Fail, ValueError, ...)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise DeployError(f"{model_path}: {rt.name} cannot load this model ({type(exc).__name__}: "
                          f"{first}); export the variant again") from exc
    inp = session.get_inputs()[0]
    meta = variant.get("meta") or {}
    ds_meta = (dataset or {}).get("meta") or {}
    fallback_shape = meta.get("input_shape") or (dataset or {}).get("input_shape") or []
    dims = list(inp.shape[1:])
    if any(not isinstance(d, int) for d in dims):
        dims = [int(d) for d in fallback_shape]
        if not dims:
            raise DeployError(f"{model_path}: input {inp.name!r} has symbolic dims {inp.shape} and the variant meta "
                              f"has no input_shape; add it with `pocketops models add --dataset NAME`")
    dtype = _ORT_DTYPES.get(inp.type)
    if dtype is None:
        raise DeployError(f"{model_path}: input type {inp.type} is not supported by the bundle predictor "
                          f"(expected float or int64 tensors)")
    labels = meta.get("labels") or meta.get("classes") or (dataset or {}).get("classes")
    n_out = session.get_outputs()[0].shape[-1]
    if not labels:
        if not isinstance(n_out, int):
            raise DeployError(f"{model_path}: no class labels in the variant meta or its dataset; "
                              f"register the model with `pocketops models add --dataset NAME`")
        labels = [str(i) for i in range(n_out)]
    if isinstance(n_out, int) and n_out != len(labels):
        raise DeployError(f"{model_path}: the model has {n_out} outputs but {len(labels)} labels are recorded; "
                          f"check the variant's dataset")
    ds_type = ds_meta.get("type") or meta.get("kind")
    kind = {"image": "image", "images": "image", "text": "text", "tabular": "tabular", "csv": "tabular"}.get(ds_type or "")
    if kind is None:
        kind = "text" if dtype.startswith("int") else ("image" if len(dims) >= 2 else "tabular")
    spec: dict = {"name": inp.name, "shape": dims, "dtype": dtype, "kind": kind}
    preprocessing: dict = {}
    if kind == "image":
        scale = float(ds_meta.get("scale", meta.get("scale", 1 / 255)))
        preprocessing = {"scale": scale, "description": ds_meta.get("preprocessing", f"pixel values times {scale:g}")}
        spec["value_range"] = [0, round(1 / scale)]
        spec["max_abs"] = round(1 / scale) * 4.0
    elif kind == "text":
        preprocessing = {"encoding": "utf8-bytes+1", "max_len": int(ds_meta.get("max_len", dims[-1] if dims else 256)),
                         "description": "UTF-8 bytes + 1, 0 = padding"}
        spec["max_abs"] = 257.0
    else:
        features = ds_meta.get("features") or meta.get("features")
        if features:
            spec["features"] = list(features)
        preprocessing = {"description": ds_meta.get("preprocessing", "raw feature values")}
    return {"labels": [str(label) for label in labels], "input": spec, "preprocessing": preprocessing,
            "output": {"kind": meta.get("output_kind", "logits"), "name": session.get_outputs()[0].name}}


def _reference(dataset: dict | None, spec: dict, preprocessing: dict, rows: int) -> "tuple[object, str]":
    """A small seeded sample of raw training inputs (for drift distances), and where it came from."""
    import numpy as np

    empty = np.zeros((0, *spec["shape"]), dtype=np.float32)
    if dataset is None:
        return empty, "no dataset recorded for this variant: input distances are not computed"
    from core.datasets import load_arrays, split_indices

    arrays = load_arrays(dataset)
    train, _val, _test = split_indices(arrays.y)
    pick = np.random.default_rng(0).permutation(train)[:rows]
    X = arrays.X[pick].astype(np.float32)
    if preprocessing.get("scale"):
        X = X / np.float32(preprocessing["scale"])  # back to the raw values requests carry
    if tuple(X.shape[1:]) != tuple(spec["shape"]):
        if int(np.prod(X.shape[1:])) != int(np.prod(spec["shape"])):
            return empty, f"dataset {dataset['name']!r} samples have shape {list(X.shape[1:])}, the model wants {spec['shape']}"
        X = X.reshape((len(X), *spec["shape"]))
    return X, f"{len(X)} training samples of dataset {dataset['name']!r} (seed 0)"


def _held_out(dataset: dict | None, spec: dict, preprocessing: dict, reference_rows: int = REFERENCE_ROWS):
    """Raw inputs (as requests carry them) for calibrating the drift monitor: the validation split,
    and the training samples outside the reference (in-distribution inputs for the distance test,
    which does not depend on the model); None without a dataset."""
    import numpy as np

    if dataset is None:
        return None
    from core.datasets import load_arrays, split_indices

    arrays = load_arrays(dataset)
    train, val, _test = split_indices(arrays.y)
    rest = np.random.default_rng(0).permutation(train)[reference_rows:]  # _reference took the first rows

    def raw(idx):
        X = arrays.X[idx].astype(np.float32)
        if preprocessing.get("scale"):
            X = X / np.float32(preprocessing["scale"])
        return X.reshape((len(X), *spec["shape"]))

    if int(np.prod(arrays.X.shape[1:])) != int(np.prod(spec["shape"])) or len(val) < 20:
        return None
    return {"val": raw(val), "train_rest": raw(rest)}


def _calibrate_monitor(staging: Path, model_json: dict, held_out) -> None:
    """Write monitor.json: thresholds set on the held-out split so that the expected run length
    without drift is at least 10,000 requests (deployers/runtime/monitor.py); summary into model_json."""
    from deployers.runtime import monitor
    from deployers.runtime.predictor import Predictor

    if held_out is None:
        model_json["monitor"] = {"calibrated": False, "note": "no held-out split: signals are recorded, no detector runs"}
        return
    write_text(staging / "model.json", json.dumps(model_json))  # provisional: the predictor reads it
    try:
        predictor = Predictor(staging, monitor=False)
        preds, conf, dist = predictor.signals(held_out["val"])
        rest = held_out["train_rest"]
        more = predictor.distances(predictor.model_input(rest)) if len(rest) and dist is not None else None
    finally:
        (staging / "model.json").unlink()  # the final one, with every file's sha256, is written last
    config = monitor.calibrate(dist, conf, preds, len(model_json["labels"]), null_distances=more, signal="input")
    write_text(staging / "monitor.json", json.dumps(config, indent=1, sort_keys=True) + "\n")
    model_json["monitor"] = {"calibrated": True, **config["calibration"],
                             "thresholds": {k: round(d["params"]["threshold"], 4) for k, d in config["detectors"].items()}}


def bundle_version(variant: dict) -> str:
    """A bundle's version label: ``r<run>-<variant>-<sha8>`` (``v<variant id>`` for a model without a run)."""
    prefix = f"r{variant['run_id']}" if variant.get("run_id") else f"v{variant['id']}"
    return f"{prefix}-{variant['name']}-{variant['sha256'][:8]}"


def build_bundle(db, db_path: str | os.PathLike | None, variant_id: int, *, out_dir: str | os.PathLike | None = None,
                 register: bool = True, reference_rows: int = REFERENCE_ROWS) -> Bundle:
    """Build (or reuse) the bundle of a variant.

    Default place: ``<files>/bundles/variant-<id>-<sha8>/``, registered as an artifact. With
    ``out_dir`` (e.g. a temp dir for ``--dry-run``) nothing outside that directory changes.
    """
    import numpy as np

    variant = load_variant(db, variant_id)
    model_path = Path(variant["path"])
    if not model_path.is_file():
        raise DeployError(f"variant {variant_id}: model file {model_path} is missing; export the run again")
    sha = sha256_file(model_path)
    if variant.get("sha256") and sha != variant["sha256"]:
        raise DeployError(f"variant {variant_id}: {model_path} changed since it was built "
                          f"(sha256 {sha[:12]}…, recorded {variant['sha256'][:12]}…); export it again")
    variant = {**variant, "sha256": sha}
    if out_dir is None:
        if db_path is None:
            raise DeployError("build_bundle needs db_path or out_dir")
        out_dir = paths.artifact_dir(db_path, "bundles") / f"variant-{variant_id}-{sha[:8]}"
    out_dir = Path(out_dir)
    existing = _reuse(out_dir, sha)
    if existing is not None:
        if register and store_artifacts.by_path(db, str(out_dir)) is None:
            _register(db, existing, variant)  # built by a process killed before it registered it
        return existing
    _sweep_staging(out_dir)
    dataset = _dataset_for(db, variant)
    info = describe(model_path, variant, dataset)
    reference, reference_note = _reference(dataset, info["input"], info["preprocessing"], reference_rows)
    model_json = {
        "format": FORMAT,
        "version": bundle_version(variant),
        "variant_id": variant_id,
        "variant": variant["name"],
        "run_id": variant.get("run_id"),
        "dataset": dataset["name"] if dataset else None,
        # every runtime tells its format by the extension (onnxruntime an ORT-format file, too)
        "model_file": model_file(model_path),
        "runtime": runtimes.runtime_of(model_path).name,
        "sha256": sha,
        "size_bytes": model_path.stat().st_size,
        **info,
        "reference": {"rows": int(len(reference)), "note": reference_note},
    }
    # Space a bundle needs: the model and runtime files it copies plus the reference rows.
    needed = model_path.stat().st_size + sum(p.stat().st_size for p in runtime_sources(model_json["model_file"]).values()) \
        + int(np.asarray(reference, dtype=np.float32).nbytes)
    with no_space_as_error(out_dir, needed, what="deploy bundle"):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # same filesystem: rename is atomic; the pid in the name lets a later build sweep a killed one's
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{os.getpid()}.", dir=out_dir.parent))
        _fill(staging, out_dir, model_path, reference, model_json,
              _held_out(dataset, info["input"], info["preprocessing"], reference_rows))
    bundle = Bundle(path=out_dir, variant_id=variant_id, version=model_json["version"], model_json=model_json)
    if register:
        _register(db, bundle, variant)
    return bundle


def _fill(staging: Path, out_dir: Path, model_path: Path, reference, model_json: dict, held_out=None) -> None:
    """Write the bundle's files into ``staging``, then rename it to ``out_dir`` (staging removed on any failure)."""
    import numpy as np

    try:
        shutil.copyfile(model_path, staging / model_json["model_file"])
        for name, source in runtime_sources(model_json["model_file"]).items():
            shutil.copyfile(source, staging / name)
        buf = io.BytesIO()
        np.savez_compressed(buf, X=np.asarray(reference, dtype=np.float32))
        write_bytes(staging / "reference.npz", buf.getvalue())
        _calibrate_monitor(staging, model_json, held_out)
        model_json["files"] = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        write_text(staging / "model.json", json.dumps(model_json, indent=2, sort_keys=True) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)  # an incomplete or stale bundle (another model sha) of the same name
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _register(db, bundle: Bundle, variant: dict) -> None:
    store_artifacts.register(db, kind="bundle", path=str(bundle.path), sha256=sha256_file(bundle.path / "model.json"),
                             size_bytes=sum(size for _, size in bundle.files()), run_id=variant.get("run_id"),
                             meta={"variant_id": bundle.variant_id, "version": bundle.version})


def _sweep_staging(out_dir: Path) -> None:
    """Remove staging directories of ``out_dir`` left by a build whose process died (signal 9)."""
    from core.worker import pid_alive

    for staging in out_dir.parent.glob(f".{out_dir.name}.*"):
        pid = staging.name[len(out_dir.name) + 2:].split(".", 1)[0]
        if staging.is_dir() and (not pid.isdigit() or not pid_alive(int(pid))):
            shutil.rmtree(staging, ignore_errors=True)


def _reuse(out_dir: Path, sha: str) -> Bundle | None:
    """An existing complete bundle of the same model (and runtime files) or None."""
    spec = out_dir / "model.json"
    if not spec.is_file():
        return None
    try:
        model_json = json.loads(spec.read_text("utf-8"))
    except json.JSONDecodeError:
        return None
    if model_json.get("format") != FORMAT or model_json.get("sha256") != sha:
        return None
    try:
        sources = runtime_sources(model_json.get("model_file") or "model.onnx")
    except runtimes.RuntimeMissing:
        return None
    for name, source in sources.items():  # a pocketops upgrade changes the runtime: rebuild
        if model_json.get("files", {}).get(name) != sha256_file(source):
            return None
    return Bundle(path=out_dir, variant_id=model_json.get("variant_id"), version=model_json["version"], model_json=model_json)
