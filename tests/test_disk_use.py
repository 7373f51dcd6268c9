"""The Datasets and Training panels' disk-use line: the store's figures, one line that fits a phone."""
from __future__ import annotations

import time

import pytest

import store
from core.datasets import ensure_builtin
from store import artifacts
from store.retention import disk_use
from tui.app import make_app
from tui.widgets.disk import DiskUse, disk_line, short_bytes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_short_bytes_stays_within_four_characters():
    for n, text in ((0, "0"), (812, "812B"), (1000, "1.0K"), (9_700, "9.5K"), (35_651_584, "34M"),
                    (1_288_490_189, "1.2G"), (1023 * 1024 ** 2, "1.0G"), (999 * 1024, "999K")):
        assert short_bytes(n) == text, n
    assert max(len(short_bytes(n)) for n in range(0, 10 ** 13, 7_777_777_777)) <= 4


def test_disk_line_is_long_with_room_and_short_on_a_phone():
    use = {"datasets": 1_258_291, "checkpoints": 35_651_584, "variants": 2_202_009, "bundles": 1_048_576}
    assert disk_line(use, 120) == "disk: datasets 1.2 MB · checkpoints 34.0 MB · variants 2.1 MB · bundles 1.0 MB"
    assert disk_line(use, 38) == "data 1.2M ckpt 34M onnx 2.1M bndl 1.0M"
    worst = {k: 998 * 1024 ** 2 for k in use}
    assert len(disk_line(worst, 36)) <= 36


async def test_both_panels_show_the_stores_disk_use_inside_a_40x20_screen(tmp_path):
    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    ensure_builtin(db, db_path)
    artifacts.register(db, kind="checkpoint", path=str(tmp_path / "best.pt"), sha256="x", size_bytes=35_651_584, run_id=1)
    expected = disk_use(db)
    db.conn.close()
    assert expected["checkpoints"] == 35_651_584 and expected["datasets"] > 0
    app = make_app(db_path, poll_interval=0.2, sample_device=False)
    async with app.run_test(size=(40, 20)) as pilot:
        for panel, widget_id in (("datasets", "#datasets-disk"), ("training", "#training-disk")):
            await app.action_show_panel(panel)
            line = app.query_one(widget_id, DiskUse)
            deadline = time.monotonic() + 30
            while line.use is None:
                assert time.monotonic() < deadline, f"{widget_id} never got the store's figures"
                await pilot.pause(0.02)
            assert line.use == expected
            assert "ckpt 34M" in line.text
            assert app.screen.region.contains_region(line.region) and len(line.text) <= line.region.width
