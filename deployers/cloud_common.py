"""Small helpers shared by the cloud deployers (Spaces, Google Cloud): staging files, probing health."""
from __future__ import annotations

import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from deployers.base import Bundle, DeployError

TEMPLATES = Path(__file__).resolve().parent / "templates"


def copy_bundle(bundle: Bundle, out_dir: Path) -> list[str]:
    """Copy every bundle file into ``out_dir`` (created); returns the relative paths copied."""
    root = Path(bundle.path)
    if not (root / "model.json").is_file():
        raise DeployError(f"{root}: not a bundle (model.json missing); build it again with pocketops deploy")
    copied = []
    for rel, _size in bundle.files():
        dest = out_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, dest)
        copied.append(rel)
    return copied


def listing(folder: Path) -> list[dict]:
    """``[{"path", "size_bytes"}]`` of every file under ``folder``, sorted: what a plan shows."""
    return [{"path": p.relative_to(folder).as_posix(), "size_bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]


# What a bundle's predictor needs beside numpy for each runtime (core.runtimes names), with the
# ranges pocketops supports; ``pinned_requirements`` pins them to the versions installed here.
# ExecuTorch's Python runtime takes torch tensors, so a .pte needs torch too: the CPU wheel
# from PyTorch's own index (PyPI's Linux torch wheel carries ~2 GB of CUDA libraries).
RUNTIME_REQUIREMENTS = {
    "onnxruntime": ("onnxruntime>=1.20,<2",),
    "litert": ("ai-edge-litert>=2.3,<3",),
    "executorch": ("--extra-index-url https://download.pytorch.org/whl/cpu", "torch>=2.4,<2.15", "executorch>=1.5,<2"),
}
PINNED = ("numpy", "onnxruntime", "ai-edge-litert", "executorch", "torch")


def pinned_requirements(template: Path, runtime: str = "onnxruntime") -> str:
    """A template requirements.txt for a bundle on ``runtime``, pinned to the versions benchmarked here.

    The template's onnxruntime line is replaced by what ``runtime`` needs (RUNTIME_REQUIREMENTS);
    numpy and the runtime's packages are pinned to the installed versions, so the served
    predictor runs what measured the variant; where a package is not installed here, its range stays.
    """
    from importlib import metadata

    lines = []
    for line in template.read_text("utf-8").splitlines():
        name = _requirement_name(line)
        if name == "onnxruntime":
            lines += RUNTIME_REQUIREMENTS[runtime]
            continue
        lines.append(line)
    pinned = []
    for line in lines:
        name = _requirement_name(line)
        if name in PINNED:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
            else:
                # torch's local label (+cpu) names the CPU wheel on PyTorch's index; elsewhere none is published
                line = f"{name}=={version if name == 'torch' else version.split('+')[0]}"
        pinned.append(line)
    return "\n".join(pinned) + "\n"


def _requirement_name(line: str) -> str:
    return re.split(r"[<>=!~ ;\[]", line.strip(), maxsplit=1)[0].lower()


def probe_health(url: str, *, timeout: float = 5.0, headers: dict | None = None) -> tuple[float | None, str]:
    """GET ``url``/health once: (latency in ms or None, a short outcome for the deployment meta)."""
    request = urllib.request.Request(url.rstrip("/") + "/health", headers=headers or {})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            elapsed = (time.perf_counter() - started) * 1000
            return round(elapsed, 2), f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return None, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return None, f"unreachable ({getattr(exc, 'reason', exc)})"
