"""Datasets: validate user input, turn it into arrays once, register them in the store.

Three kinds come from the user — ``csv`` (numeric features + a label column), ``images`` (a
folder with one sub-folder per class) and ``text`` (a CSV with ``text,label``) — and one is
built in (``digits``). Each is processed once into an ``.npz`` of arrays under the files
directory; training, export and the dashboard read that file, never the original.

No torch here: the dashboard and the CLI import this module. Pillow is imported lazily.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core import paths
from core.atomic import atomic_open, sha256_file
from core.errors import DatasetError
from store import artifacts as store_artifacts
from store import datasets as store_datasets
from store.db import transaction

KINDS = ("csv", "images", "text")
BUILTIN_NAME = "digits"
BUILTIN_FILE = Path(__file__).resolve().parent / "data" / "digits.npz"
IMAGE_SIZE = (16, 16)  # (height, width) user images are resized to
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
TEXT_MAX_LEN = 256      # bytes kept per text; longer ones are truncated (said in meta)
TEXT_ENCODING = "utf-8 bytes + 1, 0 = pad"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class Arrays:
    """A dataset ready to train on: inputs, integer labels and how to rebuild inputs later."""

    X: np.ndarray
    y: np.ndarray
    classes: list[str]
    kind: str
    input_shape: list[int]
    input_dtype: str
    meta: dict = field(default_factory=dict)
    fingerprint: str = ""
    name: str = ""


@dataclass
class _Processed:
    """What parsing produced, before anything is written."""

    raw: np.ndarray          # stored as is: uint8 images, float32 features, uint16 tokens
    y: np.ndarray
    classes: list[str]
    kind: str
    meta: dict

    @property
    def input_shape(self) -> list[int]:
        return [int(d) for d in self.raw.shape[1:]]


# -- fingerprint and storage -------------------------------------------------------------

def fingerprint(raw: np.ndarray, y: np.ndarray, classes: list[str]) -> str:
    """sha256 over the processed arrays (dtype, shape, bytes) and the class names."""
    digest = hashlib.sha256()
    for arr in (raw, y):
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr.tobytes())
    digest.update(json.dumps(classes).encode())
    return digest.hexdigest()


def _write_npz(path: Path, proc: _Processed) -> None:
    buf = io.BytesIO()
    # Uncompressed: loads in a millisecond or two, and these arrays are small anyway.
    np.savez(buf, raw=proc.raw, y=proc.y, classes=np.array(proc.classes, dtype=str))
    data = buf.getvalue()
    with atomic_open(path, size=len(data), what="dataset arrays") as handle:
        handle.write(data)


def _register(db, db_path, proc: _Processed, *, name: str, source: str | None, kind: str) -> dict:
    """Write the arrays file and register artifact + dataset row in one transaction."""
    fp = fingerprint(proc.raw, proc.y, proc.classes)
    path = paths.artifact_dir(db_path, "datasets") / f"{name}-{fp[:12]}.npz"
    existed = path.exists()
    if not existed:
        _write_npz(path, proc)
    counts = np.bincount(proc.y, minlength=len(proc.classes)).tolist()
    try:
        with transaction(db):
            if store_datasets.by_name(db, name) is not None:
                raise DatasetError(f"a dataset named {name!r} already exists", hint="Pick another name with --name, or delete the old one")
            store_artifacts.register(db, kind="dataset", path=str(path), sha256=sha256_file(path),
                                     size_bytes=path.stat().st_size, meta={"dataset": name, "fingerprint": fp})
            store_datasets.insert(
                db, name=name, kind=kind, source=source, fingerprint=fp, rows_count=int(len(proc.y)),
                classes=proc.classes, class_counts=counts, input_shape=proc.input_shape,
                artifact_path=str(path), meta=proc.meta,
            )
    except BaseException:
        # Our own file from a moment ago, unless another process registered the same one
        # meanwhile (two first starts racing to register digits).
        if not existed and store_artifacts.by_path(db, str(path)) is None:
            path.unlink(missing_ok=True)
        raise
    return store_datasets.by_name(db, name)


# -- built-in ----------------------------------------------------------------------------

def _digits() -> _Processed:
    with np.load(BUILTIN_FILE) as data:
        images, labels = data["images"], data["labels"]
    raw = images.astype(np.uint8)[:, None, :, :]
    meta = {"type": "image", "height": 8, "width": 8, "channels": 1, "scale": 1 / 16,
            "source": "UCI Optical Recognition of Handwritten Digits (CC BY 4.0)",
            "preprocessing": "8x8 grayscale, pixel values 0..16 divided by 16"}
    return _Processed(raw=raw, y=labels.astype(np.int64), classes=[str(i) for i in range(10)], kind="images", meta=meta)


def ensure_builtin(db, db_path) -> None:
    """Register the built-in ``digits`` dataset unless it is there (one SELECT when it is)."""
    if store_datasets.by_name(db, BUILTIN_NAME) is not None:
        return
    try:
        _register(db, db_path, _digits(), name=BUILTIN_NAME, source=str(BUILTIN_FILE), kind="builtin")
    except DatasetError:
        if store_datasets.by_name(db, BUILTIN_NAME) is None:
            raise  # not a lost race with another process: a real problem


# -- user datasets -----------------------------------------------------------------------

def add_dataset(db, db_path, path, *, name: str | None = None, kind: str | None = None,
                label_column: str | None = None, image_size: tuple[int, int] = IMAGE_SIZE) -> dict:
    """Validate ``path``, store its processed arrays and register it; returns the dataset row."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError("no such file or folder", file=str(path), hint="Check the path")
    kind = kind or infer_kind(path)
    if kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}", expected=" | ".join(KINDS), found=repr(kind))
    name = name or (path.name if path.is_dir() else path.stem)
    if not _NAME_RE.match(name):
        raise DatasetError(f"dataset name {name!r} is not usable", expected="letters, digits, '.', '_' or '-' (up to 64, starting with a letter or digit)",
                           found=repr(name), hint="Pass --name")
    if kind == "images" and not path.is_dir():
        raise DatasetError("an image dataset is a folder with one sub-folder per class", file=str(path), found="a file")
    if kind != "images" and path.is_dir():
        raise DatasetError(f"a {kind} dataset is a CSV file", file=str(path), found="a folder", hint="Pass --kind images for an image folder")
    if store_datasets.by_name(db, name) is not None:
        raise DatasetError(f"a dataset named {name!r} already exists", hint="Pick another name with --name, or delete the old one")
    try:
        if kind == "images":
            proc = _parse_images(path, image_size)
        else:
            header, body = _read_csv(path)
            proc = _parse_text(path, header, body, label_column) if kind == "text" else _parse_csv(path, header, body, label_column)
    except OSError as exc:  # unreadable file or folder (permissions, a vanished card, ...)
        raise DatasetError(f"cannot be read: {exc.strerror or exc}", file=str(exc.filename or path),
                           hint="Check that the file exists and that you may read it") from None
    _check_classes(path, proc)
    return _register(db, db_path, proc, name=name, source=str(path.resolve()), kind=kind)


def infer_kind(path: Path) -> str:
    """Folder → images; CSV whose ``text`` column is not numeric → text; else csv."""
    if path.is_dir():
        return "images"
    try:
        header, body = _read_csv(path)
    except DatasetError:
        return "csv"  # let the csv parser report the problem in full
    if "text" in header:
        col = header.index("text")
        if any(len(r) > col and r[col].strip() and not _is_number(r[col]) for _, r in body[:50]):
            return "text"
    return "csv"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (file row number, cells) of each non-blank data row; header is row 1."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        row = data[: exc.start].count(b"\n") + 1
        raise DatasetError("is not UTF-8 text", file=str(path), row=row, expected="UTF-8",
                           found=f"byte 0x{data[exc.start]:02x} at offset {exc.start}",
                           hint="Re-save the file as UTF-8") from None
    if not text.strip():
        raise DatasetError("the file is empty", file=str(path), expected="a header row and at least two data rows", found="nothing")
    # strict: a quote opened and never closed is an error, not one cell swallowing the rest of the file
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        records = [(reader.line_num, r) for r in reader]
    except csv.Error as exc:
        raise DatasetError(f"is not valid CSV: {exc}", file=str(path), row=reader.line_num,
                           hint='Check for a quote (") that is opened but never closed, or text right after a closing quote') from None
    records = [(n, r) for n, r in records if any(c.strip() for c in r)]
    header_row, header = records[0]
    header = [h.strip() for h in header]
    body = records[1:]
    if not body:
        raise DatasetError("has a header but no data rows", file=str(path), expected="at least two rows per class", found="0 data rows")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DatasetError("has duplicate column names", file=str(path), row=header_row, found=", ".join(dupes), hint="Rename the columns")
    for n, r in body:
        if len(r) != len(header):
            raise DatasetError("has a different number of cells than the header", file=str(path), row=n,
                               expected=f"{len(header)} cells", found=f"{len(r)} cells", hint="Every row needs one value per column")
    return header, body


def _label_index(path: Path, header: list[str], label_column: str | None, default: str | None = "label") -> int:
    if label_column is not None:
        if label_column not in header:
            raise DatasetError(f"has no label column {label_column!r}", file=str(path), column=label_column,
                               expected=f"a column named {label_column!r}", found="columns " + ", ".join(header),
                               hint="Pass --label-column with one of the columns found")
        return header.index(label_column)
    if default and default in header:
        return header.index(default)
    return len(header) - 1


def _labels(body: list[tuple[int, list[str]]], col: int) -> tuple[np.ndarray, list[str]]:
    values = [r[col].strip() for _, r in body]
    names = sorted(set(values), key=lambda v: (0, float(v), v) if _is_number(v) else (1, 0.0, v))
    index = {v: i for i, v in enumerate(names)}
    return np.array([index[v] for v in values], dtype=np.int64), names


def _parse_csv(path: Path, header: list[str], body, label_column: str | None) -> _Processed:
    if len(header) < 2:
        raise DatasetError("needs at least one feature column and a label column", file=str(path),
                           found="columns " + ", ".join(header))
    lab = _label_index(path, header, label_column)
    features = [h for i, h in enumerate(header) if i != lab]
    X = np.empty((len(body), len(features)), dtype=np.float32)
    for r_i, (n, r) in enumerate(body):
        if not r[lab].strip():
            raise DatasetError("has an empty label", file=str(path), row=n, column=header[lab], expected="a class name", found="''")
        j = 0
        for i, cell in enumerate(r):
            if i == lab:
                continue
            try:
                value = float(cell)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value):
                raise DatasetError("is not a number", file=str(path), row=n, column=header[i],
                                   expected="a finite number", found=repr(cell),
                                   hint="Fix or remove that row (feature columns must be numeric)")
            X[r_i, j] = value
            j += 1
    y, classes = _labels(body, lab)
    meta = {"type": "tabular", "features": features, "label_column": header[lab],
            "preprocessing": "raw feature values; the model standardises them itself"}
    return _Processed(raw=X, y=y, classes=classes, kind="csv", meta=meta)


def _parse_text(path: Path, header: list[str], body, label_column: str | None) -> _Processed:
    if "text" not in header:
        raise DatasetError("has no 'text' column", file=str(path), column="text", expected="columns text,label",
                           found="columns " + ", ".join(header))
    t_col = header.index("text")
    lab = _label_index(path, header, label_column)
    if lab == t_col:
        raise DatasetError("needs a label column besides 'text'", file=str(path), expected="columns text,label",
                           found="columns " + ", ".join(header))
    encoded = []
    for n, r in body:
        if not r[t_col].strip():
            raise DatasetError("has an empty text", file=str(path), row=n, column="text", expected="some text", found="''")
        if not r[lab].strip():
            raise DatasetError("has an empty label", file=str(path), row=n, column=header[lab], expected="a class name", found="''")
        encoded.append(r[t_col].encode("utf-8"))
    longest = max(len(b) for b in encoded)
    max_len = max(8, min(TEXT_MAX_LEN, longest))
    tokens = np.zeros((len(encoded), max_len), dtype=np.uint16)
    for i, b in enumerate(encoded):
        b = b[:max_len]
        tokens[i, : len(b)] = np.frombuffer(b, dtype=np.uint8).astype(np.uint16) + 1
    y, classes = _labels(body, lab)
    meta = {"type": "text", "max_len": max_len, "encoding": TEXT_ENCODING, "vocab_size": 257,
            "truncated": int(sum(len(b) > max_len for b in encoded)), "label_column": header[lab]}
    return _Processed(raw=tokens, y=y, classes=classes, kind="text", meta=meta)


def _parse_images(folder: Path, size: tuple[int, int]) -> _Processed:
    Image = require_pil()
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError("has no class sub-folders", file=str(folder), expected="one sub-folder per class holding its images",
                           found="no sub-folders")
    h, w = size
    images, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if not files:
            raise DatasetError("class folder has no images", file=str(class_dir), expected="image files (" + ", ".join(IMAGE_EXTENSIONS) + ")",
                               found="none", hint="Add images or remove the folder")
        for file in files:
            try:
                with Image.open(file) as img:
                    img.load()
                    gray = img.convert("L").resize((w, h), Image.Resampling.BILINEAR)
                    images.append(np.asarray(gray, dtype=np.uint8))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                raise DatasetError(f"cannot read this image ({type(exc).__name__}: {exc})", file=str(file),
                                   hint="Replace or remove the file") from None
            labels.append(label)
    raw = np.stack(images)[:, None, :, :]
    meta = {"type": "image", "height": h, "width": w, "channels": 1, "scale": 1 / 255,
            "preprocessing": f"grayscale, resized to {w}x{h} (bilinear), pixel values divided by 255"}
    return _Processed(raw=raw, y=np.array(labels, dtype=np.int64), classes=[p.name for p in class_dirs], kind="images", meta=meta)


def require_pil():
    """Pillow's ``Image`` module, or MissingDependency saying how to install it."""
    from core.optional import require

    require("PIL", "reading image datasets")
    from PIL import Image

    return Image


def _check_classes(path: Path, proc: _Processed) -> None:
    if len(proc.classes) < 2:
        raise DatasetError("has only one class", file=str(path), expected="at least 2 classes",
                           found=f"1 class ({proc.classes[0]!r})" if proc.classes else "0 classes")
    counts = np.bincount(proc.y, minlength=len(proc.classes))
    for i, c in enumerate(counts):
        if c < 2:
            raise DatasetError(f"class {proc.classes[i]!r} has too few samples for a stratified split", file=str(path),
                               expected="at least 2 samples per class", found=f"{int(c)}", hint="Add samples of that class or remove it")


# -- reading -----------------------------------------------------------------------------

def input_dtype(kind: str) -> str:
    """Model input dtype for a dataset kind (text is int64 token ids, the rest float32)."""
    return "int64" if kind == "text" else "float32"


def load_arrays(dataset_row: dict) -> Arrays:
    """The dataset's arrays, ready for a model (images scaled to [0,1], tokens int64)."""
    path = Path(dataset_row["artifact_path"])
    if not path.exists():
        raise DatasetError("the processed arrays file is missing", file=str(path),
                           hint=f"Delete dataset {dataset_row['name']!r} and add it again")
    with np.load(path) as data:
        raw, y, classes = data["raw"], data["y"].astype(np.int64), [str(c) for c in data["classes"]]
    meta = dict(dataset_row.get("meta") or {})
    kind = {"image": "images", "text": "text"}.get(meta.get("type"), "csv")
    if kind == "images":
        X = raw.astype(np.float32) * np.float32(meta.get("scale", 1 / 255))
    elif kind == "text":
        X = raw.astype(np.int64)
    else:
        X = raw.astype(np.float32)
    return Arrays(X=X, y=y, classes=classes, kind=kind, input_shape=[int(d) for d in X.shape[1:]],
                  input_dtype=input_dtype(kind), meta=meta, fingerprint=dataset_row["fingerprint"], name=dataset_row["name"])


def model_input(dataset_row: dict) -> tuple[list[int], str]:
    """(input_shape, input_dtype) of a dataset row without loading its arrays."""
    meta = dataset_row.get("meta") or {}
    return list(dataset_row["input_shape"]), "int64" if meta.get("type") == "text" else "float32"


def split_indices(y, seed: int = 0, val: float = 0.15, test: float = 0.15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic stratified (train, val, test) indices; every class keeps ≥ 1 training sample.

    A class of 2+ samples gives at least one to validation (when ``val`` > 0), one of 3+ at
    least one to test, so small datasets still validate on every class.
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_val = max(1 if (val > 0 and n >= 2) else 0, int(round(n * val)))
        n_test = max(1 if (test > 0 and n >= 3) else 0, int(round(n * test)))
        while n - n_val - n_test < 1 and (n_val or n_test):
            if n_test >= n_val and n_test:
                n_test -= 1
            else:
                n_val -= 1
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val:n_val + n_test])
        parts[0].append(idx[n_val + n_test:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts)


def preview(dataset_row: dict, n: int = 3) -> list[dict]:
    """Up to ``n`` samples from different classes, for the dashboard."""
    arrays = load_arrays(dataset_row)
    picked: list[int] = []
    for round_ in range(n):
        for c in range(len(arrays.classes)):
            if len(picked) >= n:
                break
            idx = np.flatnonzero(arrays.y == c)
            if round_ < len(idx):
                picked.append(int(idx[round_]))
        if len(picked) >= n:
            break
    out = []
    for i in picked:
        item: dict[str, Any] = {"label": arrays.classes[int(arrays.y[i])], "image": None, "features": None, "text": None}
        x = arrays.X[i]
        if arrays.kind == "images":
            item["image"] = np.clip(x[0].astype(float), 0.0, 1.0)
        elif arrays.kind == "text":
            b = bytes(int(t) - 1 for t in x if t > 0)
            item["text"] = b.decode("utf-8", errors="replace")
        else:
            item["features"] = {f: float(v) for f, v in zip(arrays.meta.get("features", []), x)}
        out.append(item)
    return out


def delete_dataset(db, name: str) -> None:
    """Unregister a dataset no run uses; its arrays file stays (nothing is deleted implicitly)."""
    row = store_datasets.by_name(db, name)
    if row is None:
        known = ", ".join(d["name"] for d in store_datasets.list_all(db)) or "none"
        raise DatasetError(f"no dataset named {name!r}", found=f"known datasets: {known}")
    if not store_datasets.delete(db, row["id"]):
        raise DatasetError(f"dataset {name!r} is used by training runs and cannot be deleted",
                           hint="Runs keep referring to the data they were trained on")
