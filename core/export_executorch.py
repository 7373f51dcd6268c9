"""Torch → ExecuTorch ``.pte`` programs with the XNNPACK delegate: fp32, and int8 (torchao PT2E).

Facts this follows (docs/mobile-runtimes.md, probed with executorch 1.5.1 on torch 2.13.0):

* The batch axis is exported dynamic (``torch.export.Dim``, at most :data:`BATCH_MAX`), so batch
  1, batch 8 and the accuracy pass run natively. Lowering re-traces the graph with the example
  batch as a hint, and torch's fake convolution then guards on it (its backend choice asks
  ``batch >= 16``): with a hint of 2 the bound silently shrank to 15. Lowering and
  ``to_executorch`` therefore run with ``backed_size_oblivious`` on, which keeps such guards
  from narrowing the batch range.
* Where a model cannot be exported with a dynamic batch, the program is fixed at batch 1 and
  served one sample per call (``batch_method`` "loop" in its meta; ``core.runtime_pte`` does the same).
* int8 is torchao's PT2E with executorch's XNNPACKQuantizer, symmetric per-channel, calibrated on
  real training samples at batch 1 (as ``int8-static`` is).
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np

from core.atomic import write_bytes
from core.errors import ConfigError
from core.quantize import Built, QuantizeConfig, TorchSource, _quiet, calibration_set

BATCH_MAX = 1024
EXAMPLE_BATCH = 2          # a batch of 1 would make torch.export specialize the axis
BATCH_MAX_METHOD = "pocketops_batch_max"   # read back by core.runtime_pte.PteSession


@contextlib.contextmanager
def _silent():
    """core.quantize's quiet, plus logging off: torch's and torchao's loggers carry their own
    handlers and levels (torchao's CUDA-kernel lines, torch's pytree deprecation line)."""
    disabled = logging.root.manager.disable
    try:
        logging.disable(logging.CRITICAL)
        with _quiet():
            yield
    finally:
        logging.disable(disabled)


def _version() -> str:
    from executorch.version import __version__

    return str(__version__)


def _example(source: TorchSource, batch: int):
    """``batch`` copies of the batch-1 example (export traces with it)."""
    import torch

    ex = source.example
    return torch.cat([ex] * batch) if batch > 1 else ex


def _export(module, source: TorchSource, dynamic: bool):
    """``torch.export`` of ``module`` with a dynamic batch axis (at most BATCH_MAX) or at batch 1."""
    import torch
    from torch.export import Dim

    if dynamic:
        return torch.export.export(module, (_example(source, EXAMPLE_BATCH),),
                                   dynamic_shapes=({0: Dim("batch", min=1, max=BATCH_MAX)},))
    return torch.export.export(module, (_example(source, 1),))


def _lower(exported, dynamic: bool):
    """The exported program lowered to XNNPACK: (executorch program manager, edge program)."""
    import torch.fx.experimental._config as fx_config
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    # Without this the re-traces below narrow the batch range to what the example's hint passes.
    with fx_config.patch(backed_size_oblivious=True):
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()],
                                           constant_methods={BATCH_MAX_METHOD: BATCH_MAX if dynamic else 0})
        program = edge.to_executorch()
    return program, edge


def _ops(edge) -> dict[str, int]:
    """Op counts of the lowered program: ``xnnpack:<op>`` inside the delegate, ``<op>`` left to ExecuTorch's kernels."""
    counts: dict[str, int] = {}
    gm = edge.exported_program().graph_module

    def name_of(target) -> str:
        text = str(getattr(target, "__name__", target))
        return text.split("::")[-1] if "::" in text else text

    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if "executorch_call_delegate" in str(node.target):
            lowered = getattr(gm, node.args[0].target)
            inner = lowered.original_module.graph_module
            for sub in inner.graph.nodes:
                if sub.op == "call_function" and "getitem" not in str(sub.target):
                    key = f"xnnpack:{name_of(sub.target)}"
                    counts[key] = counts.get(key, 0) + 1
        elif "getitem" not in str(node.target):
            key = name_of(node.target)
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _build(name: str, source: TorchSource, out: Path, make_module, meta: dict) -> Built:
    """Export (dynamic batch first, batch 1 if that fails), lower, write ``out`` atomically."""
    model = source.model
    if getattr(model, "training", False):
        model.eval()
    started = time.perf_counter()
    first_error = None
    program = edge = None
    with _silent():
        for dynamic in (True, False):
            try:
                program, edge = _lower(_export(make_module(dynamic), source, dynamic), dynamic)
                break
            except Exception as exc:  # torch.export / the lowering raise many types for one refusal
                if first_error is None:
                    first_error = exc
        if program is None:
            first = (str(first_error).strip().splitlines() or [""])[0][:200]
            raise ConfigError(f"the {name} variant: ExecuTorch could not export this model "
                              f"({type(first_error).__name__}: {first}); drop it from --variants")
        ops = _ops(edge)
        write_bytes(out, program.buffer)
    delegated = sum(n for op, n in ops.items() if op.startswith("xnnpack:"))
    meta.update({
        "executorch": _version(), "delegate": "XnnpackBackend",
        "batch_method": "native" if dynamic else "loop", "dynamic_batch_max": BATCH_MAX if dynamic else None,
        "delegated_ops": delegated, "non_delegated_ops": sum(ops.values()) - delegated,
        "export_s": round(time.perf_counter() - started, 2),
    })
    if not dynamic:
        meta["dynamic_batch_refused"] = f"{type(first_error).__name__}: {(str(first_error).strip().splitlines() or [''])[0][:200]}"
    return Built(name, Path(out), meta, ops=ops)


def build_fp32(source: TorchSource, out: Path, config: QuantizeConfig | None = None) -> Built:
    """The trained model as an ExecuTorch program, XNNPACK-delegated, fp32, dynamic batch axis."""
    return _build("executorch-fp32", source, Path(out), lambda dynamic: source.model, {})


def build_int8(source: TorchSource, out: Path, config: QuantizeConfig | None = None) -> Built:
    """int8 ExecuTorch program: PT2E with the XNNPACK quantizer (symmetric, per-channel), calibrated
    on ``config.calibration_samples`` training samples at batch 1, lowered to XNNPACK."""
    import torch

    config = config or QuantizeConfig()
    X_train = getattr(source.data, "X_train", None)
    if X_train is None:
        raise ConfigError("the executorch-int8 variant needs training samples to calibrate on")
    samples = calibration_set(np.asarray(X_train), config.calibration_samples, config.seed)

    def quantized(dynamic: bool):
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(_export(source.model, source, dynamic).module(), quantizer)
        with torch.no_grad():
            for i in range(len(samples)):
                prepared(torch.from_numpy(np.ascontiguousarray(samples[i:i + 1])))
        return convert_pt2e(prepared)

    meta = {"calibration_samples": int(len(samples)), "per_channel": True, "symmetric": True,
            "quantizer": "XNNPACKQuantizer (torchao PT2E)"}
    return _build("executorch-int8", source, Path(out), quantized, meta)
