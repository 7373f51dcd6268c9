"""Models: the pure-Python size estimate is exact, oversize and misfit configs are refused,
every family runs forward and exports to ONNX (dynamo) matching torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core import models
from core.errors import ConfigError

torch = pytest.importorskip("torch")

# (data kind, input_shape, input_dtype, families that fit)
DATA = [
    ("digits", [1, 8, 8], "float32", ("mlp", "cnn", "transformer")),
    ("images16", [1, 16, 16], "float32", ("mlp", "cnn", "transformer")),
    ("tabular", [7], "float32", ("mlp", "transformer")),
    ("text", [48], "int64", ("transformer",)),
]
CASES = [(kind, shape, dtype, fam, preset) for kind, shape, dtype, fams in DATA for fam in models.FAMILIES
         for preset in models.PRESETS if fam in fams]


def example(shape, dtype, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype == "int64":
        x = torch.randint(1, 257, (n, *shape), generator=g)
        x[:, shape[0] // 2:] = 0  # padded tail, as real texts have
        x[0, 3:] = 0
        return x
    return torch.rand((n, *shape), generator=g)


@pytest.mark.parametrize("kind,shape,dtype,family,preset", CASES, ids=[f"{c[0]}-{c[3]}-{c[4]}" for c in CASES])
def test_estimate_equals_real_parameter_count(kind, shape, dtype, family, preset):
    model = models.build_model(models.model_args(family, shape, 5, preset, dtype))
    real = sum(p.numel() for p in model.parameters())
    assert models.estimate_params(family, shape, 5, preset, dtype) == real
    assert models.check_config(family, shape, 5, preset, dtype) == {"params": real, "size_bytes": 4 * real}


@pytest.mark.parametrize("kind,shape,dtype,family,preset",
                         [c for c in CASES if c[4] == "small"], ids=[f"{c[0]}-{c[3]}" for c in CASES if c[4] == "small"])
def test_forward_gives_one_logit_per_class(kind, shape, dtype, family, preset):
    model = models.build_model(models.model_args(family, shape, 5, preset, dtype)).eval()
    out = model(example(shape, dtype, n=3))
    assert out.shape == (3, 5) and torch.isfinite(out).all()


def test_over_50mb_is_refused_with_figures():
    with pytest.raises(ConfigError) as err:
        models.check_config("mlp", [60_000], 10, "base")
    text = str(err.value)
    assert "15,394,442 parameters" in text and "58.7 MB" in text and "50 MB limit" in text
    assert models.check_config("mlp", [60_000], 10, "tiny")["size_bytes"] < models.MAX_MODEL_BYTES
    with pytest.raises(ConfigError, match="MB"):
        models.check_config("cnn", [1, 512, 512], 10, "small")


@pytest.mark.parametrize("family,shape,dtype,needle", [
    ("cnn", [7], "float32", "cnn family needs image data"),
    ("mlp", [48], "int64", "text data needs the transformer"),
    ("cnn", [48], "int64", "needs image data"),
    ("rnn", [1, 8, 8], "float32", "unknown model family 'rnn'"),
])
def test_family_must_fit_the_data(family, shape, dtype, needle):
    with pytest.raises(ConfigError, match=needle):
        models.check_config(family, shape, 3, "small", dtype)
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        models.check_config("mlp", [7], 3, "huge")


def test_tabular_models_standardise_inside():
    """The exported model takes raw features: mean/std buffers live in the state dict."""
    model = models.build_model(models.model_args("mlp", [3], 2, "tiny")).eval()
    x = torch.tensor([[100.0, -5.0, 0.25]])
    before = model(x)
    models.set_standardization(model, [100.0, -5.0, 0.25], [10.0, 0.0, 1.0])
    assert model.feature_std.tolist() == [10.0, 1.0, 1.0]  # a constant column is not divided by 0
    assert "feature_mean" in model.state_dict()
    assert not torch.allclose(model(x), before)
    assert torch.allclose(model(x), model.net(torch.zeros(1, 3)))


@pytest.mark.parametrize("family,shape,dtype", [
    ("cnn", [1, 8, 8], "float32"),
    ("mlp", [7], "float32"),
    ("transformer", [24], "int64"),
])
def test_exports_to_onnx_with_dynamo_and_matches_torch(tmp_path, family, shape, dtype):
    ort = pytest.importorskip("onnxruntime")
    model = models.build_model(models.model_args(family, shape, 4, "tiny", dtype)).eval()
    if family == "mlp":
        models.set_standardization(model, np.arange(7.0), np.arange(1.0, 8.0))
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (example(shape, dtype, 2),), str(path), dynamo=True, external_data=False, verbose=False,
                      input_names=["input"], output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = example(shape, dtype, 5, seed=1)  # another batch size than the export example
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (5, 4)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_estimating_needs_no_torch():
    """The dashboard shows sizes before training: core.models, core.runs, core.datasets stay torch-free."""
    code = ("import sys, core.models, core.runs, core.datasets, core.trainer; "
            "core.models.check_config('cnn', [1, 8, 8], 10); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.stdout.strip() == "False", out.stderr
