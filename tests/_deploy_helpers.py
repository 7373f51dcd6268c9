"""A real tiny digits model as an ONNX variant row, for the deploy tests (no torch needed).

A softmax regression on the built-in digits (numpy, ~0.2 s), written as ONNX with
``onnx.helper`` (Flatten -> Gemm), registered as a variant of the built-in dataset.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import sqlite_utils  # a test aid: a row straight from a dict

import store
from core.atomic import sha256_file

CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def digits_weights(seed: int = 0, epochs: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Weights (64x10) and bias of a softmax regression on digits scaled to [0, 1]."""
    if seed in CACHE:
        return CACHE[seed]
    from core.datasets import BUILTIN_FILE

    with np.load(BUILTIN_FILE) as data:
        X = data["images"].reshape(-1, 64).astype(np.float64) / 16.0
        y = data["labels"].astype(np.int64)
    rng = np.random.default_rng(seed)
    W = rng.normal(0, 0.01, (64, 10))
    b = np.zeros(10)
    onehot = np.eye(10)[y]
    for _ in range(epochs):
        logits = X @ W + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grad = (p - onehot) / len(X)
        W -= 2.0 * X.T @ grad
        b -= 2.0 * grad.sum(0)
    CACHE[seed] = (W.astype(np.float32), b.astype(np.float32))
    return CACHE[seed]


def write_onnx(path: Path, W: np.ndarray, b: np.ndarray) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "W", "b"], ["logits"])],
        "digits_softmax",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_variant(db, db_path: Path, *, name: str = "fp32", seed: int = 0, broken: bool = False) -> int:
    """Insert a digits variant row (with the built-in dataset registered); returns its id."""
    from core.datasets import ensure_builtin

    ensure_builtin(db, db_path)
    W, b = digits_weights(seed)
    path = Path(db_path).parent / "models" / f"digits-{name}-{seed}.onnx"
    if broken:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not an onnx file")
    else:
        write_onnx(path, W, b)
    row = {"run_id": None, "name": name, "path": str(path), "sha256": sha256_file(path),
           "size_bytes": path.stat().st_size, "status": "built", "bench": "{}",
           "meta": json.dumps({"dataset": "digits", "labels": [str(i) for i in range(10)],
                               "input_shape": [1, 8, 8], "input_dtype": "float32"}),
           "created_at": store.now()}
    return sqlite_utils.Database(db.conn)["variants"].insert(row).last_pk


def digits_samples(n: int = 5, start: int = 0) -> np.ndarray:
    """Raw digits (pixel values 0..16), shape (n, 1, 8, 8)."""
    from core.datasets import BUILTIN_FILE

    with np.load(BUILTIN_FILE) as data:
        return data["images"][start:start + n].astype(np.float32)[:, None]


# -- a tabular and a text variant, through real datasets (for the static page and the server) --------

FLOWERS = ("setosa", "versicolor", "virginica")
FLOWER_CENTRES = ((5.0, 3.4, 1.5, 0.2), (5.9, 2.8, 4.3, 1.3), (6.6, 3.0, 5.5, 2.0))
REVIEW_WORDS = {"neg": ("awful", "hate", "terrible", "bad", "sad"), "pos": ("great", "love", "wonderful", "nice", "happy")}


def _register_variant(db, path: Path, name: str, dataset: str) -> int:
    row = {"run_id": None, "name": name, "path": str(path), "sha256": sha256_file(path),
           "size_bytes": path.stat().st_size, "status": "built", "bench": "{}",
           "meta": json.dumps({"dataset": dataset}), "created_at": store.now()}
    return sqlite_utils.Database(db.conn)["variants"].insert(row).last_pk


def make_tabular_variant(db, db_path: Path) -> int:
    """A 4-feature, 3-class CSV dataset ("flowers") and a nearest-centre linear model of it."""
    import csv

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from core.datasets import add_dataset

    folder = Path(db_path).parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with open(folder / "flowers.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sepal_len", "sepal_wid", "petal_len", "petal_wid", "species"])
        for i in range(90):
            centre = FLOWER_CENTRES[i % 3]
            writer.writerow([round(c + rng.normal(0, 0.2), 2) for c in centre] + [FLOWERS[i % 3]])
    add_dataset(db, db_path, folder / "flowers.csv", name="flowers", label_column="species")
    C = np.array(FLOWER_CENTRES, dtype=np.float32)
    W, b = (2 * C).T.copy(), -(C * C).sum(1)      # logits = -|x - c|^2 + |x|^2
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "W", "b"], ["logits"])], "flowers",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b.astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = Path(db_path).parent / "models" / "flowers-fp32.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return _register_variant(db, path, "fp32", "flowers")


def make_text_variant(db, db_path: Path) -> int:
    """A text CSV dataset ("reviews", neg/pos) and a bag-of-bytes model: int64 token ids in, 2 logits out."""
    import csv

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from core.datasets import add_dataset

    folder = Path(db_path).parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with open(folder / "reviews.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(60):
            label = ("neg", "pos")[i % 2]
            a, b = rng.choice(REVIEW_WORDS[label], 2, replace=False)
            writer.writerow([f"it was {a} and {b}", label])
    dataset = add_dataset(db, db_path, folder / "reviews.csv", name="reviews", kind="text")
    max_len = int(dataset["meta"]["max_len"] if isinstance(dataset.get("meta"), dict) else json.loads(dataset["meta"])["max_len"])
    # Each byte votes by how much more often it occurs in the positive words than in the negative ones.
    share = {label: np.bincount(np.frombuffer("".join(words).encode(), np.uint8), minlength=256) / len("".join(words))
             for label, words in REVIEW_WORDS.items()}
    emb = np.zeros((258, 2), dtype=np.float32)
    emb[1:257, 1] = 20 * (share["pos"] - share["neg"])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "input"], ["votes"]),
         helper.make_node("ReduceSum", ["votes", "axes"], ["logits"], keepdims=0)], "reviews",
        [helper.make_tensor_value_info("input", TensorProto.INT64, ["batch", max_len])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(emb, "E"), numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = Path(db_path).parent / "models" / "reviews-fp32.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return _register_variant(db, path, "fp32", "reviews")
