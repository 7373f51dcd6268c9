"""Optional dependencies: a missing one is a clear message, never a traceback.

Several extras have no pip wheel on Termux (torch, onnxruntime, numpy) and one has no Termux
build at all (onnx); the message says how to get each on Linux and on Termux.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Extra:
    """Where a missing package comes from: the pip name, the pocketops extra, the way on Termux."""
    package: str      # the pip distribution
    extra: str        # pocketops extra that brings it
    termux: str       # how to get it on Termux


KNOWN: dict[str, Extra] = {
    "torch": Extra("torch==2.13.0", "train", "pkg install python-torch; or train on a laptop, export there and "
                   "copy the .onnx over (pocketops models add)"),
    "onnx": Extra("onnx", "export", "no Termux build exists: export on a laptop and copy the .onnx over (pocketops models add)"),
    "onnxscript": Extra("onnxscript", "export", "no Termux build of its dependency onnx: export on a laptop"),
    "onnxruntime": Extra("onnxruntime", "serve", "pkg install python-onnxruntime"),
    "onnxconverter_common": Extra("onnxconverter-common", "export", "no Termux build of its dependency onnx: export on a laptop"),
    "PIL": Extra("Pillow", "images", "pkg install python-pillow"),
    "huggingface_hub": Extra("huggingface_hub", "hf", "pip install huggingface_hub (needs hf-xet, which may fail to build on aarch64)"),
    "google.cloud.functions_v2": Extra("google-cloud-functions", "gcp", "pkg install python-grpcio, then pip install google-cloud-functions"),
    "google.cloud.run_v2": Extra("google-cloud-run", "gcp", "pkg install python-grpcio, then pip install google-cloud-run"),
    "google.cloud.monitoring_v3": Extra("google-cloud-monitoring", "gcp", "pkg install python-grpcio, then pip install google-cloud-monitoring"),
    "optuna": Extra("optuna", "sweep", "pip install optuna (pure Python)"),
    "functions_framework": Extra("functions-framework", "gcp", "pip install functions-framework"),
}


def _lookup(module: str) -> Extra:
    """The entry for ``module`` or its nearest known parent (``onnxconverter_common.float16``
    is the ``onnxconverter-common`` package); unknown modules are named as they are."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = KNOWN.get(".".join(parts[:end]))
        if found is not None:
            return found
    return Extra(parts[0], "all", f"pip install {parts[0]}")


class MissingDependency(RuntimeError):
    """An optional package is not installed; ``str()`` says what to install where."""

    def __init__(self, module: str, purpose: str):
        self.module = module
        self.purpose = purpose
        info = _lookup(module)
        super().__init__(
            f"{purpose} needs the Python package '{info.package}', which is not installed. "
            f"On Linux: pip install 'pocketops[{info.extra}]' (or make install). "
            f"On Termux: {info.termux}."
        )


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming it and how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name and not (module == exc.name or module.startswith(exc.name + ".") or exc.name.startswith(module)):
            # The module exists but one of *its* dependencies is missing: name that one.
            raise MissingDependency(exc.name, purpose) from exc
        raise MissingDependency(module, purpose) from exc


def require_installed(module: str, purpose: str) -> None:
    """Raise :class:`MissingDependency` unless ``module`` is installed, without importing it.

    For commands that only queue work (``train``): importing torch to check costs ~2 s here.
    """
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module blocked in sys.modules
        found = False
    if not found:
        raise MissingDependency(module, purpose)


def available(module: str) -> bool:
    """True if ``module`` imports here (it is imported to find out)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
