"""ExecuTorch ``.pte`` programs behind the onnxruntime-shaped session of ``core.runtimes``.

Ships INSIDE deploy bundles beside the predictor: stdlib + numpy + executorch (whose Python
runtime needs torch) only, nothing of pocketops at module level.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INPUT_NAME = "input"      # ExecuTorch keeps no tensor names; these match pocketops' ONNX files
OUTPUT_NAME = "logits"
# Constant method pocketops' exporter (core.export_executorch) adds to every .pte it writes:
# the largest batch the program was exported for (0: the batch axis is fixed).
BATCH_MAX_METHOD = "pocketops_batch_max"

# ExecuTorch ScalarType codes (runtime/core/portable_type/scalar_type.h) -> numpy dtype names.
SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64",
                11: "bool"}
ORT_TYPES = {"float32": "tensor(float)", "float64": "tensor(double)", "float16": "tensor(float16)",
             "int64": "tensor(int64)", "int32": "tensor(int32)", "int16": "tensor(int16)", "uint8": "tensor(uint8)",
             "int8": "tensor(int8)", "bool": "tensor(bool)"}
@dataclass(frozen=True)
class Arg:
    """What ``get_inputs()``/``get_outputs()`` give (onnxruntime's NodeArg shape)."""

    name: str
    shape: list
    type: str


@contextlib.contextmanager
def silenced():
    """Nothing reaches the terminal meanwhile. executorch's pybindings send the C++ log lines
    (cpuinfo, threadpool) to Python's sys.stderr, torch's loggers carry their own handlers and
    levels, and native code may write to the descriptors themselves: all three are covered."""
    disabled = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = []
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    except OSError:  # no real descriptors here (an embedded interpreter): Python-level silence only
        pass
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for fd, copy in reversed(saved):
            os.dup2(copy, fd)
            os.close(copy)
        logging.disable(disabled)


def _import_runtime():
    """executorch's Runtime and its pybindings module, imported quietly."""
    with silenced():
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        return Runtime.get(), portable_lib


class PteSession:
    """An ExecuTorch program's ``forward`` method, run like an onnxruntime session on numpy arrays.

    Threads: the XNNPACK delegate runs on ExecuTorch's ONE process-wide threadpool, which its
    Python runtime only lets us resize (``_unsafe_reset_threadpool``, unsafe while another call is
    executing). Opening a session sets that pool to ``threads``, so the last session opened in a
    process decides for all of them (``threads_note`` says so; ``threads`` is what the pool has).

    Batches: a program exported with a dynamic batch axis (pocketops records its bound in the
    constant method ``pocketops_batch_max``) runs any batch natively, in chunks of that bound;
    a program fixed at batch 1 runs one call per sample (``batch_method = "loop"``); one fixed at
    another batch size runs only that size (its input shape says so, as onnxruntime's would).
    """

    runtime = "executorch"
    threads_note = ("ExecuTorch's threadpool is process-wide: the last session opened sets it for every "
                    ".pte session in the process")

    def __init__(self, path: Path, threads: int = 1):
        path = Path(path)
        rt, lib = _import_runtime()
        with silenced():
            if threads and lib._threadpool_get_thread_count() != int(threads):
                lib._unsafe_reset_threadpool(int(threads))
            self.threads = int(lib._threadpool_get_thread_count())
            try:
                program = rt.load_program(path)
                if "forward" not in program.method_names:
                    raise ValueError(f"it has no forward method (methods: {', '.join(sorted(program.method_names))})")
                self._method = program.load_method("forward")
                meta = self._method.metadata
                if meta.num_inputs() != 1 or meta.num_outputs() != 1:
                    raise ValueError(f"forward takes {meta.num_inputs()} inputs and gives {meta.num_outputs()} "
                                     "outputs; pocketops serves models with one input and one output")
                inp, out = meta.input_tensor_meta(0), meta.output_tensor_meta(0)
                self._in_sizes = [int(s) for s in inp.sizes()]
                self._dtype = np.dtype(SCALAR_TYPES.get(int(inp.dtype()), "float32"))
                out_dtype = SCALAR_TYPES.get(int(out.dtype()), "float32")
                out_sizes = [int(s) for s in out.sizes()]
                self._bound = self._batch_bound(program)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                raise ValueError(f"{path.name}: ExecuTorch cannot load this program ({type(exc).__name__}: {first})") from None
        self._program = program  # the method borrows the program's buffers
        lead = self._in_sizes[0] if self._in_sizes else 1
        if self._bound:
            self.batch_method, batch = "native", "batch"
        elif lead == 1:
            self.batch_method, batch = "loop", "batch"
        else:
            self.batch_method, batch = "fixed", lead
        self.batch_max = self._bound or lead
        self._inputs = [Arg(INPUT_NAME, [batch, *self._in_sizes[1:]], ORT_TYPES.get(self._dtype.name, "tensor(float)"))]
        self._outputs = [Arg(OUTPUT_NAME, [batch, *out_sizes[1:]], ORT_TYPES.get(out_dtype, "tensor(float)"))]

    def _batch_bound(self, program) -> int:
        """The largest batch the dynamic batch axis takes, or 0 when it is fixed."""
        lead = self._in_sizes[0] if self._in_sizes else 1
        if BATCH_MAX_METHOD in program.method_names:
            # The planned input's first size is the bound the memory plan really holds (it can be
            # tighter than what was asked for at export).
            declared = int(program.load_method(BATCH_MAX_METHOD).execute([])[0])
            return min(declared, lead) if declared > 0 else 0
        if lead <= 1:
            return 0
        # A program made elsewhere: its input's first size is the bound if a batch of 1 also runs.
        import torch

        try:
            self._method.execute([torch.zeros([1, *self._in_sizes[1:]], dtype=getattr(torch, self._dtype.name))])
        except Exception:  # a fixed batch axis: resizing it is refused
            return 0
        return lead

    def get_inputs(self) -> list[Arg]:
        """The one input: name ``input``, shape with the batch axis ``"batch"`` where any batch runs."""
        return list(self._inputs)

    def get_outputs(self) -> list[Arg]:
        """The one output: name ``logits``."""
        return list(self._outputs)

    def run(self, output_names, feed: dict) -> list[np.ndarray]:
        """``[logits]`` as float32 for the one array in ``feed`` (any batch size unless the axis is fixed)."""
        import torch

        if len(feed) != 1:
            raise ValueError(f"feed one input ({INPUT_NAME!r}), not {len(feed)}")
        x = np.ascontiguousarray(next(iter(feed.values())), dtype=self._dtype)
        if list(x.shape[1:]) != self._in_sizes[1:]:
            raise ValueError(f"input {INPUT_NAME!r} expects samples of shape {self._in_sizes[1:]}, got {list(x.shape[1:])}")
        n = len(x)
        if self.batch_method == "fixed" and n != self.batch_max:
            raise ValueError(f"input {INPUT_NAME!r} has a fixed batch size of {self.batch_max}, got {n}")
        step = 1 if self.batch_method == "loop" else self.batch_max
        if n <= step:
            return [self._call(torch, x)]
        return [np.concatenate([self._call(torch, x[s:s + step]) for s in range(0, n, step)])]

    def _call(self, torch, x: np.ndarray) -> np.ndarray:
        out = self._method.execute([torch.from_numpy(x)])[0]
        # The output may live in the program's planned memory, which the next call overwrites.
        return np.array(out.numpy(), dtype=np.float32, copy=True)
