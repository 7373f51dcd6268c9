"""The static page: the bundle's model running in the visitor's browser with onnxruntime-web.

``build_static_site`` writes index.html + app.js + model.onnx + model.json into a folder that
any static host serves (a static Hugging Face Space, GitHub Pages, ``python -m http.server``).
onnxruntime-web comes from its CDN unless ``vendor_ort`` names a folder holding its files.
"""
from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path

from core.atomic import write_text
from deployers.base import Bundle, DeployError

ORT_VERSION = "1.30.0"
ORT_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_VERSION}/dist/"
# The wasm-only build: ort.min.js first looks for the jsep variant and fails without it.
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
TEMPLATES = Path(__file__).resolve().parent / "templates" / "static"
SITE_FILES = ("index.html", "app.js", "model.onnx", "model.json")


def find_ort(folder: str | os.PathLike) -> Path:
    """The folder holding the onnxruntime-web files: ``folder`` itself, its ``dist/`` or an npm install under it."""
    folder = Path(folder).expanduser()
    for candidate in (folder, folder / "dist", folder / "node_modules" / "onnxruntime-web" / "dist"):
        if all((candidate / name).is_file() for name in ORT_FILES):
            return candidate
    missing = [name for name in ORT_FILES if not (folder / name).is_file()]
    raise DeployError(f"--vendor-ort {folder}: missing {', '.join(missing)}; run "
                      f"`npm install onnxruntime-web@{ORT_VERSION}` and pass its node_modules/onnxruntime-web/dist")


def page_model_json(model_json: dict) -> dict:
    """What the page needs from model.json (nothing about the server or the reference sample)."""
    keep = ("format", "version", "variant", "labels", "input", "preprocessing", "output", "sha256", "dataset")
    return {k: model_json[k] for k in keep if k in model_json}


def build_static_site(bundle: Bundle, out_dir: str | os.PathLike, vendor_ort: str | os.PathLike | None = None) -> list[dict]:
    """Write the page for ``bundle`` into ``out_dir``; returns its files as ``{"path", "size_bytes"}``, sorted."""
    from deployers.targets import refusal

    out = Path(out_dir)
    info = bundle.model_json or json.loads((Path(bundle.path) / "model.json").read_text("utf-8"))
    why = refusal("spaces-static", info.get("model_file", "model.onnx"), f"bundle {bundle.version}")
    if why:  # before any file is written: onnxruntime-web would fail only in the visitor's browser
        raise DeployError(why)
    out.mkdir(parents=True, exist_ok=True)
    if vendor_ort:
        ort_dir = find_ort(vendor_ort)
        (out / "ort").mkdir(exist_ok=True)
        for name in ORT_FILES:
            shutil.copyfile(ort_dir / name, out / "ort" / name)
        ort_script = "ort/ort.wasm.min.js"
        wasm_paths = 'new URL("ort/", location.href).href'  # onnxruntime-web wants an absolute URL
    else:
        ort_script = ORT_CDN + "ort.wasm.min.js"
        wasm_paths = json.dumps(ORT_CDN)
    title = f"{info.get('dataset') or 'model'} · {info.get('variant') or ''}".strip(" ·")
    page = (TEMPLATES / "index.html").read_text("utf-8")
    for key, value in {"{{TITLE}}": html.escape(f"pocketops: {title}"), "{{VERSION}}": html.escape(str(info.get("version", ""))),
                       "{{ORT_SCRIPT}}": html.escape(ort_script), "{{WASM_PATHS}}": wasm_paths}.items():
        page = page.replace(key, value)
    write_text(out / "index.html", page)
    shutil.copyfile(TEMPLATES / "app.js", out / "app.js")
    shutil.copyfile(Path(bundle.path) / info.get("model_file", "model.onnx"), out / "model.onnx")
    write_text(out / "model.json", json.dumps(page_model_json(info), indent=2, sort_keys=True) + "\n")
    return sorted(
        ({"path": p.relative_to(out).as_posix(), "size_bytes": p.stat().st_size} for p in out.rglob("*") if p.is_file()),
        key=lambda f: f["path"],
    )
