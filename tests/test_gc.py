"""Retention (`pocketops gc`): what goes, what is kept and why, dry runs change nothing."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import store
from core import gc, jobkinds
from core.errors import ConfigError
from store import artifacts, deployments, jobs, retention, runs, variants
from store.db import transaction

ROOT = Path(__file__).resolve().parent.parent
DAY = 86_400.0


def _file(path: Path, size: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return str(path)


def _run(db, files: Path, dataset_id: int, *, age_days: float, with_variants: bool = True) -> dict:
    """A finished run with best.pt and last.pt, and (optionally) an fp32 and an int8 variant with a bundle."""
    run_id = runs.create(db, dataset_id=dataset_id, model="mlp", config={}, epochs_total=1)
    runs.set_status(db, run_id, "done")
    ended = store.now() - age_days * DAY
    db.execute("UPDATE runs SET finished_at = ?, created_at = ? WHERE id = ?", (ended, ended, run_id))
    out = {"run": run_id, "ckpt": [], "variants": [], "bundles": []}
    for name, size in (("best.pt", 3000), ("last.pt", 2000)):
        path = _file(files / "runs" / str(run_id) / name, size)
        artifacts.register(db, kind="checkpoint", path=path, sha256="x", size_bytes=size, run_id=run_id)
        out["ckpt"].append(path)
    runs.update(db, run_id, checkpoint_path=out["ckpt"][1])
    if with_variants:
        for name, size in (("fp32", 1500), ("int8-dynamic", 500)):
            path = _file(files / "runs" / str(run_id) / "onnx" / "job-1" / f"{name}.onnx", size)
            artifacts.register(db, kind="onnx", path=path, sha256="y", size_bytes=size, run_id=run_id)
            vid = variants.insert(db, name=name, path=path, sha256="y", size_bytes=size, run_id=run_id,
                                  meta={"checkpoint": out["ckpt"][0]})
            out["variants"].append(vid)
            bundle = files / "bundles" / f"variant-{vid}-abc"
            _file(bundle / "model.onnx", size)
            _file(bundle / "model.json", 100)
            artifacts.register(db, kind="bundle", path=str(bundle), sha256="z", size_bytes=size + 100, run_id=run_id,
                               meta={"variant_id": vid})
            out["bundles"].append(str(bundle))
    return out


@pytest.fixture
def seeded(tmp_path):
    """Four runs, oldest first: r1 (60 d, deployed int8), r2 (40 d), r3 (20 d, no variants), r4 (1 d)."""
    db_path = tmp_path / "p.db"
    db = store.connect(db_path)
    files = tmp_path / "p-files"
    ds = _file(files / "datasets" / "d.npz", 700)
    with transaction(db):
        dataset_id = db.execute(
            "INSERT INTO datasets (name, kind, fingerprint, rows, n_classes, classes, class_counts, input_shape, "
            "artifact_path, created_at) VALUES ('d', 'csv', 'f', 10, 2, '[]', '[]', '[4]', ?, 0)", (ds,)).lastrowid
        artifacts.register(db, kind="dataset", path=ds, sha256="d", size_bytes=700)
    made = [_run(db, files, dataset_id, age_days=60), _run(db, files, dataset_id, age_days=40),
            _run(db, files, dataset_id, age_days=20, with_variants=False), _run(db, files, dataset_id, age_days=1)]
    dep = deployments.create(db, variant_id=made[0]["variants"][1], target="local", name="local", status="stopped")
    yield db, db_path, made, dep
    db.close()


def _state(db_path: Path) -> dict[str, str]:
    """md5 of the database and of every file beside it (what a dry run must not change)."""
    found = {}
    for p in sorted([db_path, *db_path.parent.joinpath(f"{db_path.stem}-files").rglob("*")]):
        if p.is_file():
            found[str(p)] = hashlib.md5(p.read_bytes()).hexdigest()
    return found


def test_plan_keeps_the_deployed_variant_and_the_checkpoint_it_was_built_from(seeded):
    db, _, (r1, r2, r3, r4), _ = seeded
    chosen = gc.plan(db, keep_last=1)
    paths = {i.path for i in chosen.items}
    assert chosen.runs == [r3["run"], r2["run"], r1["run"]]
    # r1: its deployed int8 variant (and so best.pt) stays; fp32, its bundle and last.pt go.
    assert r1["ckpt"][0] not in paths and r1["ckpt"][1] in paths
    assert variants.get(db, r1["variants"][1])["path"] not in paths
    assert variants.get(db, r1["variants"][0])["path"] in paths
    assert r1["bundles"][0] in paths and r1["bundles"][1] not in paths
    # r2 and r3: everything; r4 (newest): nothing.
    assert set(r2["ckpt"]) | set(r2["bundles"]) | set(r3["ckpt"]) <= paths
    assert not any(p.startswith(str(Path(r4["ckpt"][0]).parent)) for p in paths)
    assert {k["why"] for k in chosen.kept} == {"variant %d is used by a deployment or a queued job" % r1["variants"][1],
                                               "a kept variant or a deployment was built from it"}
    # Freed bytes are what is on disk: r1 2000+1500+1600, r2 3000+2000+1500+500+1600+600, r3 5000.
    assert chosen.bytes == 5100 + 9200 + 5000
    assert chosen.counts() == {"checkpoint": 5, "variant": 3, "bundle": 3}


def test_older_than_and_keep_last_both_must_hold(seeded):
    db, _, (r1, r2, r3, r4), _ = seeded
    assert gc.plan(db, older_than_days=30).runs == [r2["run"], r1["run"]]
    assert gc.plan(db, keep_last=3, older_than_days=10).runs == [r1["run"]]
    assert gc.plan(db, keep_last=4).items == []
    with pytest.raises(ConfigError, match="--keep-last N"):
        gc.plan(db)
    with pytest.raises(ConfigError, match="--keep-last must be 0 or more"):
        gc.plan(db, keep_last=-1)


def test_running_runs_and_runs_or_variants_a_job_works_on_are_never_touched(seeded):
    db, _, (r1, r2, r3, r4), _ = seeded
    runs.set_status(db, r1["run"], "running")
    jobs.enqueue(db, "export", {"run_id": r3["run"]}, run_id=r3["run"])
    jobkinds.queue(db, "deploy", {"variant_id": r2["variants"][0], "target": "local"})
    chosen = gc.plan(db, keep_last=0)
    assert chosen.runs == [r4["run"], r2["run"]]  # not r1 (running), not r3 (an export is queued)
    assert variants.get(db, r2["variants"][0])["path"] not in {i.path for i in chosen.items}
    assert r2["ckpt"][0] not in {i.path for i in chosen.items}  # the queued deploy's variant was built from it


def test_apply_removes_rows_and_files_and_leaves_no_row_naming_a_missing_file(seeded):
    db, _, (r1, r2, r3, r4), dep = seeded
    before = retention.disk_use(db)
    chosen = gc.plan(db, keep_last=1)
    done = gc.apply(db, chosen)
    assert done.bytes == chosen.bytes and len(done.items) == len(chosen.items)
    for item in chosen.items:
        assert not Path(item.path).exists(), item.path
    for table in ("artifacts", "variants"):
        for (path,) in db.execute(f"SELECT path FROM {table}").fetchall():
            assert Path(path).exists(), f"{table} row names missing {path}"
    for (path,) in db.execute("SELECT checkpoint_path FROM runs WHERE checkpoint_path IS NOT NULL").fetchall():
        assert Path(path).exists(), path
    # r1 keeps best.pt (its deployed variant was built from it) and now names it; r2 names none.
    assert runs.get(db, r1["run"])["checkpoint_path"] == r1["ckpt"][0]
    assert runs.get(db, r2["run"])["checkpoint_path"] is None
    assert variants.get(db, r1["variants"][1]) is not None and deployments.get(db, dep["id"])["variant_id"] == r1["variants"][1]
    assert variants.get(db, r2["variants"][0]) is None
    assert Path(r4["ckpt"][0]).exists() and variants.get(db, r4["variants"][0]) is not None
    after = retention.disk_use(db)
    assert sum(before.values()) - sum(after.values()) == chosen.bytes
    assert after["datasets"] == before["datasets"] == 700
    # Once more: nothing is left to free.
    assert gc.plan(db, keep_last=1).items == []


def test_apply_skips_a_variant_deployed_after_the_plan(seeded):
    db, _, (r1, r2, *_rest), _ = seeded
    chosen = gc.plan(db, keep_last=1)
    deployments.create(db, variant_id=r2["variants"][0], target="local", name="other", status="running")
    done = gc.apply(db, chosen)
    assert variants.get(db, r2["variants"][0]) is not None
    assert Path(variants.get(db, r2["variants"][0])["path"]).exists()
    assert r2["ckpt"][0] not in {i.path for i in done.items}  # its source checkpoint stays with it
    assert Path(r2["ckpt"][0]).exists()


def _cli(db_path: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tui.cli", "gc", "--db", str(db_path), *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_cli_dry_run_changes_nothing_then_yes_frees_what_it_showed(seeded):
    db, db_path, made, _ = seeded
    expected = gc.plan(db, keep_last=1)
    db.close()  # checkpoint the WAL into the file, so md5s compare the whole store
    before = _state(db_path)
    dry = _cli(db_path, "--keep-last", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == "would free 18.8 KB in 11 file(s) of 3 run(s): 5 checkpoints, 3 variants, 3 bundles"
    dry_json = _cli(db_path, "--keep-last", "1", "--dry-run", "--json")
    assert json.loads(dry_json.stdout)["bytes"] == expected.bytes
    assert _state(db_path) == before
    refused = _cli(db_path, "--keep-last", "1")  # no terminal, no --yes: refuses, changes nothing
    assert refused.returncode == 1 and "pass --yes" in refused.stderr and refused.stdout.startswith("frees 18.8 KB")
    assert _state(db_path) == before
    bad = _cli(db_path)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "--keep-last N" in bad.stderr
    done = _cli(db_path, "--keep-last", "1", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["removed"] and out["bytes"] == expected.bytes and out["runs"] == expected.runs
    after = _state(db_path)
    assert all(i.path not in after and not Path(i.path).exists() for i in expected.items)
    assert made[3]["ckpt"][0] in after


def test_cli_gc_loads_neither_textual_nor_torch(seeded):
    _db, db_path, _made, _dep = seeded
    probe = ("import json, sys\nfrom tui.cli import main\n"
             f"code = main(['gc', '--db', {str(db_path)!r}, '--keep-last', '1', '--dry-run', '--json'])\n"
             "print(json.dumps([code, sorted(m for m in ('textual', 'torch', 'onnx', 'numpy') if m in sys.modules)]),"
             " file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == [0, []], proc.stderr
