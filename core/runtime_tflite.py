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

# numpy dtype name -> onnxruntime type string; float and quantized tensors are float32 to the caller.
FLOAT = "tensor(float)"
ORT_TYPES = {"float32": FLOAT, "float64": "tensor(double)", "float16": "tensor(float16)", "int64": "tensor(int64)",
             "int32": "tensor(int32)", "uint8": "tensor(uint8)", "int8": "tensor(int8)", "bool": "tensor(bool)"}
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
    """(scale, zero point) of a quantized integer tensor, None for a float or plain integer one (token ids)."""
    if np.issubdtype(np.dtype(detail["dtype"]), np.floating):
        return None
    scale, zero = detail.get("quantization") or (0.0, 0)
    return (float(scale), int(zero)) if scale else None


def _type(detail: dict, quantized) -> str:
    """What the caller feeds or gets: float32 for float and quantized tensors, else the tensor's own type."""
    if quantized is not None:
        return FLOAT
    name = np.dtype(detail["dtype"]).name
    return ORT_TYPES.get(name, f"tensor({name})")


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
        self._in_index = [d["index"] for d in self._in]
        self._out_index_of = [d["index"] for d in self._out]
        self._in_dtype = [np.dtype(d["dtype"]) for d in self._in]
        self._in_range = [(np.float32(np.iinfo(t).min), np.float32(np.iinfo(t).max)) if t.kind in "iu" else None
                          for t in self._in_dtype]
        self._all_out = list(range(len(self._out)))

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
        """The inputs, batch axis "batch" (any batch size runs); a quantized one is float32 to the caller."""
        return [Arg(d["name"], ["batch", *[int(s) for s in d["shape"][1:]]], _type(d, q))
                for d, q in zip(self._in, self._in_q)]

    def get_outputs(self) -> list[Arg]:
        """The outputs, batch axis "batch"; an int8 file's logits are dequantized to float32."""
        return [Arg(d["name"], ["batch", *[int(s) for s in d["shape"][1:]]], _type(d, q))
                for d, q in zip(self._out, self._out_q)]

    def run(self, output_names, feed: dict) -> list[np.ndarray]:
        """Outputs (all when ``output_names`` is None) for ``feed`` {input name: array}, as float32 arrays."""
        if len(feed) == 1 and len(self._in_names) == 1:  # one input: whatever the caller named it
            xs = [self._quantize(0, next(iter(feed.values())))]
        else:
            missing = [n for n in self._in_names if n not in feed]
            if missing:
                raise ValueError(f"{self.path.name}: missing input {missing[0]!r}; the model's inputs are "
                                 f"{', '.join(self._in_names)}")
            xs = [self._quantize(i, feed[n]) for i, n in enumerate(self._in_names)]
        wanted = self._all_out if output_names is None else [self._out_index(n) for n in output_names]
        n = int(xs[0].shape[0])
        it = self._by_batch.get(n) or self._interpreter(n)
        if it is not None:
            outs = self._invoke(it, xs, wanted)
        else:
            base = self._by_batch[self._base_batch]
            parts = [self._invoke(base, [x[i:i + 1] for x in xs], wanted) for i in range(n)]
            outs = [np.concatenate([p[k] for p in parts]) for k in range(len(wanted))]
        return [self._dequantize(k, o) for k, o in zip(wanted, outs)]

    def _out_index(self, name: str) -> int:
        if name not in self._out_names:
            raise ValueError(f"{self.path.name}: no output {name!r}; the model's outputs are {', '.join(self._out_names)}")
        return self._out_names.index(name)

    def _invoke(self, it, xs: list[np.ndarray], wanted: list[int]) -> list[np.ndarray]:
        for index, x in zip(self._in_index, xs):
            it.set_tensor(index, x)
        it.invoke()
        # get_tensor copies: the interpreter's buffers are reused by its next invoke
        return [it.get_tensor(self._out_index_of[k]) for k in wanted]

    # Per call these are a few microseconds of numpy on a model that runs in a few: done in place,
    # with the constants looked up once in __init__.
    def _quantize(self, i: int, x) -> np.ndarray:
        want, q = self._in_dtype[i], self._in_q[i]
        if q is None:
            return x if type(x) is np.ndarray and x.dtype == want and x.flags.c_contiguous else \
                np.ascontiguousarray(x, dtype=want)
        scale, zero = q
        lo, hi = self._in_range[i]
        t = np.asarray(x, dtype=np.float32) / np.float32(scale)   # a new array: safe to work on in place
        t += np.float32(zero)
        np.rint(t, out=t)
        np.maximum(t, lo, out=t)   # two float32 bounds: several times cheaper than np.clip on tiny arrays
        np.minimum(t, hi, out=t)
        return t.astype(want)

    def _dequantize(self, k: int, out: np.ndarray) -> np.ndarray:
        q = self._out_q[k]
        if q is None:  # float outputs as float32 (what the harness compares); plain integer ones as they are
            return out.astype(np.float32, copy=False) if out.dtype.kind == "f" else out
        scale, zero = q
        t = out.astype(np.float32)
        t -= np.float32(zero)
        t *= np.float32(scale)
        return t
