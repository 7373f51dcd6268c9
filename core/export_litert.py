"""The LiteRT (TFLite) variants, built from the trained torch model with litert-torch.

``litert-fp32``: the model converted as is (NCHW float32 input, batch axis fixed at 1).
``litert-int8``: full-integer int8 — litert-torch's PT2E quantizer, per-channel symmetric
weights, static activation ranges calibrated on real training samples (random data gives
logit errors several times larger, see FACTS.md), int8 input and output; ``core.runtime_tflite``
quantizes the input and dequantizes the logits so callers still see float32.

Both are called as ``builder(source, out, config) -> Built`` (``core.quantize.TorchVariant``).
The converter is loud (rich progress lines on stdout, absl/oneDNN/MLIR lines from C++ on fd 2):
all of it is kept out of the dashboard and the CLI's output.
"""
from __future__ import annotations

import contextlib
from importlib import metadata
from pathlib import Path
from typing import Iterator

import numpy as np

from core.atomic import write_bytes
from core.errors import PocketopsError
from core.quantize import Built, QuantizeConfig, TorchSource, _quiet, calibration_set


def build_fp32(source: TorchSource, out: Path, config: QuantizeConfig) -> Built:
    """``source``'s model as a float32 ``.tflite`` at ``out``."""
    with _silenced():
        import litert_torch

        content = _convert(lambda: litert_torch.convert(source.model, (source.example,)), "litert-fp32")
    write_bytes(out, content)
    return Built("litert-fp32", Path(out), _meta(), ops=op_counts(out))


def build_int8(source: TorchSource, out: Path, config: QuantizeConfig) -> Built:
    """``source``'s model as a full-integer int8 ``.tflite`` at ``out``, calibrated on
    ``config.calibration_samples`` training samples fed one at a time (batch 1, as served)."""
    samples = calibration_set(source.data.X_train, config.calibration_samples, config.seed)
    with _silenced():
        import litert_torch
        import torch
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
        example = (source.example,)
        graph = prepare_pt2e(torch.export.export(source.model, example).module(), quantizer)
        with torch.no_grad():
            for i in range(len(samples)):
                graph(torch.from_numpy(np.ascontiguousarray(samples[i:i + 1])))
        # fold_quantize=False: litert-torch folds the quantize ops itself while lowering
        graph = convert_pt2e(graph, fold_quantize=False)
        content = _convert(lambda: litert_torch.convert(graph, example, quant_config=QuantConfig(pt2e_quantizer=quantizer)),
                           "litert-int8")
    write_bytes(out, content)
    io = io_quantization(out)
    return Built("litert-int8", Path(out), {
        **_meta(), "calibration_samples": int(len(samples)), "per_channel": True, "activations": "static",
        "format": "full-integer", **io,
    }, ops=op_counts(out))


def _convert(convert, name: str) -> bytes:
    """The flatbuffer ``convert()`` makes; its failure as one line naming the variant."""
    try:
        return bytes(convert().model_content())
    except Exception as exc:  # the converter raises torch, jax and MLIR errors alike
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise PocketopsError(f"the {name} variant: litert-torch could not convert this model "
                             f"({type(exc).__name__}: {first}); export fp32 or the ONNX variants instead") from None


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Python's stdout/stderr/logging/warnings (core.quantize._quiet) and fd 2 (the C++ loggers)."""
    import logging

    from core.runtime_tflite import quiet_stderr

    # torch's and absl's loggers keep handlers of their own, bound to the stderr of their import time
    disabled = logging.root.manager.disable
    try:
        logging.disable(logging.WARNING)
        with quiet_stderr(), _quiet():
            yield
    finally:
        logging.disable(disabled)


def _meta() -> dict:
    return {"litert_torch": _version("litert-torch"), "ai_edge_litert": _version("ai-edge-litert")}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _plain_interpreter(path: Path):
    """An interpreter on the file's own ops (no XNNPACK delegate folding them into one node)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from core.runtime_tflite import quiet_stderr

    with quiet_stderr():
        it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it.allocate_tensors()
    return it


def op_counts(path: Path) -> dict[str, int] | None:
    """How many ops of each type the flatbuffer has (None where this interpreter cannot list them)."""
    try:
        ops = _plain_interpreter(path)._get_ops_details()
    except (AttributeError, RuntimeError, ValueError):
        return None
    counts: dict[str, int] = {}
    for op in ops:
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items()))


def io_quantization(path: Path) -> dict:
    """The int8 file's input and output scale and zero point (what callers quantize with)."""
    it = _plain_interpreter(path)
    found = {}
    for key, detail in (("input", it.get_input_details()[0]), ("output", it.get_output_details()[0])):
        scale, zero = detail["quantization"]
        found[f"{key}_quantization"] = {"dtype": np.dtype(detail["dtype"]).name, "scale": float(scale),
                                        "zero_point": int(zero)}
    return found
