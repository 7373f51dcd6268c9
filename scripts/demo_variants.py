"""Demo data for the Quantize panel: variants of the demo's finished digits CNN, with figures
recorded by a real run of ``benchmarks/quantization.py --record scripts/demo_variants.json``.

    python scripts/demo_variants.py --shots    # demo database + Quantize screenshots

``seed(db, db_path, run_id)`` is what the demo database builder calls for its done cnn run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

RECORDED = Path(__file__).resolve().parent / "demo_variants.json"
SHOTS = [("q", (120, 40), "quantize-120x40.svg"), ("q", (48, 24), "quantize-48x24.svg"),
         ("q", (40, 20), "quantize-40x20.svg")]


def seed(db, db_path, run_id: int, recorded: Path = RECORDED) -> list[int]:
    """Register the recorded variants for ``run_id`` (rows only: the demo has no model files).

    Each row keeps its runtime and zip size in meta as the export job stores them, and its path
    the file suffix its runtime loads (``.onnx``/``.ort``, ``.pte``, ``.tflite``).
    """
    from core import paths
    from core.quantize import suffix
    from store import variants as store_variants
    from store.db import transaction

    data = json.loads(Path(recorded).read_text())
    folder = paths.files_dir(db_path) / "runs" / str(run_id) / "onnx" / "demo"
    ids = []
    with transaction(db):
        for v in data["variants"]:
            meta = {"run_id": run_id, "source": "demo (recorded by benchmarks/quantization.py)", "dataset": "digits",
                    "build": v.get("build", {}), "op_types": v.get("op_types", {}), "demo": True,
                    "runtime": v.get("runtime") or (v.get("bench") or {}).get("runtime") or "onnxruntime"}
            if v.get("zip_bytes"):
                meta["zip_bytes"] = v["zip_bytes"]
            if v["name"] == "fp32":
                meta["baseline"] = data["baseline"]
            filename = f"{v['name']}{v.get('suffix') or suffix(v['name'])}"
            ids.append(store_variants.insert(db, name=v["name"], path=str(folder / filename),
                                             sha256=v["sha256"], size_bytes=v["size_bytes"], run_id=run_id,
                                             meta=meta, status="benchmarked", bench=v["bench"]))
    return ids


async def shots(out: Path) -> None:
    from demo_db import build
    from screenshots import shoot

    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "pocketops.db"
        build(db_path)  # seeds the recorded variants for its finished cnn run (seed above)
        for key, size, filename in SHOTS:
            print(await shoot(db_path, key, size, filename, out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", action="store_true", help="write the Quantize screenshots")
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    args = parser.parse_args(argv)
    if args.shots:
        args.out.mkdir(exist_ok=True)
        asyncio.run(shots(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
