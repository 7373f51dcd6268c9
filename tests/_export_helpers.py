"""Trained tiny models shared by the export/quantize/bench tests (trained once per session)."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

import store

ROOT = Path(__file__).resolve().parent.parent

# family -> (preset, epochs): just enough training that accuracy means something.
FAMILIES = {"cnn": ("tiny", 4), "mlp": ("tiny", 6), "transformer": ("tiny", 3)}


@dataclass
class Trained:
    db_path: Path
    runs: dict          # family -> run id
    checkpoints: dict   # family -> best.pt path


def _train(db, db_path: Path, family: str, preset: str, epochs: int) -> tuple[int, Path]:
    from core import datasets, paths
    from core.trainer import TrainConfig, Trainer
    from store import datasets as store_datasets
    from store import runs

    row = store_datasets.by_name(db, "digits")
    cfg = TrainConfig(dataset="digits", model=family, preset=preset, epochs=epochs, batch_size=64, threads=1,
                      pause_on_low_battery=False)
    run_id = runs.create(db, dataset_id=row["id"], model=family, config=cfg.to_dict(), epochs_total=epochs)
    summary = Trainer(cfg, datasets.load_arrays(row), paths.artifact_dir(db_path, "runs", run_id)).fit()
    runs.update(db, run_id, checkpoint_path=summary["checkpoint"], status="done", epochs_done=epochs,
                metrics={"test_accuracy": summary["test_accuracy"]})
    return run_id, Path(summary["checkpoint"])


# Several test modules import these fixtures; each import is its own fixture definition, so
# the session's one copy is kept here.
_CACHE: dict = {}


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    """A store with digits and one finished run per model family."""
    if "trained" not in _CACHE:
        _CACHE["trained"] = _make_trained(tmp_path_factory)
    return _CACHE["trained"]


def _make_trained(tmp_path_factory) -> Trained:
    from core.datasets import ensure_builtin

    db_path = tmp_path_factory.mktemp("trained") / "t.db"
    db = store.connect(db_path)
    ensure_builtin(db, db_path)
    run_ids, ckpts = {}, {}
    for family, (preset, epochs) in FAMILIES.items():
        run_ids[family], ckpts[family] = _train(db, db_path, family, preset, epochs)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Trained(db_path, run_ids, ckpts)


def clone_store(trained: Trained, dest_dir: Path) -> Path:
    """A private copy of the trained store's database (files stay shared, read-only)."""
    dest = Path(dest_dir) / "t.db"
    src = sqlite3.connect(str(trained.db_path))
    out = sqlite3.connect(str(dest))
    src.backup(out)
    src.close()
    out.close()
    return dest


def digits_split(db_path: Path):
    """(X_train, X_val, X_test, y_test) of digits, split as training split it."""
    from core.export_job import eval_data

    data = eval_data(store.connect(db_path), "digits")
    return data.X_train, data.X_val, data.X_test, data.y_test


def load_model(trained: Trained, family: str):
    from core.trainer import load_checkpoint

    return load_checkpoint(trained.checkpoints[family])[0]


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory) -> dict:  # noqa: F811
    """family -> its fp32 ONNX file, exported once per session."""
    if "exported" not in _CACHE:
        _CACHE["exported"] = _make_exported(trained, tmp_path_factory)
    return _CACHE["exported"]


def _make_exported(trained: Trained, tmp_path_factory) -> dict:
    from core import export

    out = tmp_path_factory.mktemp("exported")
    _, _, X_test, _ = digits_split(trained.db_path)
    paths = {}
    for family in FAMILIES:
        paths[family] = export.export_onnx(load_model(trained, family), X_test.shape[1:], out / family / "fp32.onnx")
    return paths
