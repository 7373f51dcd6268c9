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


def pinned_requirements(template: Path) -> str:
    """A template requirements.txt with numpy/onnxruntime pinned to the versions benchmarked here.

    The served predictor then runs the same onnxruntime that measured the variant; where a
    package is not installed locally, the template's range stays.
    """
    from importlib import metadata

    lines = []
    for line in template.read_text("utf-8").splitlines():
        name = re.split(r"[<>=!~ ;\[]", line.strip(), maxsplit=1)[0]
        if name in ("numpy", "onnxruntime"):
            try:
                line = f"{name}=={metadata.version(name)}"
            except metadata.PackageNotFoundError:
                pass
        lines.append(line)
    return "\n".join(lines) + "\n"


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
