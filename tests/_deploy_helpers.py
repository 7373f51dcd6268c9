"""A real tiny digits model as an ONNX variant row, for the deploy tests (no torch needed).

A softmax regression on the built-in digits (numpy, ~0.2 s), written as ONNX with
``onnx.helper`` (Flatten -> Gemm), registered as a variant of the built-in dataset.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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
    return db["variants"].insert(row).last_pk


def digits_samples(n: int = 5, start: int = 0) -> np.ndarray:
    """Raw digits (pixel values 0..16), shape (n, 1, 8, 8)."""
    from core.datasets import BUILTIN_FILE

    with np.load(BUILTIN_FILE) as data:
        return data["images"][start:start + n].astype(np.float32)[:, None]
