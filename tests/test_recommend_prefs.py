"""One recommendation: stored preferences (a global default, per-run overrides), the one fp32
reference rule, and the Deploy form offering what the Quantize panel recommends."""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils

from core import recommend
from core.errors import ConfigError
from store import migrations
from store import runs as store_runs
from store import variants as store_variants


def row(name, p50, acc, size, vid=None):
    return {"name": name, "variant_id": vid, "latency_p50_ms": p50, "accuracy": acc, "size_bytes": size}


def _run(db) -> int:
    from store import datasets as store_datasets

    return store_runs.create(db, dataset_id=store_datasets.by_name(db, "digits")["id"], model="cnn", config={},
                             epochs_total=1)


def _variants(db, run_id: int, figures: dict) -> dict[str, int]:
    """Benchmarked variant rows of ``run_id`` (no files: the recommendation reads figures only)."""
    ids = {}
    for name, (p50, acc, size) in figures.items():
        ids[name] = store_variants.insert(db, name=name, path=f"/nowhere/{name}.onnx", sha256="0" * 64,
                                          size_bytes=size, run_id=run_id, status="benchmarked",
                                          bench={"latency_p50_ms": p50, "accuracy": acc})
    return ids


# fp16 is the fastest; int8-static is small and loses 0.05 points; int8-dynamic is the smallest and loses 0.2.
# So: fastest → fp16; smallest within 1 point → int8-dynamic; smallest within 0.1 point → int8-static.
FIGURES = {"fp32": (0.030, 0.990, 200_000), "fp16": (0.020, 0.990, 100_000),
           "int8-static": (0.040, 0.9895, 50_000), "int8-dynamic": (0.035, 0.988, 45_000)}


# -- stored preferences ----------------------------------------------------------------------

@pytest.mark.phone
def test_the_schema_has_the_prefs_table_and_nothing_stored_means_the_defaults(digits_db):
    db, _ = digits_db
    assert migrations.version(db) == len(migrations.MIGRATIONS)
    assert "recommend_prefs" in sqlite_utils.Database(db.conn).table_names()
    prefs = recommend.load_prefs(db, _run(db))
    assert (prefs.prefer, prefs.budget_points, prefs.scope) == ("latency", 1.0, "default")


@pytest.mark.phone
def test_the_global_default_applies_to_every_run_until_a_run_has_its_own(digits_db):
    db, _ = digits_db
    first, second = _run(db), _run(db)
    recommend.save_prefs(db, prefer="size", budget_points=0.5)  # the global default
    assert recommend.load_prefs(db, first) == recommend.Prefs("size", 0.5, "global")
    assert recommend.load_prefs(db, None) == recommend.Prefs("size", 0.5, "global")

    recommend.save_prefs(db, budget_points=2.0, run_id=first)  # what is not given keeps the applying value
    assert recommend.load_prefs(db, first) == recommend.Prefs("size", 2.0, "run")
    assert recommend.load_prefs(db, second) == recommend.Prefs("size", 0.5, "global"), "only that run changed"

    recommend.save_prefs(db, prefer="latency", run_id=second, as_default=True)  # the Quantize panel's toggle
    assert recommend.load_prefs(db, second) == recommend.Prefs("latency", 0.5, "run")
    assert recommend.load_prefs(db, None).prefer == "latency", "the panel's choice is the new default"
    assert recommend.load_prefs(db, first) == recommend.Prefs("size", 2.0, "run"), "a run's own survives the default"


@pytest.mark.phone
def test_bad_prefs_are_one_line_errors_and_write_nothing(digits_db):
    db, _ = digits_db
    run_id = _run(db)
    with pytest.raises(ConfigError, match=r"^prefer must be one of latency, size, not 'accuracy'$"):
        recommend.save_prefs(db, prefer="accuracy", run_id=run_id)
    with pytest.raises(ConfigError, match=r"^budget_points must be ≥ 0, not -1$"):
        recommend.save_prefs(db, budget_points=-1)
    assert db.execute("SELECT COUNT(*) FROM recommend_prefs").fetchone()[0] == 0


@pytest.mark.phone
def test_pick_export_summary_and_deploy_form_follow_the_stored_prefs(digits_db):
    from core.export_job import summary
    from store import deployments
    from tui.panels.deploy import recommended_variant

    db, _ = digits_db
    run_id = _run(db)
    ids = _variants(db, run_id, FIGURES)
    rows = store_variants.latest_for_run(db, run_id)
    offered = deployments.variants(db)
    assert recommend.pick(db, rows).variant_id == ids["fp16"] == recommended_variant(db, offered)
    assert summary(db, run_id, rows)["recommended"]["name"] == "fp16"

    recommend.save_prefs(db, prefer="size", budget_points=1.0, run_id=run_id)
    assert recommend.pick(db, rows).variant_id == ids["int8-dynamic"] == recommended_variant(db, offered)
    result = summary(db, run_id, rows)
    assert (result["recommended"]["name"], result["prefer"], result["budget_points"]) == ("int8-dynamic", "size", 1.0)

    recommend.save_prefs(db, budget_points=0.1, run_id=run_id)  # int8-dynamic's 0.2-point drop is now too much
    assert recommend.pick(db, rows).name == "int8-static" == summary(db, run_id, rows)["recommended"]["name"]
    assert recommended_variant(db, offered) == ids["int8-static"]
    assert recommend.pick(db, rows, prefs=recommend.Prefs("size", 0.0)).name == "fp16", "a one-off override"
    assert recommend.load_prefs(db, run_id).budget_points == 0.1, "an override is not stored"


@pytest.mark.phone
def test_models_list_marks_the_same_pick(digits_db, capsys):
    import json

    from tui.cli import main

    db, db_path = digits_db
    run_id = _run(db)
    ids = _variants(db, run_id, FIGURES)
    recommend.save_prefs(db, prefer="size", budget_points=0.1, run_id=run_id)
    assert main(["--db", str(db_path), "models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"]
    assert [m["variant_id"] for m in listed if m["recommended"]] == [ids["int8-static"]]


@pytest.mark.phone
def test_an_export_asked_with_prefs_stores_them_for_its_run_and_one_without_keeps_them(digits_db, tmp_path):
    from core.export_job import queue_export
    from store import jobs

    db, _ = digits_db
    run_id = _run(db)
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"placeholder: queueing checks the file exists, the job reads it")
    store_runs.update(db, run_id, status="done", checkpoint_path=str(ckpt))
    job_id = queue_export(db, run_id, prefer="size", budget_points=0.5)
    assert recommend.load_prefs(db, run_id) == recommend.Prefs("size", 0.5, "run")
    assert recommend.load_prefs(db, None).scope == "default", "the CLI's flags are that run's, not the default"
    jobs.request_cancel(db, job_id)
    queue_export(db, run_id)
    assert recommend.load_prefs(db, run_id) == recommend.Prefs("size", 0.5, "run")


# -- the one fp32 reference rule -------------------------------------------------------------

@pytest.mark.phone
def test_the_reference_rule():
    """Named by the caller; else "fp32"; else the first containing fp32; else the most accurate."""
    a, b = {"name": "custom", "accuracy": 0.8}, {"name": "laptop-fp32", "accuracy": 0.7}
    c, d = {"name": "fp32", "accuracy": 0.6}, {"name": "cnn/fp32", "accuracy": 0.9}
    assert recommend.reference_of([a, b, c, d]) is c
    assert recommend.reference_of([a, b, d]) is b
    assert recommend.reference_of([a, b, c], name="custom") is a
    assert recommend.reference_of([a, b], name="missing") is b, "an unknown name falls back to the rule"
    assert recommend.reference_of([a, {"name": "other", "accuracy": 0.95}])["name"] == "other"
    assert recommend.reference_of([{"name": "x"}, {"name": "y"}])["name"] == "x", "nothing measured: the first"
    assert recommend.reference_of([]) is None
    # The recommendation's accuracy drop is measured against the same row: the fp32-named one, not the best.
    rec = recommend.recommend([row("custom-b", 0.01, 0.95, 50_000), row("laptop-fp32", 0.02, 0.90, 100_000)],
                              budget_points=1.0)
    assert rec.name == "custom-b" and "accuracy +5.0 points" in rec.reason


def _digits_models(tmp_path: Path) -> tuple[Path, Path]:
    """A good and a damaged softmax regression on digits, as real ONNX files."""
    pytest.importorskip("onnx")
    from tests._deploy_helpers import digits_weights, write_onnx

    W, b = digits_weights(0)
    damaged = W.copy()
    damaged[:, ::2] = np.random.default_rng(0).normal(0, 0.5, (W.shape[0], (W.shape[1] + 1) // 2))
    return write_onnx(tmp_path / "good.onnx", W, b), write_onnx(tmp_path / "damaged.onnx", damaged, b)


def test_measure_uses_the_same_rule_for_agreement(digits_db, tmp_path):
    """Without an fp32 name the most accurate model is the reference; with one, that model is."""
    pytest.importorskip("onnxruntime")
    from core import bench
    from core.export_job import eval_data

    db, _ = digits_db
    good, damaged = _digits_models(tmp_path)
    data = eval_data(db, "digits")
    quick = bench.BenchConfig(warmup=2, repeats=20, throughput_repeats=5, loads=1, profile=False, isolate=False)

    plain = bench.measure([bench.Contender("d", "damaged", damaged), bench.Contender("g", "good", good)], data,
                          config=quick)
    assert plain.figures["g"]["accuracy"] > plain.figures["d"]["accuracy"], "the damage costs accuracy"
    assert plain.reference.key == "g"
    assert plain.figures["g"]["agreement"] == 1.0 and plain.figures["d"]["agreement"] < 1.0
    assert all(f["latency_method"] == "interleaved" and "isolated_latency_p50_ms" in f for f in plain.figures.values())

    named = bench.measure([bench.Contender("d", "damaged-fp32", damaged), bench.Contender("g", "good", good)], data,
                          config=quick)
    assert named.reference.key == "d"
    assert named.figures["d"]["agreement"] == 1.0 and named.figures["g"]["agreement"] < 1.0
    assert named.figures["d"]["max_abs_logit_diff"] == 0.0


# -- the dashboard: what the Quantize panel shows is what the Deploy form offers ---------------

@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _wait_for(pilot, condition, timeout: float = 15.0) -> None:
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.05)


@pytest.mark.anyio
@pytest.mark.phone
async def test_deploy_form_offers_what_the_quantize_panel_recommends_after_smallest_and_a_tenth_of_a_point(digits_db):
    from textual.widgets import Select

    from store import deployments
    from tui.app import make_app
    from tui.panels.deploy import DeployDialog, recommended_variant

    db, db_path = digits_db
    run_id = _run(db)
    store_runs.update(db, run_id, status="done", epochs_done=1)
    ids = _variants(db, run_id, FIGURES)
    assert recommended_variant(db, deployments.variants(db)) == ids["fp16"], "before: the fastest"

    app = make_app(db_path, panel="q", sample_device=False, poll_interval=0.1)
    async with app.run_test(size=(120, 40)) as pilot:
        view = app.query_one("#quantize-view")
        await _wait_for(pilot, lambda: "Recommended: fp16" in str(view.render()))
        await pilot.press("z")                       # smallest
        for _ in range(4):                           # budget 1 → 2 → 5 → 0 → 0.1
            await pilot.press("u")

        def stored() -> bool:
            prefs = recommend.load_prefs(db, run_id)
            return (prefs.prefer, prefs.budget_points) == ("size", 0.1)

        await _wait_for(pilot, lambda: stored() and "prefer size · budget 0.1 pt" in str(view.render()))
        shown = re.search(r"Recommended: (\S+)", str(view.render())).group(1)
        assert shown == "int8-static", "the smallest within 0.1 point (int8-dynamic loses 0.2)"
        assert recommend.load_prefs(db, None).prefer == "size", "the new default"

        await pilot.press("p")
        await pilot.press("n")
        await _wait_for(pilot, lambda: isinstance(app.screen, DeployDialog))
        offered = app.screen.query_one("#variant", Select).value
        assert offered == ids[shown]
