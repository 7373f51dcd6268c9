"""Screenshots of the real dashboard on the seeded demo database, as SVG, for the README.

    python scripts/screenshots.py            # writes screenshots/*.svg

A panel adds its shots with one line in ``SHOTS``: (panel key, (columns, rows), file name).
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

OUT = ROOT / "screenshots"
SHOTS: list[tuple[str, tuple[int, int], str]] = [
    ("t", (120, 40), "training-120x40.svg"),
    ("t", (48, 24), "training-48x24.svg"),
    ("d", (120, 40), "datasets-120x40.svg"),
    ("d", (48, 24), "datasets-48x24.svg"),
    ("p", (120, 40), "deploy-120x40.svg"), ("p", (48, 24), "deploy-48x24.svg"),
    ("q", (120, 40), "quantize-120x40.svg"), ("q", (48, 24), "quantize-48x24.svg"), ("q", (40, 20), "quantize-40x20.svg"),
    ("a", (120, 40), "alerts-120x40.svg"), ("a", (48, 24), "alerts-48x24.svg"), ("a", (40, 20), "alerts-40x20.svg"),
    ("c", (120, 40), "costs-120x40.svg"), ("c", (48, 24), "costs-48x24.svg"), ("c", (40, 20), "costs-40x20.svg"),
]
READY_TIMEOUT_S = 10.0


async def shoot(db_path: Path, key: str, size: tuple[int, int], filename: str, out: Path = OUT) -> Path:
    """Open the app on ``key``'s panel at ``size``, wait for its data, save the SVG."""
    from tui.app import make_app
    from tui.widgets.polling import PollingPanel

    app = make_app(db_path, panel=key, sample_device=False, poll_interval=0.2)
    async with app.run_test(size=size) as pilot:
        panel = app.current_panel
        t0 = time.monotonic()
        while isinstance(panel, PollingPanel) and panel.polls < 1:
            if time.monotonic() - t0 > READY_TIMEOUT_S:
                raise SystemExit(f"{filename}: the {key!r} panel showed no data within {READY_TIMEOUT_S} s")
            await pilot.pause(0.05)
        await pilot.pause(0.3)  # let the last update paint
        if not app.demo:  # every README screenshot shows the demo store, so it must say so
            raise SystemExit(f"{filename}: {db_path} is not marked as the demo store (build it with scripts/demo_db.py)")
        app.save_screenshot(filename, path=str(out))
    return out / filename


async def main() -> int:
    from demo_db import build

    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "pocketops.db"
        build(db_path)
        for key, size, filename in SHOTS:
            print(await shoot(db_path, key, size, filename))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
