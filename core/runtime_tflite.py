"""A LiteRT (TFLite) ``.tflite`` file behind the session shape of ``core.runtimes``.

    session = TfliteSession(Path("model.tflite"), threads=1)
    name = session.get_inputs()[0].name
    logits = session.run(None, {name: x})[0]      # float32, any batch size

The exporter fixes the batch axis at 1 (litert-torch cannot lower a dynamic batch through the
CNN's flatten). A batch of n samples runs on an interpreter resized to n once and then cached
(``batch_method = "resized"``); where the graph cannot be resized (a reshape to the exported
batch size, as in the digits CNN) each sample runs alone (``batch_method = "loop"``).

A full-integer int8 file has int8 input and output: the session quantizes the input with the
file's scale and zero point and dequantizes the logits, so callers always see float32.

This file ships INSIDE deploy bundles: stdlib, numpy and ai-edge-litert only, no torch and
nothing of pocketops.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# numpy dtype name -> onnxruntime type string; every input and output is float32 to the caller.
FLOAT = "tensor(float)"
# Interpreters kept per batch size beyond the exported one (the harness uses 1, 8, 256 and a remainder).
MAX_CACHED = 6


@dataclass(frozen=True)
class Arg:
    """An input or output as ``get_inputs()``/``get_outputs()`` give it (onnxruntime's NodeArg shape)."""

    name: str
    shape: list
    type: str


@contextlib.contextmanager
def quiet_stderr():
    """Send file descriptor 2 to /dev/null for the duration: LiteRT's C++ code prints
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." there, past Python's sys.stderr,
    straight into the dashboard's terminal or the CLI's output."""
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):
        pass
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a daemon with closed stdio): nothing to silence
        yield
        return
    sink = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(sink, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(sink)


def _interpreter_class():
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter


def _quantization(detail: dict) -> tuple[float, int] | None:
    """(scale, zero point) of an integer tensor, None for a float one."""
    if np.issubdtype(np.dtype(detail["dtype"]), np.floating):
        return None
    scale, zero = detail.get("quantization") or (0.0, 0)
    if not scale:
        raise ValueError(f"tensor {detail['name']!r} is {np.dtype(detail['dtype']).name} without a quantization "
                         "scale; expected float32 or quantized int8 input and output")
    return float(scale), int(zero)


class TfliteSession:
    """A ``.tflite`` model on ai-edge-litert's Interpreter, shaped like an onnxruntime InferenceSession."""

    runtime = "litert"

    def __init__(self, path: Path, threads: int, **_options):
        self.path = Path(path)
        self.threads = int(threads)
        self.batch_method = "resized"   # until a resize fails; then "loop" for good
        base = self._open(None)
        self._in = base.get_input_details()
        self._out = base.get_output_details()
        self._in_q = [_quantization(d) for d in self._in]
        self._out_q = [_quantization(d) for d in self._out]
        self._base_batch = int(self._in[0]["shape"][0]) if len(self._in[0]["shape"]) else 1
        self._by_batch = {self._base_batch: base}
        self._in_names = [d["name"] for d in self._in]
        self._out_names = [d["name"] for d in self._out]

    def _open(self, batch: int | None):
        """A fresh interpreter with its tensors allocated (resized to ``batch`` samples unless None)."""
        Interpreter = _interpreter_class()
        with quiet_stderr():
            it = Interpreter(model_path=str(self.path), num_threads=self.threads)
            if batch is not None:
                for d in it.get_input_details():
                    it.resize_tensor_input(d["index"], [batch, *list(d["shape"][1:])])
            it.allocate_tensors()
        return it

    def _interpreter(self, batch: int):
        """The interpreter for ``batch`` samples, or None where the graph cannot be resized (loop then)."""
        it = self._by_batch.get(batch)
        if it is not None or self.batch_method == "loop":
            return it
        try:
            it = self._open(batch)
        except (RuntimeError, ValueError):  # "XNNPack delegate failed to reshape ..." and the like
            self.batch_method = "loop"
            return None
        if len(self._by_batch) > MAX_CACHED:  # drop the oldest resized one, never the exported one
            oldest = next(k for k in self._by_batch if k != self._base_batch)
            del self._by_batch[oldest]
        self._by_batch[batch] = it
        return it

    def get_inputs(self) -> list[Arg]:
        """The inputs, batch axis "batch" (any batch size runs), float32 to the caller."""
        return [Arg(d["name"], ["batch", *[int(s) for s in d["shape"][1:]]], FLOAT) for d in self._in]

    def get_outputs(self) -> list[Arg]:
        """The outputs, batch axis "batch", float32 (an int8 file's logits are dequantized)."""
        return [Arg(d["name"], ["batch", *[int(s) for s in d["shape"][1:]]], FLOAT) for d in self._out]

    def run(self, output_names, feed: dict) -> list[np.ndarray]:
        """Outputs (all when ``output_names`` is None) for ``feed`` {input name: array}, as float32 arrays."""
        if len(self._in_names) == 1 and len(feed) == 1 and self._in_names[0] not in feed:
            feed = {self._in_names[0]: next(iter(feed.values()))}  # one input: whatever the caller named it
        missing = [n for n in self._in_names if n not in feed]
        if missing:
            raise ValueError(f"{self.path.name}: missing input {missing[0]!r}; the model's inputs are "
                             f"{', '.join(self._in_names)}")
        xs = [self._quantize(i, np.asarray(feed[n])) for i, n in enumerate(self._in_names)]
        wanted = list(range(len(self._out))) if output_names is None else [self._out_index(n) for n in output_names]
        n = int(xs[0].shape[0])
        it = self._interpreter(n)
        if it is not None:
            outs = self._invoke(it, xs, wanted)
        else:
            parts = [self._invoke(self._by_batch[self._base_batch], [x[i:i + 1] for x in xs], wanted)
                     for i in range(n)]
            outs = [np.concatenate([p[k] for p in parts]) for k in range(len(wanted))]
        return [self._dequantize(k, o) for k, o in zip(wanted, outs)]

    def _out_index(self, name: str) -> int:
        if name not in self._out_names:
            raise ValueError(f"{self.path.name}: no output {name!r}; the model's outputs are {', '.join(self._out_names)}")
        return self._out_names.index(name)

    def _invoke(self, it, xs: list[np.ndarray], wanted: list[int]) -> list[np.ndarray]:
        for d, x in zip(self._in, xs):
            it.set_tensor(d["index"], x)
        it.invoke()
        # get_tensor copies: the interpreter's buffers are reused by its next invoke
        return [it.get_tensor(self._out[k]["index"]) for k in wanted]

    def _quantize(self, i: int, x: np.ndarray) -> np.ndarray:
        want = np.dtype(self._in[i]["dtype"])
        q = self._in_q[i]
        if q is None:
            return np.ascontiguousarray(x, dtype=want)
        scale, zero = q
        info = np.iinfo(want)
        return np.ascontiguousarray(np.clip(np.round(x.astype(np.float32) / scale + zero), info.min, info.max).astype(want))

    def _dequantize(self, k: int, out: np.ndarray) -> np.ndarray:
        q = self._out_q[k]
        if q is None:
            return out.astype(np.float32, copy=False)
        scale, zero = q
        return ((out.astype(np.float32) - np.float32(zero)) * np.float32(scale)).astype(np.float32)
