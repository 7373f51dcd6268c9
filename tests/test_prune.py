"""The ``pruned-int8`` variant: conv channels cut out of the digits CNN, fine-tuned briefly, then int8-static."""
from __future__ import annotations

import copy
import json
import sqlite3

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import store
from core import export, prune, quantize
from core.export_job import eval_data
from core.trainer import load_checkpoint
from store import jobs
from store import variants as store_variants
from tests._export_helpers import _train, clone_store, trained  # noqa: F401  (session fixture)
from tests.test_export_cli import CONTRACT_VARIANT, cli

# The shared fixture's 4-epoch tiny CNN is at ~75 % accuracy, where any fine-tune only adds
# training it lacked; this one is trained to its plateau (~95 %, a few seconds) so "within 2
# points of fp32" says what pruning costs.
EPOCHS = 20


@pytest.fixture(scope="module")
def built(trained, tmp_path_factory):  # noqa: F811
    """A store with a well-trained tiny CNN run, and its fp32, int8-static and pruned-int8 files."""
    tmp = tmp_path_factory.mktemp("prune")
    db_path = clone_store(trained, tmp)
    db = store.connect(db_path)
    run_id, ckpt_path = _train(db, db_path, "cnn", "tiny", EPOCHS)
    model, ckpt = load_checkpoint(ckpt_path)
    data = eval_data(db, "digits")
    shape = list(data.X_test.shape[1:])
    source = quantize.TorchSource(model, ckpt, data, shape, "float32", torch.from_numpy(data.X_test[:1]))
    fp32 = export.export_onnx(model, shape, tmp / "fp32.onnx", example=torch.from_numpy(data.X_test[:2]))
    static = quantize.build("int8-static", fp32, tmp / "int8-static.onnx", X_train=data.X_train, X_check=data.X_val)
    pruned = quantize.build_torch_variant("pruned-int8", source, tmp / "pruned-int8.onnx")
    return {"db_path": db_path, "run_id": run_id, "model": model, "data": data, "source": source,
            "fp32": fp32, "static": static.path, "pruned": pruned}


def _accuracy(path, data) -> float:
    return float(np.mean(export.onnx_logits(path, data.X_test).argmax(1) == data.y_test))


def test_pruning_cuts_the_weakest_channels_out_and_computes_what_masking_them_would(built):
    """The new CNN has half the channels and fewer parameters, and its logits equal the original's
    with the dropped filters zeroed (so the next conv and the head were sliced at the right places)."""
    model = built["model"]
    small, info = prune.prune_cnn(model, 0.5)
    assert info["channels_before"] == [8, 16] and info["channels_after"] == [4, 8]
    assert info["params_after"] < info["params_before"]
    assert sum(p.numel() for p in small.parameters()) == info["params_after"]
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    masked = copy.deepcopy(model)
    for conv, masked_conv, kept in zip(convs, [m for m in masked.features if isinstance(m, torch.nn.Conv2d)],
                                       info["kept_channels"]):
        norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
        dropped = sorted(set(range(conv.out_channels)) - set(kept))
        assert float(norms[dropped].max()) <= float(norms[kept].min()), "the kept filters have the largest L1 norms"
        with torch.no_grad():
            masked_conv.weight[dropped] = 0.0
            masked_conv.bias[dropped] = 0.0
    X = torch.from_numpy(built["data"].X_val[:64])
    with torch.no_grad():
        np.testing.assert_allclose(small(X).numpy(), masked.eval()(X).numpy(), atol=1e-5)
        assert not np.allclose(small(X).numpy(), model(X).numpy(), atol=1e-3), "pruning changed the model"


def test_fine_tuning_recovers_what_pruning_lost(built):
    """Val accuracy: pruned alone below the original, fine-tuned above pruned alone; the meta says how long it took."""
    meta = built["pruned"].meta
    assert meta["val_accuracy_pruned"] < meta["val_accuracy_before"]
    assert meta["val_accuracy_finetuned"] > meta["val_accuracy_pruned"]
    assert meta["finetune_epochs"] >= 1 and 0 < meta["finetune_seconds"] < prune.PruneConfig().deadline_s
    assert meta["keep_fraction"] == prune.DEFAULT_KEEP and meta["channels_after"] == [4, 8]


def test_pruned_int8_is_smaller_than_int8_static_dense_and_zipped(built):
    """The file shrinks, not just its zeros: smaller than int8-static as stored and as zipped, zip size recorded."""
    path, meta = built["pruned"].path, built["pruned"].meta
    assert path.stat().st_size == meta["int8_bytes"] < built["static"].stat().st_size
    assert meta["int8_zip_bytes"] == quantize.zip_size(path) < quantize.zip_size(built["static"])
    assert meta["pruned_fp32_bytes"] < built["fp32"].stat().st_size
    assert "Conv" in quantize.op_types(path) and "QuantizeLinear" in quantize.op_types(path)


def test_pruned_int8_predicts_within_two_points_of_fp32_in_onnxruntime(built):
    """Logits from onnxruntime at any batch size; test accuracy within 2 points of the unpruned fp32 file."""
    data, path = built["data"], built["pruned"].path
    logits = export.onnx_logits(path, data.X_test)
    assert logits.shape == (len(data.X_test), len(data.classes)) and np.isfinite(logits).all()
    one = export.onnx_logits(path, data.X_test[:1])
    np.testing.assert_allclose(one, logits[:1], atol=1e-5)
    fp32, pruned = _accuracy(built["fp32"], data), _accuracy(path, data)
    assert fp32 > 0.9, "the fixture CNN is trained enough for the comparison to mean something"
    assert pruned >= fp32 - 0.02, (pruned, fp32)


def test_fine_tune_stops_at_its_deadline_and_keeps_the_pruned_weights(built):
    """Out of time before the first step: no epoch counted, the weights are the pruned ones."""
    data = built["data"]
    small, _ = prune.prune_cnn(built["model"], 0.5)
    before = {k: v.clone() for k, v in small.state_dict().items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # not 1 (what the fixture's training left), so a fine-tune that kept 1 shows
    try:
        figures = prune.fine_tune(small, data.X_train, data.y_train, data.X_val, data.y_val,
                                  prune.PruneConfig(deadline_s=1e-9))
        assert torch.get_num_threads() == 3, "the 1-thread fine-tune gives the process its thread count back"
    finally:
        torch.set_num_threads(threads)
    assert figures["finetune_out_of_time"] and figures["finetune_epochs"] == 0
    assert all(torch.equal(before[k], v) for k, v in small.state_dict().items())


@pytest.mark.parametrize("bad", [{"keep": 0}, {"keep": 1.5}, {"epochs": -1}, {"deadline_s": 0}])
def test_bad_prune_settings_are_refused_naming_the_setting(bad):
    """Each bad setting: a ConfigError naming it."""
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=next(iter(bad)).split("_")[0]):
        prune.PruneConfig(**bad).validate()


def test_export_job_registers_and_benchmarks_pruned_int8(built, tmp_path):
    """`export RUN --variants fp32,int8-static,pruned-int8 --wait --json`: measured like the others, sizes recorded."""
    db_path = tmp_path / "t.db"
    src, dest = sqlite3.connect(str(built["db_path"])), sqlite3.connect(str(db_path))
    src.backup(dest)  # a private copy: this test writes rows and files
    src.close()
    dest.close()
    proc = cli(db_path, "export", str(built["run_id"]), "--variants", "fp32,int8-static,pruned-int8",
               "--threads", "1", "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [v["name"] for v in summary["variants"]] == ["fp32", "int8-static", "pruned-int8"]
    fp32, static, pruned = summary["variants"]
    assert all(pruned[k] is not None for k in CONTRACT_VARIANT), pruned
    assert pruned["size_bytes"] < static["size_bytes"] < fp32["size_bytes"]
    assert pruned["accuracy"] >= fp32["accuracy"] - 0.02
    row = store_variants.get(store.connect(db_path), pruned["variant_id"])
    assert row["status"] == "benchmarked" and row["meta"]["runtime"] == "onnxruntime"
    assert 0 < row["meta"]["zip_bytes"] < store_variants.get(store.connect(db_path), static["variant_id"])["meta"]["zip_bytes"]
    build = row["meta"]["build"]
    assert build["channels_before"] == [8, 16] and build["channels_after"] == [4, 8]
    assert build["int8_zip_bytes"] == row["meta"]["zip_bytes"]


def test_pruned_int8_of_an_mlp_run_is_refused_in_one_line_nothing_queued(trained, tmp_path):  # noqa: F811
    """Channel pruning is for convolutions: `export MLP_RUN --variants pruned-int8` exits 1, one line, no job."""
    db_path = clone_store(trained, tmp_path)
    proc = cli(db_path, "export", str(trained.runs["mlp"]), "--variants", "pruned-int8")
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "pruned-int8" in err and "cnn" in err and "drop it from --variants" in err, err
    assert jobs.list_jobs(store.connect(db_path)) == []
