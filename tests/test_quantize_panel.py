"""The Quantize panel: a finished comparison on a phone (48×24) and over SSH (120×40); its actions queue jobs."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import store
from store import jobs
from store import runs as store_runs
from tui.panels.quantize import QuantizeData, bar_lines, render_detail

pytestmark = [pytest.mark.anyio, pytest.mark.phone]  # phone: no torch or onnx needed (make test-phone)
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
RECORDED = json.loads((ROOT / "scripts" / "demo_variants.json").read_text())
PHONE, LAPTOP = (48, 24), (120, 40)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def compared(digits_db):
    """A store with a finished cnn run whose variants were measured (figures recorded from a real run)."""
    from demo_variants import seed

    db, db_path = digits_db
    from store import datasets as store_datasets

    dataset_id = store_datasets.by_name(db, "digits")["id"]
    run_id = store_runs.create(db, dataset_id=dataset_id, model="cnn", config={"preset": "small"}, epochs_total=12)
    store_runs.update(db, run_id, status="done", epochs_done=12, metrics={"test_accuracy": 0.99})
    seed(db, db_path, run_id)
    return db, db_path, run_id


def data_for(run_id: int) -> QuantizeData:
    from core.export_job import bench_rows

    rows = [{"id": i + 1, "name": v["name"], "path": f"/x/{v['name']}.onnx", "size_bytes": v["size_bytes"],
             "status": "benchmarked", "bench": v["bench"]} for i, v in enumerate(RECORDED["variants"])]
    run = {"id": run_id, "model": "cnn", "dataset_name": "digits", "config": {"preset": "small"}, "metrics": {}}
    return QuantizeData([run], run_id, bench_rows(rows), RECORDED["baseline"])


def test_render_shows_every_figure_the_recommendation_and_the_baseline():
    text = render_detail(data_for(1), width=60)
    names = [v["name"] for v in RECORDED["variants"]]
    for name in names:
        assert name in text
    rec = RECORDED["recommended"]["name"]
    assert f"Recommended: {rec}" in text and f"★ [b]{rec} " in text
    assert "torch eager" in text and "faster than torch eager" in text
    for label in ("p50", "p95", "acc", "agree", "max|Δ|", "load", "mem", "[b]size[/b]", "p50 latency (batch 1)",
                  "[b]accuracy[/b]", "[b]Why[/b]", "faster than torch"):
        assert label in text, label
    assert "ConvInteger" in text, "the slow int8-dynamic-conv is explained"


def test_prefer_size_and_budget_change_the_recommendation():
    fast = render_detail(data_for(1), prefer="latency")
    small = render_detail(data_for(1), prefer="size")
    # The smallest within the panel's default 1-point budget (the recorded pruned-int8 is smaller but lost more).
    fp32_acc = next(v["bench"]["accuracy"] for v in RECORDED["variants"] if v["name"] == "fp32")
    within = [v for v in RECORDED["variants"] if (fp32_acc - v["bench"]["accuracy"]) * 100 <= 1.0 + 1e-9]
    smallest = min(within, key=lambda v: v["size_bytes"])["name"]
    assert f"Recommended: {smallest}" in small and "smallest variant" in small
    assert fast != small


def test_bars_fit_the_width():
    lines = bar_lines("size", [("fp32", 214_000, "209KB"), ("int8-static", 60_000, "59KB")], 40)
    assert lines[0] == "[b]size[/b]"
    plain = [line.replace("[$accent]", "").replace("[/]", "") for line in lines[1:]]
    assert all(len(line) <= 40 for line in plain)
    assert plain[0].count("█") > plain[1].count("█")


def test_no_run_and_a_failed_job_are_said_in_words():
    assert "No finished run" in render_detail(QuantizeData([], None))
    job = {"id": 7, "kind": "export", "status": "failed", "progress": {},
           "error": "ONNX export needs the Python package 'onnx', which is not installed."}
    text = render_detail(QuantizeData([{"id": 3, "model": "cnn", "dataset_name": "digits"}], 3, [], {}, job))
    assert "export job 7 failed" in text and "'onnx'" in text and "press e" in text


async def wait_for(pilot, condition, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.05)


@pytest.mark.parametrize("size", [PHONE, LAPTOP])
async def test_panel_shows_a_finished_comparison(compared, size):
    """At 48×24 and 120×40 the panel lists the run and shows the variants, the baseline and the pick."""
    from tui.app import make_app

    _db, db_path, run_id = compared
    app = make_app(db_path, panel="q", sample_device=False, poll_interval=0.1)
    async with app.run_test(size=size) as pilot:
        view = app.query_one("#quantize-view")
        await wait_for(pilot, lambda: "Recommended" in str(view.render()))
        text = str(view.render())
        assert f"Run #{run_id}" in text
        assert f"Recommended: {RECORDED['recommended']['name']}" in text
        for v in RECORDED["variants"]:
            assert v["name"] in text
        assert "torch eager" in text
        table = app.query_one("#quantize-runs")
        assert table.row_count == 1
        assert view.region.width <= size[0]
        await pilot.press("z")
        await wait_for(pilot, lambda: "smallest variant" in str(view.render()))


async def test_export_key_queues_a_job_or_says_why_not(compared):
    """`e` on a run without a checkpoint explains; with one it queues an export with the panel's preference."""
    from tui.app import make_app

    db, db_path, run_id = compared
    app = make_app(db_path, panel="q", sample_device=False, poll_interval=0.1)
    async with app.run_test(size=LAPTOP) as pilot:
        view = app.query_one("#quantize-view")
        await wait_for(pilot, lambda: "Recommended" in str(view.render()))
        await pilot.press("e")
        await wait_for(pilot, lambda: any("no checkpoint" in m for _, m in app.notices))
        assert [j for j in jobs.list_jobs(db) if j["kind"] == "export"] == []
        ckpt = db_path.parent / "best.pt"
        ckpt.write_bytes(b"placeholder: the job, not the panel, reads it")
        store_runs.update(db, run_id, checkpoint_path=str(ckpt))
        await pilot.press("z")
        await pilot.press("e")
        await wait_for(pilot, lambda: any(j["kind"] == "export" for j in jobs.list_jobs(db)))
        job = next(j for j in jobs.list_jobs(db) if j["kind"] == "export")
        assert job["run_id"] == run_id and job["status"] == "queued" and job["payload"]["prefer"] == "size"
        await pilot.press("e")
        await wait_for(pilot, lambda: any("already being exported" in m for _, m in app.notices))
        await pilot.press("b")
        await wait_for(pilot, lambda: any(j["kind"] == "bench" for j in jobs.list_jobs(db)))


def test_the_panel_and_its_fetch_import_neither_torch_nor_onnx(compared):
    """The dashboard process never loads torch or onnx for this panel (rendering and fetching)."""
    _db, db_path, run_id = compared
    code = (
        "import sys, store\n"
        "from tui.panels.quantize import Panel, render_detail\n"
        f"data = Panel.fetch(None, store.connect({str(db_path)!r}), None)\n"
        "text = render_detail(data)\n"
        "assert 'Recommended' in text, text\n"
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'onnxscript') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


async def test_results_fill_in_as_the_worker_stores_them(compared):
    """While an export runs, unmeasured variants say 'measuring…'; each stored figure appears on the next poll."""
    from store import variants as store_variants
    from tui.app import make_app

    db, db_path, run_id = compared
    rows = store_variants.latest_for_run(db, run_id)
    recorded = {v["name"]: v["bench"] for v in rows}
    for v in rows:
        db.execute("UPDATE variants SET status = 'built', bench = '{}' WHERE id = ?", (v["id"],))
    job_id = jobs.enqueue(db, "export", {"run_id": run_id}, run_id=run_id)
    jobs.claim(db, "elsewhere", job_id=job_id)
    app = make_app(db_path, panel="q", sample_device=False, poll_interval=0.1)
    async with app.run_test(size=PHONE) as pilot:
        view = app.query_one("#quantize-view")
        await wait_for(pilot, lambda: "measuring…" in str(view.render()))
        assert str(view.render()).count("measuring…") == len(rows)
        assert "export job" in str(view.render()) and "running" in str(view.render())
        first = rows[0]
        store_variants.set_bench(db, first["id"], recorded[first["name"]])
        await wait_for(pilot, lambda: str(view.render()).count("measuring…") == len(rows) - 1)
        for v in rows[1:]:
            store_variants.set_bench(db, v["id"], recorded[v["name"]])
        jobs.finish(db, job_id, "elsewhere", "done", result={})
        await wait_for(pilot, lambda: f"Recommended: {RECORDED['recommended']['name']}" in str(view.render()))
        assert "measuring…" not in str(view.render())


async def test_cancel_key_cancels_the_running_export_and_unmeasured_variants_say_so(compared):
    """`x` requests a cancel of the run's running export; afterwards variants without figures read 'not measured'."""
    from store import variants as store_variants
    from tui.app import make_app

    db, db_path, run_id = compared
    last = store_variants.latest_for_run(db, run_id)[-1]
    db.execute("UPDATE variants SET status = 'built', bench = '{}' WHERE id = ?", (last["id"],))
    job_id = jobs.enqueue(db, "export", {"run_id": run_id}, run_id=run_id)
    jobs.claim(db, "elsewhere", job_id=job_id)
    app = make_app(db_path, panel="q", sample_device=False, poll_interval=0.1)
    async with app.run_test(size=LAPTOP) as pilot:
        view = app.query_one("#quantize-view")
        await wait_for(pilot, lambda: "measuring…" in str(view.render()))
        await pilot.press("x")
        await wait_for(pilot, lambda: jobs.cancel_requested(db, job_id))
        # The cancel is written in a thread worker; its notice follows on the main thread.
        await wait_for(pilot, lambda: any("cancel requested" in m for _, m in app.notices))
        jobs.finish(db, job_id, "elsewhere", "cancelled", error="cancelled by the user")
        await wait_for(pilot, lambda: "not measured" in str(view.render()))
        text = str(view.render())
        assert f"export job {job_id} cancelled" in text and "press b" in text and "measuring…" not in text
        await pilot.press("x")
        await wait_for(pilot, lambda: any("nothing to cancel" in m for _, m in app.notices))


async def test_export_and_cancel_write_in_a_thread_worker_not_on_the_main_thread(compared, monkeypatch):
    """`e` and `x` reach the store from a thread worker (the dashboard's main thread never writes)."""
    import threading

    from core import export_job
    from tui.app import make_app

    db, db_path, run_id = compared
    ckpt = db_path.parent / "best.pt"
    ckpt.write_bytes(b"placeholder: the job, not the panel, reads it")
    store_runs.update(db, run_id, checkpoint_path=str(ckpt))
    threads: dict[str, bool] = {}

    def on_thread(name, fn):
        def wrapped(*args, **kwargs):
            threads[name] = threading.current_thread() is threading.main_thread()
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(export_job, "queue_export", on_thread("export", export_job.queue_export))
    monkeypatch.setattr(export_job, "cancel", on_thread("cancel", export_job.cancel))
    app = make_app(db_path, panel="q", sample_device=False, poll_interval=0.1)
    async with app.run_test(size=LAPTOP) as pilot:
        view = app.query_one("#quantize-view")
        await wait_for(pilot, lambda: "Recommended" in str(view.render()))
        await pilot.press("e")
        await wait_for(pilot, lambda: any("export queued" in m for _, m in app.notices))
        await pilot.press("x")
        await wait_for(pilot, lambda: any(" cancelled." in m for _, m in app.notices))
    assert threads == {"export": False, "cancel": False}
    assert [j["status"] for j in jobs.list_jobs(db) if j["kind"] == "export"] == ["cancelled"]


async def test_phone_portrait_40x20_keeps_table_lines_unwrapped(compared):
    """At 40×20 the variant table (with the torch baseline) fits the detail's width, and every action's
    footer button is on screen (a phone has no keyboard shortcut to fall back on)."""
    from tui.app import make_app

    _db, db_path, _run_id = compared
    app = make_app(db_path, panel="q", sample_device=False, poll_interval=0.1)
    async with app.run_test(size=(40, 20)) as pilot:
        view = app.query_one("#quantize-view")
        await wait_for(pilot, lambda: "Recommended" in str(view.render()))
        detail = app.query_one("#quantize-detail")
        width = detail.content_size.width
        plain = view.render()
        lines = str(plain).splitlines() if not hasattr(plain, "plain") else plain.plain.splitlines()
        table = [line for line in lines if line.startswith(("  ", "★ ")) and (
            "torch eager" in line or any(line[2:].startswith(v["name"][:10]) for v in RECORDED["variants"]))]
        assert table and all(len(line) <= width for line in table), (width, [t for t in table if len(t) > width])
        keys = ("e", "b", "z", "u", "r", "x")
        # The footer lays its buttons out after the panel's first data: wait for them, then check where they are.
        await wait_for(pilot, lambda: set(keys) <= {k.key for k in app.query("FooterKey") if k.region.width}, timeout=60)
        shown = {k.key: k.region for k in app.query("FooterKey")}
        for key in keys:
            assert key in shown and shown[key].right <= 40, f"footer button {key} must be tappable at 40 columns"


def test_throughput_and_memory_read_well_at_any_size():
    from tui.panels.quantize import variant_lines

    v = {"name": "big", "status": "benchmarked", "latency_p50_ms": 3.0, "latency_p95_ms": 4.0, "load_ms": 50,
         "agreement": 1.0, "max_abs_logit_diff": 0.0, "peak_memory_mb": 0.4, "throughput_per_s": 420.0}
    text = "\n".join(variant_lines(v, 60))
    assert "420/s at batch 8" in text and "mem 0.4MB" in text
    assert "7.5k/s" in "\n".join(variant_lines({**v, "throughput_per_s": 7520.0}, 60))


@pytest.mark.parametrize("size", [(40, 20), PHONE])
async def test_table_lines_fit_beside_the_scrollbar(compared, size):
    """The detail scrolls (11 recorded variants): its scrollbar's cells are kept free, so no table line wraps."""
    from rich.text import Text

    from tui.app import make_app

    _db, db_path, _run_id = compared
    app = make_app(db_path, panel="q", sample_device=False, poll_interval=0.1)
    async with app.run_test(size=size) as pilot:
        view = app.query_one("#quantize-view")
        await wait_for(pilot, lambda: "Recommended" in str(view.render()))
        await pilot.pause(0.2)
        plain = Text.from_markup(str(view.render())).plain
        # Table rows and size bars (they carry sizes); prose lines are wrapped by Textual itself.
        sized = [line for line in plain.splitlines() if "KB" in line]
        long = [line for line in sized if len(line.rstrip()) > view.content_size.width]
        assert len(sized) >= len(RECORDED["variants"]) and not long, (view.content_size, long)


def test_phone_width_names_stay_whole_and_apart():
    """At a phone's width (no runtime column) every variant name is shown whole and no two look alike:
    int8-dynamic and int8-dynamic-conv would both be cut to "int8-dynam…", ET names carry the runtime."""
    import re

    from tui.panels.quantize import table_lines

    names = ["fp32", "int8-dynamic", "int8-dynamic-conv", "int8-static", "executorch-int8", "litert-int8"]
    runtime = {"executorch-int8": "executorch", "litert-int8": "litert"}
    rows = [{"name": n, "runtime": runtime.get(n, "onnxruntime"), "size_bytes": 50_000, "zip_bytes": 40_000,
             "latency_p50_ms": 0.02, "accuracy": 0.99, "status": "benchmarked"} for n in names]
    lines = table_lines(rows, "fp32", 0.1, active=False, width=36)
    shown = [re.sub(r"\[[^\]]*\]", "", line)[2:].split()[0] for line in lines[1:1 + len(names)]]
    assert len(set(shown)) == len(names), shown
    assert not any("…" in s for s in shown), shown
    assert "ET-int8" in shown and "int8-dyn-cv" in shown
