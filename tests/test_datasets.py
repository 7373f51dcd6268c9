"""Datasets: each kind loads; every malformed input is refused with its exact place and leaves
the store as it was; splits are stratified and deterministic; fingerprints are stable."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import store
from core import datasets, paths
from core.errors import DatasetError
from store import datasets as store_datasets
from store import runs as store_runs
from store.db import one


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def iris_like(path: Path, label="label") -> Path:
    rows = [f"sepal,petal,{label}"]
    for i in range(12):
        rows.append(f"{1 + i * 0.5},{2 - i * 0.1},{['setosa', 'virginica', 'versicolor'][i % 3]}")
    return write(path, "\n".join(rows) + "\n")


def image_folder(root: Path, classes=("cat", "dog"), per_class=3) -> Path:
    from PIL import Image

    for c_i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = (20 + i * 7, 12 + i * 5)  # different sizes: all get resized
            colour = (40 + 80 * c_i, 10 * i, 200) if i % 2 else 30 + 100 * c_i
            mode = "RGB" if i % 2 else "L"
            Image.new(mode, size, colour).save(root / name / f"{i}.png")
    return root


def snapshot(db, db_path) -> tuple:
    files = paths.files_dir(db_path)
    listing = sorted(str(p.relative_to(files)) for p in files.rglob("*")) if files.exists() else []
    counts = tuple(one(db, f"SELECT COUNT(*) AS n FROM {t}")["n"] for t in ("datasets", "artifacts"))
    return counts, listing


# -- each kind loads ---------------------------------------------------------------------

def test_builtin_digits_registers_once_and_loads_scaled(db):
    """digits: 1797 8x8 images in [0,1], ten classes, registered once however often asked."""
    db, db_path = db
    datasets.ensure_builtin(db, db_path)
    datasets.ensure_builtin(db, db_path)
    rows = store_datasets.list_all(db)
    assert [r["name"] for r in rows] == ["digits"]
    row = rows[0]
    assert row["kind"] == "builtin" and row["rows"] == 1797 and row["n_classes"] == 10
    a = datasets.load_arrays(row)
    assert a.X.shape == (1797, 1, 8, 8) and a.X.dtype == np.float32
    assert a.X.min() == 0.0 and a.X.max() == 1.0
    assert a.y.dtype == np.int64 and sorted(set(a.y.tolist())) == list(range(10))
    assert a.input_dtype == "float32" and a.input_shape == [1, 8, 8]
    assert a.meta["type"] == "image" and a.meta["scale"] == 1 / 16
    assert Path(row["artifact_path"]).exists()
    art = one(db, "SELECT * FROM artifacts WHERE path = ?", (row["artifact_path"],))
    assert art["size_bytes"] == os.path.getsize(row["artifact_path"]) and len(art["sha256"]) == 64


def test_csv_with_label_column_loads(db, tmp_path):
    db, db_path = db
    row = datasets.add_dataset(db, db_path, iris_like(tmp_path / "iris.csv"))
    assert row["name"] == "iris" and row["kind"] == "csv" and row["rows"] == 12
    assert row["classes"] == ["setosa", "versicolor", "virginica"]
    assert row["class_counts"] == [4, 4, 4]
    a = datasets.load_arrays(row)
    assert a.X.shape == (12, 2) and a.X[1].tolist() == pytest.approx([1.5, 1.9])
    assert a.meta["features"] == ["sepal", "petal"] and a.meta["type"] == "tabular"
    assert a.classes[a.y[0]] == "setosa"
    p = datasets.preview(row, n=2)
    assert p[0]["features"] == {"sepal": 1.0, "petal": 2.0} and p[0]["image"] is None


def test_csv_label_defaults_to_last_column_or_named_one(db, tmp_path):
    db, db_path = db
    row = datasets.add_dataset(db, db_path, iris_like(tmp_path / "a.csv", label="species"))
    assert datasets.load_arrays(row).meta["label_column"] == "species"
    write(tmp_path / "b.csv", "y,f1,f2\n0,1,2\n1,3,4\n0,5,6\n1,7,8\n")
    row = datasets.add_dataset(db, db_path, tmp_path / "b.csv", label_column="y")
    a = datasets.load_arrays(row)
    assert a.meta["features"] == ["f1", "f2"] and a.y.tolist() == [0, 1, 0, 1]


def test_image_folder_loads_grayscale_resized(db, tmp_path):
    db, db_path = db
    row = datasets.add_dataset(db, db_path, image_folder(tmp_path / "pets"))
    assert row["kind"] == "images" and row["classes"] == ["cat", "dog"] and row["input_shape"] == [1, 16, 16]
    a = datasets.load_arrays(row)
    assert a.X.shape == (6, 1, 16, 16) and 0.0 <= a.X.min() and a.X.max() <= 1.0
    # a uniform grey image stays uniform after the resize: 30/255
    assert a.X[0].std() < 1e-6 and a.X[0].mean() == pytest.approx(30 / 255, abs=1e-6)
    prev = datasets.preview(row)
    assert prev[0]["image"].shape == (16, 16) and prev[0]["label"] == "cat" and prev[1]["label"] == "dog"


def test_text_csv_is_inferred_and_byte_tokenised(db, tmp_path):
    db, db_path = db
    rows = ["text,label"] + [f"{w} movie,{l}" for w, l in [("great", "pos"), ("awful", "neg"), ("lovely", "pos"),
                                                           ("boring", "neg"), ("héllo", "pos"), ("bad", "neg")]]
    row = datasets.add_dataset(db, db_path, write(tmp_path / "reviews.csv", "\n".join(rows)))
    assert row["kind"] == "text"
    a = datasets.load_arrays(row)
    assert a.input_dtype == "int64" and a.X.dtype == np.int64
    assert a.X.shape[1] == a.meta["max_len"] >= len("héllo movie".encode())
    assert a.X[0, :5].tolist() == [b + 1 for b in b"great"] and a.X[0, -1] == 0
    texts = {p["text"] for p in datasets.preview(row, n=6)}
    assert "héllo movie" in texts


# -- malformed input: exact errors, store unchanged --------------------------------------

def _csv_cases(tmp: Path):
    good_tail = "5,6,a\n7,8,b\n"
    return {
        "non-numeric cell": (write(tmp / "n.csv", "f1,f2,label\n1,2,a\n3,x7,b\n" + good_tail), {},
                             ["n.csv", "row 3", "column 'f2'", "'x7'", "number"]),
        "missing label column": (write(tmp / "m.csv", "f1,f2,label\n1,2,a\n" + good_tail), {"label_column": "target"},
                                 ["m.csv", "'target'", "f1, f2, label"]),
        "ragged row": (write(tmp / "r.csv", "f1,f2,label\n1,2,a\n3,4\n" + good_tail), {},
                       ["r.csv", "row 3", "3 cells", "2 cells"]),
        "empty file": (write(tmp / "e.csv", ""), {}, ["e.csv", "empty"]),
        "header only": (write(tmp / "h.csv", "f1,label\n"), {}, ["h.csv", "no data rows"]),
        "lonely class": (write(tmp / "l.csv", "f1,label\n1,a\n2,a\n3,b\n"), {}, ["l.csv", "class 'b'", "at least 2", "found 1"]),
        "not utf-8": (write(tmp / "u.csv", b"f1,label\n1,a\n2,caf\xe9\n3,b\n"), {},
                      ["u.csv", "row 3", "UTF-8", "0xe9"]),
        "infinite value": (write(tmp / "i.csv", "f1,label\n1,a\ninf,a\n3,b\n4,b\n"), {}, ["row 3", "column 'f1'", "'inf'"]),
        "unclosed quote": (write(tmp / "q.csv", 'f1,"f2,label\n1,2,a\n3,4,b\n' + good_tail), {},
                           ["q.csv", "not valid CSV", "unexpected end of data", "quote"]),
    }


@pytest.mark.parametrize("case", ["non-numeric cell", "missing label column", "ragged row", "empty file", "header only",
                                  "lonely class", "not utf-8", "infinite value", "unclosed quote"])
def test_malformed_csv_is_refused_precisely_and_writes_nothing(db, tmp_path, case):
    db, db_path = db
    datasets.ensure_builtin(db, db_path)
    path, kwargs, expected = _csv_cases(tmp_path)[case]
    before = snapshot(db, db_path)
    with pytest.raises(DatasetError) as err:
        datasets.add_dataset(db, db_path, path, **kwargs)
    for part in expected:
        assert part in str(err.value), f"{part!r} not in {err.value}"
    assert "None" not in str(err.value)
    assert snapshot(db, db_path) == before


def test_an_unreadable_file_is_a_dataset_error_naming_it(db, tmp_path, monkeypatch):
    """A file that cannot be read (permissions, a removed SD card) gives one DatasetError, not a traceback."""
    db, db_path = db
    path = write(tmp_path / "locked.csv", "f1,label\n1,a\n2,a\n3,b\n4,b\n")
    before = snapshot(db, db_path)

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DatasetError) as err:
        datasets.add_dataset(db, db_path, path, kind="csv")
    assert str(err.value).startswith(f"{path}: cannot be read: Permission denied")
    assert snapshot(db, db_path) == before


def test_an_error_with_only_a_found_part_does_not_print_expected_none():
    text = str(DatasetError("no dataset named 'x'", found="known datasets: digits", hint="Add one"))
    assert text == "no dataset named 'x' (found known datasets: digits). Add one"


def test_non_numeric_error_carries_fields(db, tmp_path):
    db, db_path = db
    path, _, _ = _csv_cases(tmp_path)["non-numeric cell"]
    with pytest.raises(DatasetError) as err:
        datasets.add_dataset(db, db_path, path)
    e = err.value
    assert (Path(e.file).name, e.row, e.column, e.found) == ("n.csv", 3, "f2", "'x7'")


def test_unreadable_image_names_the_file(db, tmp_path):
    db, db_path = db
    root = image_folder(tmp_path / "pets")
    write(root / "dog" / "broken.png", b"\x89PNG\r\n\x1a\n not really")
    before = snapshot(db, db_path)
    with pytest.raises(DatasetError) as err:
        datasets.add_dataset(db, db_path, root)
    assert str(root / "dog" / "broken.png") in str(err.value) and "cannot read" in str(err.value)
    assert snapshot(db, db_path) == before


def test_empty_class_folder_is_refused(db, tmp_path):
    db, db_path = db
    root = image_folder(tmp_path / "pets")
    (root / "emu").mkdir()
    write(root / "emu" / "notes.txt", "no pictures")
    before = snapshot(db, db_path)
    with pytest.raises(DatasetError) as err:
        datasets.add_dataset(db, db_path, root)
    assert str(root / "emu") in str(err.value) and "no images" in str(err.value)
    assert snapshot(db, db_path) == before


def test_duplicate_name_is_refused_and_first_dataset_kept(db, tmp_path):
    db, db_path = db
    first = datasets.add_dataset(db, db_path, iris_like(tmp_path / "iris.csv"))
    before = snapshot(db, db_path)
    other = write(tmp_path / "other.csv", "f,label\n1,a\n2,a\n3,b\n4,b\n")
    with pytest.raises(DatasetError, match="'iris' already exists"):
        datasets.add_dataset(db, db_path, other, name="iris")
    assert snapshot(db, db_path) == before
    assert store_datasets.by_name(db, "iris")["fingerprint"] == first["fingerprint"]


def test_text_dataset_with_empty_text_names_row(db, tmp_path):
    db, db_path = db
    path = write(tmp_path / "t.csv", "text,label\nhello there,a\n,a\nbye now,b\nsee you,b\n")
    with pytest.raises(DatasetError) as err:
        datasets.add_dataset(db, db_path, path, kind="text")
    assert "row 3" in str(err.value) and "column 'text'" in str(err.value)
    assert store_datasets.list_all(db) == []


# -- splits and fingerprints -------------------------------------------------------------

def test_split_is_stratified_disjoint_and_deterministic():
    y = np.repeat(np.arange(4), [100, 60, 20, 3])
    tr, va, te = datasets.split_indices(y, seed=3)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(len(y)))
    for c, n in zip(range(4), [100, 60, 20, 3]):
        n_val, n_test = int((y[va] == c).sum()), int((y[te] == c).sum())
        assert n_val >= 1 and (y[tr] == c).sum() >= 1
        if n >= 20:
            assert n_val == round(0.15 * n) and n_test == round(0.15 * n)
    again = datasets.split_indices(y, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again))
    other = datasets.split_indices(y, seed=4)
    assert not np.array_equal(va, other[1])


def test_fingerprint_is_stable_across_stores_and_sensitive_to_content(tmp_path):
    prints = []
    for i in range(2):
        path = tmp_path / f"s{i}.db"
        db = store.connect(path)
        datasets.ensure_builtin(db, path)
        prints.append(datasets.add_dataset(db, path, iris_like(tmp_path / "iris.csv"))["fingerprint"])
        prints.append(store_datasets.by_name(db, "digits")["fingerprint"])
    assert prints[0] == prints[2] and prints[1] == prints[3]
    db = store.connect(tmp_path / "s0.db")
    changed = write(tmp_path / "iris2.csv", iris_like(tmp_path / "x.csv").read_text().replace("1.5,", "1.25,"))
    assert datasets.add_dataset(db, tmp_path / "s0.db", changed)["fingerprint"] != prints[0]


def test_delete_refuses_unknown_and_used_datasets_and_keeps_the_file(digits_db, tmp_path):
    db, db_path = digits_db
    with pytest.raises(DatasetError, match="known datasets: digits"):
        datasets.delete_dataset(db, "nope")
    digits = store_datasets.by_name(db, "digits")
    store_runs.create(db, dataset_id=digits["id"], model="cnn", config={}, epochs_total=1)
    with pytest.raises(DatasetError, match="used by training runs"):
        datasets.delete_dataset(db, "digits")
    row = datasets.add_dataset(db, db_path, iris_like(tmp_path / "iris.csv"))
    datasets.delete_dataset(db, "iris")
    assert store_datasets.by_name(db, "iris") is None
    assert Path(row["artifact_path"]).exists()
