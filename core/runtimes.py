"""The runtimes a variant runs on, told apart by its file's suffix, behind one session shape.

    session = open_session("model.tflite", threads=1)
    name = session.get_inputs()[0].name
    logits = session.run(None, {name: x})[0]          # x: (batch, *sample_shape), any batch size

Every runtime's session looks like an onnxruntime ``InferenceSession`` to the code that measures
and serves it (``core.bench``, the bundle's predictor): ``get_inputs()``/``get_outputs()`` give
objects with ``name``, ``shape`` (the batch axis a string when any batch size runs) and ``type``
(onnxruntime's type string, ``tensor(float)``), ``run(None, feed)`` returns a list of float32
arrays. ``batch_method`` says how a batch of several samples runs: ``native`` (the model takes
it), ``resized`` (the runtime re-plans for that batch size once, then caches it) or ``loop``
(one call per sample: throughput then is batch-1 latency times the batch, said so in the figures).

This file ships INSIDE deploy bundles beside the predictor (with ``runtime_pte.py`` and
``runtime_tflite.py``), so it imports nothing of pocketops at module level.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

# Inside a bundle this file is the top-level module ``runtimes``: it then imports nothing of
# pocketops even where pocketops is installed (the local target runs bundles with its Python).
IN_BUNDLE = __name__ != "core.runtimes"
if not IN_BUNDLE:  # inside pocketops: the one error type every caller already shows as one line
    from core.errors import ConfigError as RuntimeMissing
else:
    class RuntimeMissing(RuntimeError):  # type: ignore[no-redef]
        """A runtime this model needs is not installed here; ``str()`` says what to do."""


@dataclass(frozen=True)
class Runtime:
    """One inference runtime: which files it loads, the import that proves it is here, where to get it."""

    name: str            # "onnxruntime" | "executorch" | "litert"
    label: str           # what the dashboard shows
    suffixes: tuple      # file suffixes it loads
    module: str          # the import that must succeed to load those files
    package: str         # the pip distribution(s) that bring it
    termux: str          # the honest way on a phone
    session: str         # "module:class" of its session adapter (``open_session`` imports it lazily)


RUNTIMES = {
    "onnxruntime": Runtime("onnxruntime", "ONNX Runtime", (".onnx", ".ort"), "onnxruntime", "onnxruntime",
                           "pkg install python-onnxruntime", "core.runtimes:OrtSession"),
    "executorch": Runtime("executorch", "ExecuTorch", (".pte",), "executorch.runtime", "executorch",
                          "no Termux wheel of executorch (its Python runtime also needs torch)",
                          "core.runtime_pte:PteSession"),
    "litert": Runtime("litert", "LiteRT", (".tflite",), "ai_edge_litert.interpreter", "ai-edge-litert",
                      "no Termux wheel of ai-edge-litert", "core.runtime_tflite:TfliteSession"),
}
SUFFIXES = {s: r for r in RUNTIMES.values() for s in r.suffixes}


def runtime_of(path: str | Path) -> Runtime:
    """The runtime that loads ``path`` (by its suffix); a one-line error for any other file."""
    suffix = Path(path).suffix.lower()
    found = SUFFIXES.get(suffix)
    if found is None:
        known = ", ".join(sorted(SUFFIXES))
        raise RuntimeMissing(f"{Path(path).name}: no runtime loads {suffix or 'files without a suffix'} files; "
                             f"expected one of {known}")
    return found


def missing(runtime: Runtime | str) -> str | None:
    """None when ``runtime`` can load models here, else why not (without importing it)."""
    rt = RUNTIMES[runtime] if isinstance(runtime, str) else runtime
    top = rt.module.split(".")[0]
    try:
        found = importlib.util.find_spec(top) is not None and importlib.util.find_spec(rt.module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"the Python package '{rt.package}' is not installed"


def require(path_or_runtime, purpose: str) -> Runtime:
    """The runtime for a file (or by name), or RuntimeMissing naming the package and the way forward."""
    rt = RUNTIMES[path_or_runtime] if path_or_runtime in RUNTIMES else runtime_of(path_or_runtime)
    why = missing(rt)
    if why:
        raise RuntimeMissing(
            f"{purpose} needs {rt.label}: {why}. On Linux: pip install '{rt.package}' (or "
            f"pip install 'pocketops[mobile]'); on Termux: {rt.termux}; or run it where it is installed "
            "(--on CLUSTER, or a laptop, then pocketops models add the file)")
    return rt


def open_session(path: str | Path, threads: int = 1, **options):
    """A session for ``path`` on its runtime with ``threads`` intra-op threads (see the module docstring).

    ``options`` go to the adapter (onnxruntime: ``profile_prefix``). A missing runtime is
    RuntimeMissing; a file the runtime cannot load raises the adapter's own one-line error.
    """
    rt = require(path, f"loading {Path(path).name}")
    module, _, cls = rt.session.partition(":")
    if IN_BUNDLE:  # the adapters copied beside this file, the ones the bundle's sha256 list covers
        module = module.rpartition(".")[2]
        adapter = getattr(sys.modules[__name__], cls) if module == __name__ else getattr(importlib.import_module(module), cls)
    else:
        adapter = getattr(importlib.import_module(module), cls)
    return adapter(Path(path), int(threads), **options)


class OrtSession:
    """onnxruntime's own InferenceSession, with the options every measurement uses."""

    batch_method = "native"
    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int, *, profile_prefix: str | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        if profile_prefix:
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
        self._s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def get_inputs(self):
        """onnxruntime's NodeArgs of the inputs."""
        return self._s.get_inputs()

    def get_outputs(self):
        """onnxruntime's NodeArgs of the outputs."""
        return self._s.get_outputs()

    def run(self, output_names, feed):
        """onnxruntime's run."""
        return self._s.run(output_names, feed)

    def end_profiling(self):
        """The profile trace's path (only with ``profile_prefix``)."""
        return self._s.end_profiling()


@dataclass(frozen=True)
class Arg:
    """What ``get_inputs()``/``get_outputs()`` give for the other runtimes (onnxruntime's NodeArg shape)."""

    name: str
    shape: list
    type: str


# numpy dtype name -> onnxruntime type string (what core.bench.check_input compares)
ORT_TYPES = {"float32": "tensor(float)", "float64": "tensor(double)", "float16": "tensor(float16)",
             "int64": "tensor(int64)", "int32": "tensor(int32)", "uint8": "tensor(uint8)", "int8": "tensor(int8)"}


# The flatbuffer file identifier (bytes 4..8) each app runtime's files carry: a file that lacks
# it is refused before anything is registered, even where the runtime is not installed to load it.
# ExecuTorch writes "ET" + its schema version ("ET12"), LiteRT keeps TensorFlow Lite's "TFL3".
IDENTIFIERS = {".pte": b"ET", ".tflite": b"TFL3"}


def check_file(path: str | Path) -> Runtime:
    """The runtime of ``path``, after checking its content is what its suffix says (RuntimeMissing if not)."""
    rt = runtime_of(path)
    want = IDENTIFIERS.get(Path(path).suffix.lower())
    if want is not None:
        with open(path, "rb") as f:
            head = f.read(8)
        if head[4:4 + len(want)] != want:
            raise RuntimeMissing(f"{Path(path).name}: not a {rt.label} model file (a {Path(path).suffix} file carries the "
                                 f"identifier {want.decode()!r} at byte 4, this one has {head[4:8]!r}); "
                                 "export it again or give the file its right suffix")
    return rt
