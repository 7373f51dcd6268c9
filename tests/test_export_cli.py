"""`pocketops export / bench / models` and the export and bench jobs, end to end on a real store."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import store
from core.atomic import sha256_file
from core.worker import Worker
from store import artifacts, jobs
from store import variants as store_variants
from tests._export_helpers import ROOT, clone_store, exported, trained  # noqa: F401  (session fixtures)
from tui.cli import main

CONTRACT_VARIANT = {"variant_id", "name", "path", "size_bytes", "load_ms", "latency_p50_ms", "latency_p95_ms",
                    "accuracy", "agreement", "max_abs_logit_diff"}


def cli(db_path: Path, *argv: str, prelude: str = "", timeout: float = 600) -> subprocess.CompletedProcess:
    code = f"import sys\n{prelude}\nfrom tui.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = {**os.environ, "POCKETOPS_HOME": str(db_path.parent)}
    return subprocess.run([sys.executable, "-c", code, "--db", str(db_path), *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_export_wait_json_streams_and_ends_with_the_documented_summary(trained, tmp_path):  # noqa: F811
    """`export RUN --wait --json`: progress and variant lines, then the summary scripts rely on."""
    db_path = clone_store(trained, tmp_path)
    run_id = trained.runs["cnn"]
    proc = cli(db_path, "export", str(run_id), "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert {e["event"] for e in lines[:-1]} <= {"progress", "variant"}
    streamed = [e["name"] for e in lines[:-1] if e["event"] == "variant"]
    assert sorted(streamed) == sorted(["fp32", "fp16", "int8-dynamic", "int8-static"]), "each variant once, as it lands"
    summary = lines[-1]
    assert set(summary) >= {"run_id", "variants", "baseline", "recommended"}
    assert summary["run_id"] == run_id
    assert [v["name"] for v in summary["variants"]] == ["fp32", "fp16", "int8-dynamic", "int8-static"]
    db = store.connect(db_path)
    for v in summary["variants"]:
        assert CONTRACT_VARIANT <= set(v)
        assert all(v[k] is not None for k in CONTRACT_VARIANT), v
        assert Path(v["path"]).stat().st_size == v["size_bytes"]
        registered = artifacts.by_path(db, v["path"])
        assert registered["sha256"] == sha256_file(v["path"]) and registered["run_id"] == run_id
        assert v["latency_p50_ms"] <= v["latency_p95_ms"]
    fp32 = summary["variants"][0]
    assert fp32["agreement"] == 1.0 and fp32["max_abs_logit_diff"] == 0.0
    assert summary["baseline"]["torch_latency_p50_ms"] > 0
    rec = summary["recommended"]
    assert set(rec) == {"variant_id", "name", "reason"}
    chosen = next(v for v in summary["variants"] if v["variant_id"] == rec["variant_id"])
    assert chosen["name"] == rec["name"]
    assert (fp32["accuracy"] - chosen["accuracy"]) * 100 <= 1.0, "within the default 1-point budget"
    assert rec["name"] in rec["reason"] and "torch eager" in rec["reason"]
    listed = json.loads(cli(db_path, "models", "list", "--json", "--run", str(run_id)).stdout)["models"]
    assert {m["variant_id"] for m in listed} == {v["variant_id"] for v in summary["variants"]}
    assert all(m["status"] == "benchmarked" for m in listed)


def test_queue_then_worker_then_rebenchmark(trained, tmp_path, capsys):  # noqa: F811
    """Without --wait the job is queued; a worker builds it; a bench job re-measures the run's variants."""
    db_path = clone_store(trained, tmp_path)
    run_id = trained.runs["mlp"]
    assert main(["--db", str(db_path), "export", str(run_id), "--variants", "fp32,int8-static", "--threads", "1",
                 "--json"]) == 0
    queued = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert queued == {"run_id": run_id, "job_id": queued["job_id"], "status": "queued"}
    db = store.connect(db_path)
    job = jobs.get(db, queued["job_id"])
    assert job["kind"] == "export" and job["payload"]["variants"] == ["fp32", "int8-static"]
    assert Worker(db_path).run_one(queued["job_id"])
    job = jobs.get(db, queued["job_id"])
    assert job["status"] == "done", job["error"]
    first = {v["name"]: v for v in store_variants.latest_for_run(db, run_id)}
    assert set(first) == {"fp32", "int8-static"}
    assert first["int8-static"]["meta"]["build"]["calibration_samples"] == 256
    assert first["fp32"]["meta"]["verify"]["agreement"] == 1.0
    assert first["fp32"]["meta"]["baseline"]["torch_latency_p50_ms"] > 0

    bench_id = jobs.enqueue(db, "bench", {"run_id": run_id, "threads": 1}, run_id=run_id)
    assert Worker(db_path).run_one(bench_id)
    bench_job = jobs.get(db, bench_id)
    assert bench_job["status"] == "done", bench_job["error"]
    again = {v["name"]: v for v in store_variants.latest_for_run(db, run_id)}
    for name in first:
        assert again[name]["bench"]["measured_at"] > first[name]["bench"]["measured_at"]
        assert again[name]["bench"]["accuracy"] == first[name]["bench"]["accuracy"], "same data, same predictions"
    assert bench_job["result"]["recommended"]["name"] in first
    assert bench_job["result"]["baseline"]["torch_latency_p50_ms"] > 0, "the export's torch baseline is kept"


def test_missing_onnx_fails_at_once_from_the_cli_and_leaves_nothing(trained, tmp_path):  # noqa: F811
    """No `onnx` package: one line naming it and the ways forward; no job, no variant, no file."""
    db_path = clone_store(trained, tmp_path)
    run_id = trained.runs["cnn"]
    proc = cli(db_path, "export", str(run_id), "--wait", prelude="sys.modules['onnx'] = None")
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "'onnx'" in err and "pip install 'pocketops[export]'" in err
    assert "Termux" in err and "pocketops models add" in err
    db = store.connect(db_path)
    assert jobs.list_jobs(db) == [] and store_variants.list_all(db) == []
    assert not (tmp_path / "t-files" / "runs").exists()


def test_missing_onnx_fails_the_job_at_once_and_leaves_nothing(trained, tmp_path, monkeypatch):  # noqa: F811
    """A worker without `onnx` fails the export job with the message; no rows, no files."""
    db_path = clone_store(trained, tmp_path)
    run_id = trained.runs["cnn"]
    db = store.connect(db_path)
    job_id = jobs.enqueue(db, "export", {"run_id": run_id}, run_id=run_id)
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert Worker(db_path).run_one(job_id)
    job = jobs.get(db, job_id)
    assert job["status"] == "failed"
    assert "ONNX export needs the Python package 'onnx'" in job["error"] and "export on a laptop" in job["error"]
    assert store_variants.list_all(db) == [] and artifacts.for_run(db, run_id) == []
    assert not (tmp_path / "t-files" / "runs").exists()


def test_an_export_that_fails_midway_leaves_no_rows_and_no_files(trained, tmp_path, monkeypatch):  # noqa: F811
    """If quantization fails after fp32 was written, the job's files are removed and nothing is registered."""
    from core import quantize
    from core.errors import ConfigError

    db_path = clone_store(trained, tmp_path)
    run_id = trained.runs["mlp"]
    db = store.connect(db_path)
    job_id = jobs.enqueue(db, "export", {"run_id": run_id, "variants": ["fp32", "int8-static"]}, run_id=run_id)
    real_build = quantize.build

    def failing(name, *a, **kw):
        if name == "int8-static":
            raise ConfigError("calibration exploded (simulated)")
        return real_build(name, *a, **kw)

    monkeypatch.setattr(quantize, "build", failing)
    assert Worker(db_path).run_one(job_id)
    job = jobs.get(db, job_id)
    assert job["status"] == "failed" and "calibration exploded" in job["error"]
    assert store_variants.list_all(db) == [] and artifacts.for_run(db, run_id) == []
    assert not (tmp_path / "t-files" / "runs" / str(run_id) / "onnx" / f"job-{job_id}").exists()


def test_models_add_then_bench_job_on_a_model_made_elsewhere(trained, exported, tmp_path, capsys):  # noqa: F811
    """`models add MODEL.onnx --dataset digits` copies and registers it; a bench job measures it."""
    db_path = clone_store(trained, tmp_path)
    src = exported["cnn"]
    assert main(["--db", str(db_path), "models", "add", str(src), "--dataset", "digits", "--name", "laptop-fp32",
                 "--json"]) == 0
    added = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert added["name"] == "laptop-fp32" and added["sha256"] == sha256_file(src)
    assert Path(added["path"]).is_file() and Path(added["path"]).parent.name == "models"
    db = store.connect(db_path)
    row = store_variants.get(db, added["variant_id"])
    assert row["run_id"] is None and row["status"] == "built" and row["meta"]["dataset"] == "digits"
    job_id = jobs.enqueue(db, "bench", {"variant_ids": [added["variant_id"]]})
    assert Worker(db_path).run_one(job_id)
    assert jobs.get(db, job_id)["status"] == "done"
    measured = store_variants.get(db, added["variant_id"])
    assert measured["status"] == "benchmarked"
    assert 0 < measured["bench"]["accuracy"] <= 1 and measured["bench"]["latency_p50_ms"] > 0


@pytest.mark.parametrize("argv, needle", [
    (["export", "999"], "no run 999"),
    (["export", "{cnn}", "--variants", "fp32,int4"], "unknown variant 'int4'"),
    (["export", "{cnn}", "--threads", "0"], "threads must be 1 or more"),
    (["models", "add", "/nonexistent.onnx"], "no such file"),
    (["bench", "/nonexistent.onnx", "--dataset", "digits"], "no such file"),
])
def test_bad_input_is_one_line_on_stderr(trained, tmp_path, capsys, argv, needle):  # noqa: F811
    db_path = clone_store(trained, tmp_path)
    argv = [a.format(cnn=trained.runs["cnn"]) for a in argv]
    assert main(["--db", str(db_path), *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_models_add_refuses_a_file_onnxruntime_cannot_load(trained, tmp_path, capsys):  # noqa: F811
    db_path = clone_store(trained, tmp_path)
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00garbage")
    assert main(["--db", str(db_path), "models", "add", str(bad)]) == 1
    assert "onnxruntime cannot load this model" in capsys.readouterr().err
    assert store_variants.list_all(store.connect(db_path)) == []


def test_a_run_still_training_is_not_exported(trained, tmp_path, capsys):  # noqa: F811
    from store import runs

    db_path = clone_store(trained, tmp_path)
    db = store.connect(db_path)
    run_id = trained.runs["mlp"]
    runs.update(db, run_id, status="running")
    assert main(["--db", str(db_path), "export", str(run_id)]) == 1
    assert f"run {run_id} is still running; export it when training has finished" in capsys.readouterr().err
    assert jobs.list_jobs(db) == []


def test_models_add_refuses_a_model_made_for_other_data(trained, tmp_path, capsys):  # noqa: F811
    """`models add X.onnx --dataset digits` checks one logit per class and a dynamic batch axis; nothing is copied."""
    from tests.test_bench import _linear_onnx

    db_path = clone_store(trained, tmp_path)
    five = _linear_onnx(tmp_path / "five.onnx", 64, 5)
    assert main(["--db", str(db_path), "models", "add", str(five), "--dataset", "digits"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "[5] per sample, expected [10]" in err
    fixed = _linear_onnx(tmp_path / "fixed.onnx", 64, 10, fixed_batch=True)
    assert main(["--db", str(db_path), "models", "add", str(fixed), "--dataset", "digits"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fixed batch size of 1" in err
    assert store_variants.list_all(store.connect(db_path)) == []
    assert not (db_path.parent / "t-files" / "models").exists() or not any((db_path.parent / "t-files" / "models").iterdir())


def test_a_bench_job_fails_only_the_variant_made_for_other_data(trained, exported, tmp_path, capsys):  # noqa: F811
    """A registered model whose outputs do not match the dataset is marked failed with the reason; the others are measured."""
    from tests.test_bench import _linear_onnx

    db_path = clone_store(trained, tmp_path)
    db = store.connect(db_path)
    good = main(["--db", str(db_path), "models", "add", str(exported["mlp"]), "--dataset", "digits", "--json"])
    assert good == 0
    good_id = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["variant_id"]
    five = _linear_onnx(tmp_path / "five.onnx", 64, 5)
    bad_id = store_variants.insert(db, name="five", path=str(five), sha256=sha256_file(five), size_bytes=five.stat().st_size,
                                   meta={"dataset": "digits", "split": {"seed": 0, "val": 0.15, "test": 0.15}})
    job_id = jobs.enqueue(db, "bench", {"variant_ids": [good_id, bad_id]})
    assert Worker(db_path).run_one(job_id)
    assert jobs.get(db, job_id)["status"] == "done", jobs.get(db, job_id)["error"]
    assert store_variants.get(db, good_id)["status"] == "benchmarked"
    bad = store_variants.get(db, bad_id)
    assert bad["status"] == "failed" and "[5] per sample, expected [10]" in bad["bench"]["error"]


def test_export_cancel_from_the_cli(trained, tmp_path, capsys):  # noqa: F811
    """`export RUN --cancel`: a queued export is cancelled at once; with nothing to cancel, one line says so."""
    db_path = clone_store(trained, tmp_path)
    run_id = trained.runs["mlp"]
    assert main(["--db", str(db_path), "export", str(run_id), "--cancel"]) == 1
    assert f"run {run_id} has no export or re-benchmark queued or running" in capsys.readouterr().err
    assert main(["--db", str(db_path), "export", str(run_id), "--json"]) == 0
    job_id = json.loads(capsys.readouterr().out.strip())["job_id"]
    assert main(["--db", str(db_path), "export", str(run_id), "--cancel", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip()) == {"run_id": run_id, "job_id": job_id, "kind": "export",
                                                          "status": "cancelled"}
    db = store.connect(db_path)
    assert jobs.get(db, job_id)["status"] == "cancelled"
    assert not Worker(db_path).run_one(job_id), "a cancelled job is never claimed"
    assert store_variants.list_all(db) == []


def test_cancel_while_building_removes_the_files_and_registers_nothing(trained, tmp_path):  # noqa: F811
    """A cancel seen between variants (here after fp16) ends the job 'cancelled' with no rows and no files."""
    from core import export_job
    from core.worker import JobContext

    db_path = clone_store(trained, tmp_path)
    db = store.connect(db_path)
    run_id = trained.runs["mlp"]
    job_id = export_job.queue_export(db, run_id, variants=["fp32", "fp16", "int8-dynamic"])
    assert export_job.cancel(db, run_id)["status"] == "cancelled"  # queued: at once

    job_id = export_job.queue_export(db, run_id, variants=["fp32", "fp16", "int8-dynamic"])

    class CancelAfterFp16(JobContext):
        def progress(self, **values):
            super().progress(**values)
            if values.get("stage") == "quantize" and values.get("variant") == "int8-dynamic":
                self._cancelled.set()  # what the heartbeat thread does when it sees the request

    job = jobs.claim(db, "test-worker", job_id=job_id)
    ctx = CancelAfterFp16(db_path=db_path, job=job, worker_id="test-worker", db=db)
    from core.errors import JobCancelled

    with pytest.raises(JobCancelled):
        export_job.run(ctx)
    assert store_variants.list_all(db) == [] and artifacts.for_run(db, run_id) == []
    assert not (tmp_path / "t-files" / "runs" / str(run_id) / "onnx" / f"job-{job_id}").exists()


def test_missing_fp16_converter_fails_at_once_naming_the_pip_package(trained, tmp_path):  # noqa: F811
    """Without onnxconverter-common, asking for fp16 fails before a job exists, naming the pip package."""
    db_path = clone_store(trained, tmp_path)
    proc = cli(db_path, "export", str(trained.runs["cnn"]), "--variants", "fp32,fp16",
               prelude="sys.modules['onnxconverter_common'] = None")
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "'onnxconverter-common'" in err and "pocketops[export]" in err, err
    assert jobs.list_jobs(store.connect(db_path)) == []


def test_models_bench_measures_registered_models_and_stores_the_figures(trained, exported, tmp_path, capsys):  # noqa: F811
    """`models add` twice, then `models bench ID ID --json`: figures stored, agreement against the fp32-named one."""
    db_path = clone_store(trained, tmp_path)
    ids = []
    for name, path in (("laptop-fp32", exported["cnn"]), ("other-mlp", exported["mlp"])):
        assert main(["--db", str(db_path), "models", "add", str(path), "--dataset", "digits", "--name", name, "--json"]) == 0
        ids.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["variant_id"])
    assert main(["--db", str(db_path), "models", "bench", *map(str, ids), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) >= {"run_id", "variants", "baseline", "recommended"}
    rows = {v["name"]: v for v in result["variants"]}
    assert rows["laptop-fp32"]["agreement"] == 1.0 and rows["laptop-fp32"]["max_abs_logit_diff"] == 0.0
    assert 0 < rows["other-mlp"]["agreement"] < 1.0, "a different model disagrees on some samples"
    assert result["recommended"]["name"] in rows
    db = store.connect(db_path)
    assert all(store_variants.get(db, i)["status"] == "benchmarked" for i in ids)
    assert main(["--db", str(db_path), "models", "bench", "999"]) == 1
    assert "no variant 999" in capsys.readouterr().err
