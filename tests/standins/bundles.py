"""A tiny real bundle for deployer tests: a 4-feature, 3-class linear ONNX model + the runtime files."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from deployers.base import Bundle
from deployers.bundle import runtime_sources

RUNTIME = Path(__file__).resolve().parents[2] / "deployers" / "runtime"
LABELS = ["setosa", "versicolor", "virginica"]


def linear_onnx(path: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write ``logits = x @ W + b`` as ONNX (batch dimension dynamic); returns (W, b)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    b = rng.normal(size=(3,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return w, b


def make_bundle(root: Path, *, seed: int = 0, version: str | None = None, variant_id: int | None = 1) -> Bundle:
    """A complete bundle directory under ``root`` (runtime files copied from deployers/runtime)."""
    root.mkdir(parents=True, exist_ok=True)
    linear_onnx(root / "model.onnx", seed)
    sha = hashlib.sha256((root / "model.onnx").read_bytes()).hexdigest()
    version = version or f"r1-fp32-{sha[:8]}"
    spec = {
        "version": version, "sha256": sha, "labels": LABELS, "variant_id": variant_id,
        "input": {"shape": [4], "dtype": "float32", "kind": "tabular"},
        "preprocessing": {}, "output": {"kind": "logits"}, "model_file": "model.onnx",
    }
    (root / "model.json").write_text(json.dumps(spec, indent=2), "utf-8")
    for name, source in runtime_sources("model.onnx").items():
        shutil.copyfile(source, root / name)
    rng = np.random.default_rng(seed + 100)
    np.savez(root / "reference.npz", X=rng.normal(size=(16, 4)).astype(np.float32))
    return Bundle(path=root, variant_id=variant_id, version=version, model_json=spec)


def reference_predict(bundle: Bundle, x: np.ndarray) -> np.ndarray:
    """Probabilities from onnxruntime in this process (what every target must answer)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(Path(bundle.path) / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"x": x.astype(np.float32)})[0].astype(np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)
