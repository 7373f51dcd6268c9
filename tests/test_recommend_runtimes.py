"""The recommendation across runtimes (ONNX Runtime, ExecuTorch, LiteRT) on crafted tables, the stored
runtime preference (store, CLI, Quantize panel) and how the runtime and zip size are shown."""
from __future__ import annotations

import json
import re
import time

import pytest

from core import recommend
from core.errors import ConfigError
from core.recommend import recommend as pick_from
from store import migrations
from store import runs as store_runs
from store import variants as store_variants

pytestmark = pytest.mark.phone  # none of these need torch, onnx or a mobile runtime

SUFFIX = {"onnxruntime": ".onnx", "executorch": ".pte", "litert": ".tflite"}


def row(name, runtime, p50, acc, size, vid=None, **extra):
    return {"name": name, "variant_id": vid, "runtime": runtime, "latency_p50_ms": p50, "accuracy": acc,
            "size_bytes": size, **extra}


# ExecuTorch int8 is the fastest (0.015 ms); the best ONNX Runtime variant is int8-static (0.020 ms, 1.3× slower),
# the best LiteRT one litert-int8 (0.0165 ms, 1.1× slower). litert-int8 is the smallest file.
TABLE = [
    row("fp32", "onnxruntime", 0.030, 0.990, 214_000, 1),
    row("int8-static", "onnxruntime", 0.020, 0.988, 57_000, 2),
    row("executorch-fp32", "executorch", 0.028, 0.990, 220_000, 3),
    row("executorch-int8", "executorch", 0.015, 0.987, 70_000, 4),
    row("litert-fp32", "litert", 0.029, 0.990, 215_000, 5),
    row("litert-int8", "litert", 0.0165, 0.986, 45_000, 6),
]


def test_executorch_int8_wins_and_the_reason_names_each_other_runtimes_best():
    rec = pick_from(TABLE)
    assert (rec.name, rec.variant_id) == ("executorch-int8", 4)
    assert rec.reason.startswith("executorch-int8 (ExecuTorch) is the fastest variant within the 1-point accuracy budget")
    assert "1.3× faster than the best ONNX Runtime variant (int8-static)" in rec.reason
    assert "1.1× faster than the best LiteRT variant (litert-int8)" in rec.reason
    # The reference stays the ONNX fp32 (not executorch-fp32 or litert-fp32, which also contain "fp32").
    assert "2.0× faster than fp32" in rec.reason and "accuracy -0.3 points" in rec.reason
    derived = {r["name"]: r for r in rec.rows}
    assert derived["executorch-int8"]["drop_points"] == pytest.approx(0.3)
    assert {r["runtime"] for r in rec.rows} == {"onnxruntime", "executorch", "litert"}


def test_litert_wins_on_size_and_says_by_how_much():
    rec = pick_from(TABLE, prefer="size")
    assert rec.name == "litert-int8"
    assert rec.reason.startswith("litert-int8 (LiteRT) is the smallest variant within the 1-point accuracy budget")
    assert "1.3× smaller than the best ONNX Runtime variant (int8-static)" in rec.reason
    assert "1.6× smaller than the best ExecuTorch variant (executorch-int8)" in rec.reason


def test_a_runtime_preference_restricts_the_pick_and_says_what_the_others_would_give():
    rec = pick_from(TABLE, runtime="onnxruntime")
    assert rec.name == "int8-static"
    assert rec.reason.startswith("int8-static is the fastest ONNX Runtime variant within the 1-point accuracy "
                                 "budget (runtime preference)")
    assert "the best ExecuTorch variant (executorch-int8) is 1.3× faster" in rec.reason
    assert "the best LiteRT variant (litert-int8) is 1.2× faster" in rec.reason
    assert pick_from(TABLE, runtime="litert").name == "litert-int8"
    assert pick_from(TABLE, runtime="executorch", prefer="size").name == "executorch-int8"
    # The same through the stored-preference path the panel and the CLI use.
    assert recommend.judge(TABLE, recommend.Prefs(runtime="onnxruntime")).name == "int8-static"
    assert recommend.judge(TABLE, recommend.Prefs()).name == "executorch-int8"


def test_a_preferred_runtime_without_a_variant_in_budget_recommends_nothing_and_says_why():
    onnx_only = [r for r in TABLE if r["runtime"] == "onnxruntime"]
    rec = pick_from(onnx_only, runtime="litert")
    assert rec.name is None and rec.variant_id is None
    assert rec.reason == ("no LiteRT variant has been benchmarked (runtime preference litert; set it to any to "
                          "judge every runtime)")
    lossy = [*onnx_only, row("executorch-int8", "executorch", 0.01, 0.95, 60_000, 9)]
    rec = pick_from(lossy, runtime="executorch")
    assert rec.name is None and rec.reason.startswith("no ExecuTorch variant is within the 1-point accuracy budget")
    # Judging every runtime, the lossy one loses and that is said per runtime.
    rec = pick_from(lossy)
    assert rec.name == "int8-static"
    assert "executorch-int8 loses 4.0 points of accuracy (budget 1)" in rec.reason
    assert "no ExecuTorch variant is within the 1-point budget" in rec.reason
    with pytest.raises(ValueError, match="runtime"):
        pick_from(TABLE, runtime="tensorrt")


def test_a_looped_batch_is_still_judged_by_batch1_latency():
    """LiteRT without a resizable batch runs batch 8 as a loop: its throughput is low, its p50 is the best."""
    table = [row("fp32", "onnxruntime", 0.030, 0.990, 214_000, 1, throughput_per_s=90_000, batch_method="native"),
             row("int8-static", "onnxruntime", 0.020, 0.988, 57_000, 2, throughput_per_s=120_000,
                 batch_method="native"),
             row("litert-int8", "litert", 0.012, 0.988, 45_000, 3, throughput_per_s=8_000, batch_method="loop")]
    rec = pick_from(table)
    assert rec.name == "litert-int8"
    assert "1.7× faster than the best ONNX Runtime variant (int8-static)" in rec.reason


def test_an_onnx_only_table_reads_as_before():
    table = [r for r in TABLE if r["runtime"] == "onnxruntime"]
    rec = pick_from(table)
    assert rec.name == "int8-static"
    assert rec.reason.startswith("int8-static is the fastest variant within")
    assert "ONNX Runtime" not in rec.reason and "runtime" not in rec.reason


def test_the_reference_is_the_onnx_fp32_and_an_executorch_only_table_gets_executorch_fp32():
    first_et = [TABLE[2], TABLE[4], TABLE[0], TABLE[3]]
    assert recommend.reference_of(first_et)["name"] == "fp32"
    # Without a plain fp32, an ONNX Runtime file containing fp32 comes before another runtime's.
    laptop = {"name": "laptop-fp32", "path": "/x/laptop-fp32.onnx", "accuracy": 0.99}
    assert recommend.reference_of([TABLE[2], TABLE[4], laptop]) is laptop
    et_only = [r for r in TABLE if r["runtime"] == "executorch"]
    assert recommend.reference_of(list(reversed(et_only)))["name"] == "executorch-fp32"
    rec = pick_from(et_only)
    assert rec.name == "executorch-int8" and "faster than executorch-fp32" in rec.reason
    # Rows the harness names without a path or runtime (core.bench.measure): told by the name's prefix.
    named = [{"name": "litert-fp32", "accuracy": 0.9}, {"name": "executorch-fp32", "accuracy": 0.9},
             {"name": "cnn-fp32", "accuracy": 0.8}]
    assert recommend.reference_of(named)["name"] == "cnn-fp32"


def test_runtime_of_a_row_comes_from_meta_else_its_suffix():
    stored = [{"id": 1, "name": "fp32", "path": "/x/fp32.onnx", "size_bytes": 10, "status": "benchmarked",
               "meta": {}, "bench": {"latency_p50_ms": 0.1, "accuracy": 0.9}},
              {"id": 2, "name": "mine", "path": "/x/mine.pte", "size_bytes": 10, "status": "benchmarked",
               "meta": {"zip_bytes": 7}, "bench": {"batch_method": "resized"}},
              {"id": 3, "name": "custom", "path": "/x/custom.bin", "size_bytes": 10, "status": "built",
               "meta": {"runtime": "litert", "zip_bytes": 8}, "bench": {}},
              {"id": 4, "name": "ort", "path": "/x/m.ort", "size_bytes": 10, "status": "built"}]
    rows = recommend.bench_rows(stored)
    assert [r["runtime"] for r in rows] == ["onnxruntime", "executorch", "litert", "onnxruntime"]
    assert [r["zip_bytes"] for r in rows] == [None, 7, 8, None]
    assert rows[1]["batch_method"] == "resized"


# -- the stored runtime preference ------------------------------------------------------------

def _run(db) -> int:
    from store import datasets as store_datasets

    return store_runs.create(db, dataset_id=store_datasets.by_name(db, "digits")["id"], model="cnn", config={},
                             epochs_total=1)


def _variants(db, run_id: int, table=TABLE) -> dict[str, int]:
    ids = {}
    for r in table:
        ids[r["name"]] = store_variants.insert(
            db, name=r["name"], path=f"/nowhere/{r['name']}{SUFFIX[r['runtime']]}", sha256="0" * 64,
            size_bytes=r["size_bytes"], run_id=run_id, status="benchmarked",
            meta={"runtime": r["runtime"], "zip_bytes": r["size_bytes"] * 3 // 4},
            bench={"latency_p50_ms": r["latency_p50_ms"], "accuracy": r["accuracy"]})
    return ids


def test_the_runtime_preference_is_stored_per_run_and_as_the_default(digits_db):
    db, _ = digits_db
    assert migrations.version(db) == len(migrations.MIGRATIONS)
    first, second = _run(db), _run(db)
    ids = _variants(db, first)
    rows = store_variants.latest_for_run(db, first)
    assert recommend.load_prefs(db, first).runtime == "any"
    assert recommend.pick(db, rows).variant_id == ids["executorch-int8"]

    recommend.save_prefs(db, runtime="onnxruntime", run_id=first)
    assert recommend.load_prefs(db, first) == recommend.Prefs("latency", 1.0, "run", "onnxruntime")
    assert recommend.load_prefs(db, second).runtime == "any", "only that run changed"
    assert recommend.pick(db, rows).variant_id == ids["int8-static"]
    recommend.save_prefs(db, prefer="size", run_id=first)  # what is not given keeps its value
    assert recommend.load_prefs(db, first).runtime == "onnxruntime"

    recommend.save_prefs(db, runtime="litert", run_id=second, as_default=True)  # the Quantize panel's key
    assert recommend.load_prefs(db, None).runtime == "litert"
    assert recommend.load_prefs(db, first).runtime == "onnxruntime", "a run's own survives the default"

    given = recommend.override(db, rows, runtime="executorch")
    assert (given.runtime, given.prefer, given.scope) == ("executorch", "size", "given")
    assert recommend.pick(db, rows, prefs=given).name == "executorch-int8"
    assert recommend.load_prefs(db, first).runtime == "onnxruntime", "an override is not stored"

    with pytest.raises(ConfigError, match=r"^runtime must be one of any, onnxruntime, executorch, litert, not 'tflite'$"):
        recommend.save_prefs(db, runtime="tflite", run_id=first)
    assert recommend.load_prefs(db, first).runtime == "onnxruntime"


def test_prefs_stored_before_the_runtime_column_judge_every_runtime(tmp_path):
    """A store from before the migration: its rows read as runtime "any" afterwards."""
    import store

    path = tmp_path / "old.db"
    db = store.connect(path, migrate=False)
    for number in range(len(migrations.MIGRATIONS) - 1):
        migrations.MIGRATIONS[number](db)
    db.execute(f"PRAGMA user_version = {len(migrations.MIGRATIONS) - 1}")
    db.execute("INSERT INTO recommend_prefs (run_id, prefer, budget_points, updated_at) VALUES (0, 'size', 0.5, 0)")
    assert migrations.migrate(db) == len(migrations.MIGRATIONS)
    assert recommend.load_prefs(db, None) == recommend.Prefs("size", 0.5, "global", "any")
    db.conn.close()


def test_the_cli_stores_export_runtime_and_lists_runtimes(digits_db, tmp_path, capsys):
    pytest.importorskip("onnx")  # `export` checks its tools before queueing: not on the phone profile
    from store import jobs
    from tui.cli import main

    db, db_path = digits_db
    run_id = _run(db)
    ids = _variants(db, run_id)
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"placeholder: queueing checks the file exists, the job reads it")
    store_runs.update(db, run_id, status="done", checkpoint_path=str(ckpt))

    assert main(["--db", str(db_path), "export", str(run_id), "--runtime", "onnxruntime", "--json"]) == 0
    queued = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert queued["status"] == "queued"
    assert jobs.get(db, queued["job_id"])["payload"]["runtime"] == "onnxruntime"
    assert recommend.load_prefs(db, run_id).runtime == "onnxruntime"
    assert recommend.load_prefs(db, None).runtime == "any", "the CLI's flag is that run's, not the default"

    assert main(["--db", str(db_path), "models", "list", "--run", str(run_id), "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"]}
    assert [n for n, m in listed.items() if m["recommended"]] == ["int8-static"]
    assert {n: m["runtime"] for n, m in listed.items()} == {r["name"]: r["runtime"] for r in TABLE}
    assert listed["litert-int8"]["zip_bytes"] == 45_000 * 3 // 4
    assert main(["--db", str(db_path), "models", "list", "--run", str(run_id)]) == 0
    text = capsys.readouterr().out
    # The rt column by variant id (a narrow console may cut long names with "…").
    cells = {int(m[1]): m[2] for m in re.finditer(r"^\s*(\d+)\s+\d+\s+(?:★ )?\S+\s+(\S+)", text, re.M)}
    assert text.split()[3] == "rt", text
    assert cells == {ids[r["name"]]: {"onnxruntime": "ORT", "executorch": "ET", "litert": "LiteRT"}[r["runtime"]]
                     for r in TABLE}, text

    with pytest.raises(SystemExit) as bad:
        main(["--db", str(db_path), "export", str(run_id), "--runtime", "tensorrt"])
    assert bad.value.code == 2
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def test_a_variant_line_names_its_runtime_zip_size_and_a_looped_batch():
    from tui.commands.export import describe

    line = describe({"name": "litert-int8", "runtime": "litert", "size_bytes": 60_000, "zip_bytes": 42_000,
                     "latency_p50_ms": 0.017, "throughput_per_s": 8000.0, "batch_method": "loop"})
    assert re.match(r"^litert-int8 +LiteRT +58\.6 KB \(zip 41\.0 KB\)  load", line), line
    assert "8000/s at batch 8 (loop)" in line
    plain = describe({"name": "fp32", "path": "/x/fp32.onnx", "size_bytes": 60_000, "throughput_per_s": 8000.0})
    assert "ONNX Runtime" in plain and "zip" not in plain and "(loop)" not in plain


# -- the Quantize panel ---------------------------------------------------------------------

def _panel_data(runtime: str = "any"):
    from tui.panels.quantize import QuantizeData

    stored = [{"id": i, "name": r["name"], "path": f"/x/{r['name']}{SUFFIX[r['runtime']]}", "size_bytes": r["size_bytes"],
               "status": "benchmarked", "meta": {"runtime": r["runtime"], "zip_bytes": r["size_bytes"] // 2},
               "bench": {"latency_p50_ms": r["latency_p50_ms"], "accuracy": r["accuracy"]}}
              for i, r in enumerate(TABLE, 1)]
    run = {"id": 1, "model": "cnn", "dataset_name": "digits", "config": {}, "metrics": {}}
    return QuantizeData([run], 1, recommend.bench_rows(stored), {"torch_latency_p50_ms": 0.2}, runtime=runtime)


def _plain(text: str) -> list[str]:
    return [re.sub(r"\[/?[^\]]*\]", "", line) for line in text.splitlines()]


def _table(lines: list[str]) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith("  variant"))
    end = next(i for i in range(start, len(lines)) if not lines[i].strip())
    return lines[start:end]


def test_the_panel_table_has_runtime_and_zip_columns_where_there_is_room():
    from tui.panels.quantize import render_detail

    wide = _plain(render_detail(_panel_data(), width=64))
    table = _table(wide)
    assert table[0].split() == ["variant", "rt", "size", "zip", "p50", "acc"]
    by_name = {line[2:].split()[0]: line for line in table[1:]}
    assert by_name["executorch-int8"].startswith("★ ") and by_name["executorch-int8"].split()[2] == "ET"
    assert by_name["fp32"].split()[1] == "ORT" and by_name["litert-int8"].split()[1] == "LiteRT"
    assert by_name["litert-int8"].split()[3] == "22KB", "the zip column"
    assert all(len(line) <= 64 for line in table)
    assert "Recommended: executorch-int8" in "\n".join(wide) and "any runtime" in "\n".join(wide)

    phone = _plain(render_detail(_panel_data(), width=38))
    table = _table(phone)
    assert "rt" not in table[0].split() and "zip" not in table[0].split()
    assert any(line.startswith("★ ET-int8") for line in table), "on a phone the name says the runtime"
    assert any(line.startswith("  LiteRT-int8") for line in table)
    assert all(len(line) <= 38 for line in table), [line for line in table if len(line) > 38]
    # The details still give every variant's runtime and zip size.
    from core.fmt import compact_bytes

    assert "executorch-int8 ExecuTorch" in phone and any(f"zip {compact_bytes(35_000)}" in line for line in phone)

    mid = _table(_plain(render_detail(_panel_data(), width=46)))
    assert "rt" in mid[0].split() and "zip" not in mid[0].split() and all(len(line) <= 46 for line in mid)


def test_the_panel_follows_the_runtime_preference():
    from tui.panels.quantize import render_detail

    text = "\n".join(_plain(render_detail(_panel_data("onnxruntime"), width=64)))
    assert "Recommended: int8-static" in text and "ONNX Runtime only" in text
    text = "\n".join(_plain(render_detail(_panel_data(), width=64, runtime="litert")))
    assert "Recommended: litert-int8" in text
    # ORT-only rows where the user wants ExecuTorch: nothing recommended, and why.
    data = _panel_data("executorch")
    data.variants = [v for v in data.variants if v["runtime"] == "onnxruntime"]
    text = "\n".join(_plain(render_detail(data, width=64)))
    assert "Recommended" not in text and "No recommendation: no ExecuTorch variant has been benchmarked" in text


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _wait_for(pilot, condition, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.05)


@pytest.mark.anyio
async def test_the_runtime_key_cycles_stores_and_fits_the_footer_at_40_columns(digits_db):
    from tui.app import make_app

    db, db_path = digits_db
    run_id = _run(db)
    store_runs.update(db, run_id, status="done", epochs_done=1)
    ids = _variants(db, run_id)
    app = make_app(db_path, panel="q", sample_device=False, poll_interval=0.1)
    async with app.run_test(size=(40, 20)) as pilot:
        view = app.query_one("#quantize-view")
        await _wait_for(pilot, lambda: "Recommended: executorch-int8" in str(view.render()))
        shown = {k.key: k.region for k in app.query("FooterKey")}
        for key in ("e", "b", "z", "u", "r", "x"):
            assert key in shown and shown[key].right <= 40, f"footer button {key} must be tappable at 40 columns"
        await pilot.press("r")  # any → onnxruntime
        await _wait_for(pilot, lambda: "Recommended: int8-static" in str(view.render()))
        await _wait_for(pilot, lambda: recommend.load_prefs(db, run_id).runtime == "onnxruntime")
        assert recommend.load_prefs(db, None).runtime == "onnxruntime", "the panel's choice is the new default"
        assert recommend.pick(db, store_variants.latest_for_run(db, run_id)).variant_id == ids["int8-static"]
        for _ in range(3):  # → executorch → litert → any
            await pilot.press("r")
        await _wait_for(pilot, lambda: recommend.load_prefs(db, run_id).runtime == "any")
        await _wait_for(pilot, lambda: "Recommended: executorch-int8" in str(view.render()))


def test_bench_cli_runtime_flag_restricts_the_pick_and_lines_name_the_runtime(digits_db, tmp_path, capsys):
    """`pocketops bench A.onnx B.onnx --runtime litert`: no LiteRT file among them, so nothing is recommended.
    (Needs onnx to write the files: skipped in the phone profile.)"""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tests._deploy_helpers import digits_weights, write_onnx
    from tui.cli import main

    db, db_path = digits_db
    W, b = digits_weights(0)
    fp32 = write_onnx(tmp_path / "fp32.onnx", W, b)
    other = write_onnx(tmp_path / "other.onnx", W * 0.5, b)
    args = ["--db", str(db_path), "bench", str(fp32), str(other), "--dataset", "digits"]
    assert main([*args, "--runtime", "litert", "--json"]) == 0
    found = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert found["runtime"] == "litert" and found["recommended"]["name"] is None
    assert found["recommended"]["reason"].startswith("no LiteRT variant has been benchmarked")
    assert [m["runtime"] for m in found["models"]] == ["onnxruntime", "onnxruntime"]
    assert all(m["zip_bytes"] and m["zip_bytes"] < m["size_bytes"] * 2 for m in found["models"])
    assert recommend.load_prefs(db).runtime == "any", "--runtime is for that call only"

    assert main([*args, "--runtime", "onnxruntime"]) == 0
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if line.startswith(("fp32 ", "other "))]
    assert len(lines) == 2 and all(" ONNX Runtime " in line and "(zip " in line for line in lines), text
    assert "recommended: " in text


def test_when_the_reference_is_another_runtimes_best_its_speed_is_said_once():
    """The shape of a real digits CNN run: LiteRT int8 fastest, ONNX fp32 the best ONNX Runtime variant."""
    table = [row("fp32", "onnxruntime", 0.021, 0.955, 214_000, 1), row("int8-static", "onnxruntime", 0.023, 0.959, 57_000, 2),
             row("executorch-int8", "executorch", 0.0195, 0.959, 65_000, 3),
             row("litert-int8", "litert", 0.015, 0.959, 64_000, 4)]
    rec = pick_from(table)
    assert rec.name == "litert-int8"
    assert "1.4× faster than the best ONNX Runtime variant (fp32) and 1.3× faster than the best ExecuTorch variant" \
        in rec.reason
    assert "faster than fp32" not in rec.reason and "0.30× the size of fp32" in rec.reason
