"""Torch → ONNX export: every model family exports to one file that computes what torch computes."""
from __future__ import annotations

import numpy as np
import pytest

from core import export
from tests._export_helpers import digits_split, exported, load_model, trained  # noqa: F401  (session fixtures)


@pytest.mark.parametrize("family", ["mlp", "cnn", "transformer"])
def test_each_family_exports_and_matches_torch(trained, exported, family):  # noqa: F811
    """mlp, cnn and transformer export to one self-contained file that matches torch on the test split."""
    model = load_model(trained, family)
    _, _, X_test, y_test = digits_split(trained.db_path)
    path = exported[family]
    assert [p.name for p in path.parent.iterdir()] == ["fp32.onnx"], "weights must not go to a side file"
    check = export.verify(model, path, X_test)
    assert check.samples == len(X_test)
    assert check.agreement == 1.0
    assert check.max_abs_logit_diff < 1e-4
    # The batch axis is dynamic: batch 1 and an odd batch both run and agree with torch.
    for n in (1, 5):
        got = export.onnx_logits(path, X_test[:n])
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, export.torch_logits(model, X_test[:n]), atol=1e-4)


def test_export_is_quiet_and_leaves_no_source_paths(trained, tmp_path, capfd):  # noqa: F811
    """Nothing is printed (it would land in the dashboard or a JSON stream); no stack traces in the file."""
    model = load_model(trained, "cnn")
    path = export.export_onnx(model, (1, 8, 8), tmp_path / "m.onnx")
    out, err = capfd.readouterr()
    assert out == ""
    assert "torchvision" not in err and "Warning" not in err
    data = path.read_bytes()
    assert b"nets.py" not in data and b"stack_trace" not in data


def test_a_model_that_disagrees_is_refused_with_the_figures(trained, exported):  # noqa: F811
    """Verification against a different torch model fails, naming agreement and max |Δlogit|."""
    import torch

    _, _, X_test, _ = digits_split(trained.db_path)
    path = exported["cnn"]
    other = load_model(trained, "cnn")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    with pytest.raises(export.ExportMismatch) as info:
        export.verify(other, path, X_test)
    message = str(info.value)
    assert "top-1 agreement" in message and "max |Δlogit|" in message and "not registered" in message


def test_compare_logits_counts_disagreements():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    cand = ref.copy()
    cand[1] = [2.0, 1.0]  # flips sample 1's top-1
    result = export.compare_logits(ref, cand)
    assert result.agreement == 0.75
    assert result.max_abs_logit_diff == pytest.approx(2.0)
    with pytest.raises(export.ExportMismatch):
        export.compare_logits(ref, cand[:3])
