"""Make tests/fixtures/digits-mlp.onnx: a trained digits MLP exported on a laptop (needs torch + onnx).

    python scripts/make_phone_fixture.py

The phone-profile tests (``pytest -m phone``, a venv without torch and onnx) register and
benchmark this file the way a Termux user does with a model exported elsewhere. Run it again
only when the export format changes; the file is committed.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "tests" / "fixtures" / "digits-mlp.onnx"


def main() -> int:
    import store
    from core import datasets, export, paths
    from core.datasets import ensure_builtin
    from core.trainer import TrainConfig, Trainer
    from store import datasets as store_datasets

    with tempfile.TemporaryDirectory(prefix="pocketops-fixture-") as tmp:
        db_path = Path(tmp) / "t.db"
        db = store.connect(db_path)
        ensure_builtin(db, db_path)
        row = store_datasets.by_name(db, "digits")
        cfg = TrainConfig(dataset="digits", model="mlp", preset="tiny", epochs=6, batch_size=64, threads=1,
                          seed=0, pause_on_low_battery=False)
        arrays = datasets.load_arrays(row)
        trainer = Trainer(cfg, arrays, paths.artifact_dir(db_path, "runs", 1))
        summary = trainer.fit()
        from core.trainer import load_checkpoint

        model = load_checkpoint(summary["checkpoint"])[0]
        OUT.parent.mkdir(parents=True, exist_ok=True)
        export.export_onnx(model, tuple(row["input_shape"]), OUT)
        print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size} bytes, test accuracy {summary['test_accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
