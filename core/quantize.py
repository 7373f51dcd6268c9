"""Variants of an fp32 ONNX model: fp16, int8-dynamic, int8-static (QDQ), each one file.

Facts this follows (``FACTS.md``): run ``quant_pre_process`` first with
``skip_symbolic_shape=True``; dynamic quantization of Conv gives ConvInteger, which runs
several times *slower* on CPU, so for convolutional models only MatMul/Gemm are quantized
unless ConvInteger is asked for (variant ``int8-dynamic-conv``); static quantization is
calibrated on real training samples (random data gave logit errors of 0.15–0.22).
"""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from core.atomic import no_space_as_error, write_bytes
from core.errors import ConfigError
from core.optional import require

VARIANTS = ("fp32", "fp16", "int8-dynamic", "int8-static")
EXTRA_VARIANTS = ("int8-dynamic-conv",)   # measurable on request: dynamic int8 with ConvInteger
ALL_VARIANTS = VARIANTS + EXTRA_VARIANTS
DEFAULT_VARIANTS = VARIANTS
# Same graph, another file format: fp32 as ONNX Runtime's mobile ``.ort`` (for onnxruntime-android).
FORMAT_VARIANTS = ("ort-format",)


@dataclass(frozen=True)
class TorchVariant:
    """A variant built from the trained torch model itself, not from ``fp32.onnx``.

    ``builder`` is ``"module:function"`` called as ``builder(source, out, config) -> Built``
    (``source``: :class:`TorchSource`); ``needs`` are the modules the build imports (checked
    with ``find_spec`` before anything is written), ``packages`` the pip names that bring them;
    ``runtime`` is the ``core.runtimes`` name that loads the file; ``families`` the model
    families it applies to (None: all).
    """

    name: str
    suffix: str
    builder: str
    needs: tuple
    packages: str
    runtime: str
    families: tuple | None = None
    summary: str = ""


TORCH_VARIANTS = {v.name: v for v in (
    TorchVariant("executorch-fp32", ".pte", "core.export_executorch:build_fp32",
                 ("executorch.exir", "executorch.runtime", "executorch.backends.xnnpack"), "executorch", "executorch",
                 summary="ExecuTorch program, XNNPACK delegate, fp32"),
    TorchVariant("executorch-int8", ".pte", "core.export_executorch:build_int8",
                 ("executorch.exir", "executorch.runtime", "executorch.backends.xnnpack", "torchao"), "executorch",
                 "executorch", summary="ExecuTorch program, XNNPACK delegate, int8 (PT2E, calibrated on training samples)"),
    TorchVariant("litert-fp32", ".tflite", "core.export_litert:build_fp32",
                 ("litert_torch", "ai_edge_litert.interpreter"), "litert-torch and ai-edge-litert", "litert",
                 summary="LiteRT (TFLite) flatbuffer, fp32"),
    TorchVariant("litert-int8", ".tflite", "core.export_litert:build_int8",
                 ("litert_torch", "ai_edge_litert.interpreter"), "litert-torch and ai-edge-litert", "litert",
                 summary="LiteRT full-integer int8 (calibrated on training samples), int8 input and output"),
    TorchVariant("pruned-int8", ".onnx", "core.prune:build_pruned_int8",
                 ("onnx", "onnxruntime.quantization"), "onnx and onnxruntime", "onnxruntime", families=("cnn",),
                 summary="conv channels pruned (structured), fine-tuned briefly, then int8-static"),
)}
KNOWN_VARIANTS = ALL_VARIANTS + FORMAT_VARIANTS + tuple(TORCH_VARIANTS)


@dataclass
class TorchSource:
    """What a :class:`TorchVariant` is built from: the trained model (eval mode), its checkpoint dict,
    the run's data splits (``core.export_job.EvalData``), the input spec, and one batch-1 example tensor."""

    model: object
    ckpt: dict
    data: object
    shape: list
    dtype: str
    example: object


def torch_refusal(names: list[str], family: str | None = None) -> str | None:
    """None when every torch-built variant in ``names`` can be built here, else one line saying
    which package is missing and the way forward (checked with ``find_spec``: nothing imported)."""
    import importlib.util

    for name in names:
        tv = TORCH_VARIANTS.get(name)
        if tv is None:
            continue
        if family is not None and tv.families is not None and family not in tv.families:
            return (f"the {name} variant applies to {', '.join(tv.families)} models only, "
                    f"and this run is a {family}; drop it from --variants")
        absent = []
        for module in tv.needs:
            try:
                ok = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                ok = False
            if not ok:
                absent.append(module)
        if absent:
            return (f"the {name} variant needs {tv.packages} (module {absent[0]} is not installed here). "
                    f"On Linux: pip install 'pocketops[mobile]' (make test-mobile builds .venv-mobile with it); "
                    f"no phone wheel exists: export with --on CLUSTER, or on a laptop and copy the "
                    f"{tv.suffix} file over (pocketops models add)")
    return None


def build_torch_variant(name: str, source: TorchSource, out: Path, config: QuantizeConfig | None = None) -> Built:
    """Build torch variant ``name`` from ``source`` into ``out`` (its builder, imported by path)."""
    tv = TORCH_VARIANTS[name]
    module, _, func = tv.builder.partition(":")
    with no_space_as_error(out, 16 * 2**20, what=f"{name} variant"):
        built = getattr(importlib.import_module(module), func)(source, Path(out), config or QuantizeConfig())
    built.meta.setdefault("runtime", tv.runtime)
    return built


def zip_size(path: str | Path) -> int:
    """Bytes of ``path`` zip-compressed (deflate, level 9): what the file costs inside an APK or a download."""
    import zipfile

    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.write(path, Path(path).name)
    return len(sink.getvalue())


@dataclass
class QuantizeConfig:
    """How to build the int8 variants."""

    calibration_samples: int = 256
    per_channel: str = "auto"          # "auto" (keep whichever follows fp32 closer) | "on" | "off"
    seed: int = 0


@dataclass
class Built:
    """One variant file and what was decided while building it."""

    name: str
    path: Path
    meta: dict = field(default_factory=dict)
    ops: dict | None = None     # op counts where the file is no ONNX graph (an .ort file: its optimized graph's)


def require_quantize_tools(purpose: str = "Quantization") -> None:
    """Fail at once, before anything is written, if the quantizer cannot run here."""
    require("onnx", purpose)
    require("onnxruntime", purpose)
    require("onnxruntime.quantization", purpose)


def require_fp16_tools(purpose: str = "The fp16 variant"):
    """onnxconverter-common's float16 converter, or a message naming the pip package."""
    require("onnx", purpose)
    return require("onnxconverter_common.float16", purpose)


def suffix(name: str) -> str:
    """The file extension variant ``name`` is written with (onnxruntime tells ``.ort`` files by it)."""
    if name in TORCH_VARIANTS:
        return TORCH_VARIANTS[name].suffix
    return ".ort" if name == "ort-format" else ".onnx"


def ops_of(built: Built) -> dict[str, int]:
    """How many nodes of each op type a built variant has (an .ort file: its optimized graph's;
    a .pte or .tflite file: what its builder counted, else none)."""
    if built.path.suffix in (".pte", ".tflite"):
        return dict(built.ops or {})
    return dict(built.ops) if built.ops is not None else op_types(built.path)


def require_ort_format_tools(purpose: str = "The ort-format variant"):
    """onnxruntime's ONNX → ORT-format converter, or a one-line ConfigError with the way forward."""
    ort = require("onnxruntime", purpose)
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        module = importlib.import_module("onnxruntime.tools.convert_onnx_models_to_ort")
        # Its logger module calls logging.basicConfig() on import: no stderr handler of its own in the dashboard.
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
        return module
    except ImportError as exc:
        raise ConfigError(
            f"{purpose} needs onnxruntime's ORT-format converter (onnxruntime.tools.convert_onnx_models_to_ort), "
            f"which this onnxruntime {getattr(ort, '__version__', '?')} lacks ({exc}); export on a laptop with the "
            "full onnxruntime wheel (pip install 'pocketops[serve]') and copy the .ort over (pocketops models add)"
        ) from None


def check_names(names: list[str]) -> list[str]:
    """Validate variant names, keep the user's order, drop repeats."""
    unknown = [n for n in names if n not in KNOWN_VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant {', '.join(map(repr, unknown))}; expected some of {', '.join(KNOWN_VARIANTS)}")
    seen: list[str] = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return seen


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer logs and warns freely; none of it belongs in the dashboard."""
    root = logging.getLogger()
    level = root.level
    sink = io.StringIO()
    try:
        root.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def op_types(path: str | Path) -> dict[str, int]:
    """How many nodes of each op type the model has (needs ``onnx``)."""
    onnx = require("onnx", "reading an ONNX graph")
    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _preprocess(src: Path, tmp: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx = require("onnx", "quantization")
    model = onnx.load(str(src))
    # The dynamo exporter records shapes of initializers as value_info; once the optimizer
    # transposes a Gemm weight that record is stale and shape inference refuses the model.
    weights = {init.name for init in model.graph.initializer}
    kept = [vi for vi in model.graph.value_info if vi.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    clean = tmp / "clean.onnx"
    onnx.save(model, str(clean))
    out = tmp / "pre.onnx"
    # Symbolic shape inference fails on Reshape with computed shapes (exported transformers).
    quant_pre_process(str(clean), str(out), skip_symbolic_shape=True)
    return out


def build_fp16(fp32: Path, out: Path) -> Built:
    """Convert the fp32 model to fp16 weights (inputs and outputs stay float32) and write it to ``out``."""
    onnx = require("onnx", "The fp16 variant")
    float16 = require_fp16_tools()
    with _quiet():
        model = float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    write_bytes(out, model.SerializeToString())
    return Built("fp16", out, {"keep_io_types": True})


def build_int8_dynamic(fp32: Path, out: Path, *, conv_integer: bool = False) -> Built:
    """Dynamic int8 quantization of ``fp32`` into ``out``.

    With convolutions, only MatMul/Gemm are quantized unless ``conv_integer`` (ConvInteger is often slower).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    has_conv = "Conv" in op_types(fp32)
    ops = None if (conv_integer or not has_conv) else ["MatMul", "Gemm"]
    with tempfile.TemporaryDirectory(prefix="pocketops-q-") as tmp, _quiet():
        pre = _preprocess(fp32, Path(tmp))
        staged = Path(tmp) / "q.onnx"
        quantize_dynamic(str(pre), str(staged), op_types_to_quantize=ops, weight_type=QuantType.QInt8)
        write_bytes(out, staged.read_bytes())
    name = "int8-dynamic-conv" if conv_integer else "int8-dynamic"
    return Built(name, out, {"op_types_to_quantize": ops or "all", "conv_integer": bool(conv_integer and has_conv)})


class SampleReader:
    """A CalibrationDataReader over real samples, fed one at a time (batch 1, as served)."""

    def __init__(self, input_name: str, samples: np.ndarray):
        self.input_name = input_name
        self.samples = samples
        self._next = 0

    def get_next(self) -> dict | None:
        """The next sample as onnxruntime's feed dict, or None when all were read."""
        if self._next >= len(self.samples):
            return None
        x = self.samples[self._next:self._next + 1]
        self._next += 1
        return {self.input_name: np.ascontiguousarray(x)}

    def rewind(self) -> None:
        """Start again from the first sample."""
        self._next = 0


def calibration_set(X_train: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` training samples drawn without replacement (all of them if fewer)."""
    if len(X_train) == 0:
        raise ConfigError("int8-static needs training samples to calibrate on; the training split is empty")
    count = max(1, min(int(count), len(X_train)))
    idx = np.random.default_rng(seed).choice(len(X_train), size=count, replace=False)
    return X_train[np.sort(idx)]


def _static(pre: Path, staged: Path, samples: np.ndarray, per_channel: bool) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from core.export import INPUT_NAME

    quantize_static(
        str(pre), str(staged), SampleReader(INPUT_NAME, samples), quant_format=QuantFormat.QDQ,
        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )


def _pick_granularity(scored: list[tuple]) -> tuple:
    """Per-channel only where it helps: it must follow fp32 clearly closer, since its extra
    scales and zero points make the file larger. ``scored``: (agreement, max_diff, per_channel, path)."""
    if len(scored) == 1:
        return scored[0]
    channel = next(s for s in scored if s[2])
    tensor = next(s for s in scored if not s[2])
    if channel[0] > tensor[0] or (channel[0] == tensor[0] and channel[1] < 0.9 * tensor[1]):
        return channel
    return tensor


def build_int8_static(fp32: Path, out: Path, X_train: np.ndarray, *, config: QuantizeConfig | None = None,
                      X_check: np.ndarray | None = None) -> Built:
    """Static QDQ int8 calibrated on training samples; per-channel only where it follows fp32 closer."""
    from core.export import compare_logits, onnx_logits

    config = config or QuantizeConfig()
    samples = calibration_set(X_train, config.calibration_samples, config.seed)
    choices = {"auto": [True, False], "on": [True], "off": [False]}.get(config.per_channel)
    if choices is None:
        raise ConfigError(f"per_channel must be 'auto', 'on' or 'off', not {config.per_channel!r}")
    check = X_check if X_check is not None and len(X_check) else samples[:64]
    with tempfile.TemporaryDirectory(prefix="pocketops-q-") as tmp, _quiet():
        pre = _preprocess(fp32, Path(tmp))
        reference = onnx_logits(fp32, check)
        scored = []
        for per_channel in choices:
            staged = Path(tmp) / f"q-{int(per_channel)}.onnx"
            _static(pre, staged, samples, per_channel)
            diff = compare_logits(reference, onnx_logits(staged, check))
            scored.append((diff.agreement, diff.max_abs_logit_diff, per_channel, staged))
        _, diff, per_channel, best = _pick_granularity(scored)
        write_bytes(out, best.read_bytes())
    return Built("int8-static", out, {
        "calibration_samples": int(len(samples)), "per_channel": per_channel, "format": "QDQ",
        "calibration_check_max_abs_logit_diff": round(float(diff), 6),
    })


def build(name: str, fp32: Path, out: Path, *, X_train: np.ndarray | None = None,
          X_check: np.ndarray | None = None, config: QuantizeConfig | None = None) -> Built:
    """Build variant ``name`` from the fp32 file into ``out`` (fp32 itself is copied).

    Out of space (here or in the quantizer's temp directory): DiskFull naming ``out``; a variant
    needs at most about the fp32 file's size.
    """
    with no_space_as_error(out, Path(fp32).stat().st_size, what=f"{name} variant"):
        return _build_variant(name, Path(fp32), Path(out), X_train=X_train, X_check=X_check, config=config)


def build_ort_format(fp32: Path, out: Path) -> Built:
    """``fp32`` converted to ONNX Runtime's ORT format (what onnxruntime-android and -mobile load) at ``out``.

    onnxruntime's own converter, in its default "fixed" style: graph optimizations applied once
    here at level "all" except the x86-only NCHWc layout, so the file runs on ARM phones too.
    """
    converter = require_ort_format_tools()
    with tempfile.TemporaryDirectory(prefix="pocketops-ort-") as tmp, _quiet():
        staged = Path(tmp) / "model.onnx"
        staged.write_bytes(Path(fp32).read_bytes())
        try:
            converter.convert_onnx_models_to_ort(
                staged, output_dir=Path(tmp) / "out", optimization_styles=[converter.OptimizationStyle.Fixed],
                save_optimized_onnx_model=True)
            made = sorted((Path(tmp) / "out").glob("model*.ort"))
            if len(made) != 1:
                raise RuntimeError(f"the converter wrote {len(made)} .ort files, expected 1")
        except Exception as exc:  # the converter raises whatever onnxruntime raised while optimizing
            raise ConfigError(f"{fp32}: onnxruntime could not convert it to ORT format "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from None
        converted = Path(made[0])
        optimized = converted.with_name(converted.name[:-len(".ort")] + ".optimized.onnx")
        ops = op_types(optimized) if optimized.exists() else None
        write_bytes(out, converted.read_bytes())
    import onnxruntime

    return Built("ort-format", out, {"format": "ORT", "optimization_style": "fixed", "optimization_level": os.getenv("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL", "all"),
                                     "disabled_optimizers": ["NchwcTransformer"],
                                     "onnxruntime": onnxruntime.__version__}, ops=ops)


def _build_variant(name: str, fp32: Path, out: Path, *, X_train, X_check, config) -> Built:
    if name == "fp32":
        write_bytes(out, Path(fp32).read_bytes())
        return Built("fp32", out, {})
    if name == "ort-format":  # not an ONNX file: nothing of the quantizer's to strip
        return build_ort_format(Path(fp32), Path(out))
    require_quantize_tools(f"The {name} variant")
    built = _build(name, Path(fp32), Path(out), X_train=X_train, X_check=X_check, config=config)
    from core.export import strip_metadata

    # The quantizer's tensor names ("<weight>_quantized_scale", ...) are a visible share of a tiny file.
    write_bytes(built.path, strip_metadata(built.path.read_bytes()))
    return built


def _build(name: str, fp32: Path, out: Path, *, X_train, X_check, config) -> Built:
    if name == "fp16":
        return build_fp16(Path(fp32), out)
    if name in ("int8-dynamic", "int8-dynamic-conv"):
        return build_int8_dynamic(Path(fp32), out, conv_integer=name == "int8-dynamic-conv")
    if name == "int8-static":
        if X_train is None:
            raise ConfigError("int8-static needs training samples to calibrate on")
        return build_int8_static(Path(fp32), out, X_train, config=config, X_check=X_check)
    check_names([name])
    raise AssertionError(name)
