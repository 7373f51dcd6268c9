"""Torch → ONNX: one self-contained file, dynamic batch axis, verified against torch before use.

Facts this follows (``FACTS.md``): the dynamo exporter needs ``onnx`` and ``onnxscript``; it
writes weights to a side file unless ``external_data=False``; an example batch of 1 can fix the
batch size of a transformer, so the example batch is 2; ``verbose=False`` keeps it quiet.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from core.atomic import no_space_as_error, write_bytes
from core.errors import PocketopsError
from core.optional import require

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXAMPLE_BATCH = 2


class ExportMismatch(PocketopsError):
    """The exported model does not compute what the torch model computes."""


@dataclass(frozen=True)
class Verification:
    """How closely the ONNX model follows torch on the same samples."""

    samples: int
    agreement: float            # share of samples with the same top-1 class
    max_abs_logit_diff: float

    def as_dict(self) -> dict:
        """The figures as a plain dict for JSON and job results."""
        return {"samples": self.samples, "agreement": self.agreement, "max_abs_logit_diff": self.max_abs_logit_diff}


def require_export_tools(purpose: str = "ONNX export") -> None:
    """Fail at once, before anything is written, if the exporter cannot run here."""
    require("onnx", purpose)
    require("onnxscript", purpose)
    require("torch", purpose)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporter's prints, warnings and log lines out of the dashboard and JSON output."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    sink = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def example_input(input_shape: Sequence[int], input_dtype: str = "float32", batch: int = EXAMPLE_BATCH, *, vocab: int = 2):
    """A deterministic torch batch of the model's input spec (token ids stay below ``vocab``)."""
    torch = require("torch", "ONNX export")
    gen = torch.Generator().manual_seed(0)
    shape = (batch, *[int(d) for d in input_shape])
    if np.dtype(input_dtype).kind in "iu":
        return torch.randint(0, max(int(vocab), 1), shape, generator=gen, dtype=torch.int64)
    return torch.rand(shape, generator=gen, dtype=torch.float32)


def export_onnx(model, input_shape: Sequence[int], path: str | Path, *, input_dtype: str = "float32",
                vocab: int = 2, example=None) -> Path:
    """Export ``model`` (eval mode) to one ``.onnx`` file at ``path``, written atomically.

    The batch axis is dynamic; ``example`` (a real batch of 2) beats a synthetic one when given.
    """
    require_export_tools()
    torch = require("torch", "ONNX export")
    path = Path(path)
    model = model.eval()
    x = example if example is not None else example_input(input_shape, input_dtype, vocab=vocab)
    if x.shape[0] != EXAMPLE_BATCH:
        x = x[:EXAMPLE_BATCH]
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter stages in the temp directory: a full /tmp is reported as the variant that could not be written.
    with no_space_as_error(path, what="ONNX export"), tempfile.TemporaryDirectory(prefix="pocketops-export-") as tmp, \
            _quiet(), torch.no_grad():
        program = torch.onnx.export(
            model, (x,), None, dynamo=True, external_data=False, verbose=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},),
        )
        staging = Path(tmp) / "model.onnx"
        program.save(str(staging))
        if any(p.name != "model.onnx" for p in Path(tmp).iterdir()):
            raise PocketopsError(f"{path.name}: the exporter wrote weights to a side file; expected one self-contained .onnx")
        data = strip_metadata(staging.read_bytes())
    write_bytes(path, data, what="ONNX export")
    return path


def strip_metadata(data: bytes) -> bytes:
    """Drop what the exporter records for debugging from a serialized model.

    Per-node stack traces, FX node text and module paths take ~5 % of a small model's file and
    carry this machine's source paths into every deployed copy; shapes recorded for weights go
    stale once an optimizer transposes them (and then shape inference refuses the model).
    """
    onnx = require("onnx", "ONNX export")
    model = onnx.load_from_string(data)
    graph = model.graph
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    weights = {init.name for init in graph.initializer}
    kept = [vi for vi in graph.value_info if vi.name not in weights]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    for item in [*graph.value_info, *graph.initializer, *graph.input, *graph.output]:
        del item.metadata_props[:]
    _short_names(graph)
    return model.SerializeToString()


def _short_names(graph) -> None:
    """Rename internal tensors and nodes to short ids (``t12``, ``n3``); inputs/outputs keep theirs.

    Module paths as tensor names cost a few KB, a visible share of a tiny int8 file. Graphs with
    sub-graphs (If/Loop) are left alone: their inner references would need the same renaming.
    """
    if any(attr.type in (5, 10) for node in graph.node for attr in node.attribute):  # GRAPH, GRAPHS
        return
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for init in graph.initializer:
        init.name = short(init.name)
    for i, node in enumerate(graph.node):
        node.name = f"n{i}"
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    for vi in graph.value_info:
        vi.name = short(vi.name)


def torch_logits(model, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The torch model's logits for ``X`` (numpy in, numpy out)."""
    torch = require("torch", "verifying an export")
    out = []
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(X[start:start + batch_size]))
            out.append(model(chunk).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def onnx_logits(path: str | Path, X: np.ndarray, *, threads: int = 1, batch_size: int = 256) -> np.ndarray:
    """Logits of an ONNX file on ``X`` with onnxruntime only."""
    ort = require("onnxruntime", "running an ONNX model")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: np.ascontiguousarray(X[s:s + batch_size])})[0] for s in range(0, len(X), batch_size)]
    return np.concatenate(out).astype(np.float32)


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> Verification:
    """Top-1 agreement and max |Δlogit| between two logit tables of the same samples."""
    if reference.shape != candidate.shape:
        raise ExportMismatch(f"logits shape differs: expected {reference.shape}, found {candidate.shape}")
    n = len(reference)
    agreement = float(np.mean(reference.argmax(1) == candidate.argmax(1))) if n else 1.0
    diff = float(np.max(np.abs(reference.astype(np.float64) - candidate))) if n else 0.0
    return Verification(samples=n, agreement=agreement, max_abs_logit_diff=diff)


def verify(model, path: str | Path, X: np.ndarray, *, atol: float = 1e-3, min_agreement: float = 0.99) -> Verification:
    """Compare the ONNX file with torch on ``X``; refuse it with the figures if they differ."""
    result = compare_logits(torch_logits(model, X), onnx_logits(path, X))
    if result.agreement < min_agreement or result.max_abs_logit_diff > atol:
        raise ExportMismatch(
            f"{Path(path).name}: ONNX output differs from torch on {result.samples} test samples "
            f"(top-1 agreement {result.agreement:.1%}, expected ≥ {min_agreement:.0%}; "
            f"max |Δlogit| {result.max_abs_logit_diff:.2e}, expected ≤ {atol:.0e}); "
            "the file was not registered. Report the model config; export with a newer torch may help"
        )
    return result


@contextlib.contextmanager
def torch_contender(model, X: np.ndarray, threads: int = 1) -> Iterator[dict]:
    """The torch eager baseline as an extra contender for ``core.bench.measure``: ``{"torch": call}``.

    Inside, torch runs with ``threads`` threads in inference mode, timed at batch 1 on the same
    samples as the ONNX variants; ``{}`` when ``model`` is None.
    """
    if model is None:
        yield {}
        return
    torch = require("torch", "the torch eager baseline")
    before = torch.get_num_threads()
    singles = [torch.from_numpy(np.ascontiguousarray(X[i:i + 1])) for i in range(min(len(X), 64))]
    torch.set_num_threads(int(threads))
    try:
        with torch.inference_mode():
            yield {"torch": lambda i: model(singles[i % len(singles)])}
    finally:
        torch.set_num_threads(before)
