"""`pocketops db tables | export`: the store's rows out through sqlite-utils, read-only."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import store
from store import datasets as store_datasets
from store import runs

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.phone


def cli(home: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "POCKETOPS_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "tui.cli", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def home(tmp_path):
    from core.datasets import ensure_builtin

    db = store.connect(tmp_path / "pocketops.db")
    ensure_builtin(db, tmp_path / "pocketops.db")
    dataset_id = store_datasets.by_name(db, "digits")["id"]
    for model in ("mlp", "cnn"):
        runs.create(db, dataset_id=dataset_id, model=model, config={"note": "a, comma"}, epochs_total=1)
    db.close()
    return tmp_path


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_tables_lists_counts(home):
    proc = cli(home, "db", "tables", "--json")
    assert proc.returncode == 0, proc.stderr
    tables = {t["table"]: t["rows"] for t in json.loads(proc.stdout)}
    assert tables["runs"] == 2
    assert "jobs" in tables and "metrics" in tables


def test_export_csv_json_and_where_leave_the_store_unchanged(home):
    before = _md5(home / "pocketops.db")
    proc = cli(home, "db", "export", "runs")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["model"] for r in rows] == ["mlp", "cnn"]
    assert json.loads(rows[0]["config"]) == {"note": "a, comma"}
    proc = cli(home, "db", "export", "runs", "--format", "jsonl", "--where", "model = 'cnn'")
    assert [json.loads(line)["model"] for line in proc.stdout.splitlines()] == ["cnn"]
    out = home / "runs.json"
    proc = cli(home, "db", "export", "runs", "--format", "json", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"] == 2
    assert len(json.loads(out.read_text())) == 2
    assert _md5(home / "pocketops.db") == before


@pytest.mark.parametrize("argv, expected", [
    (("db", "export", "nope"), "no table 'nope'"),
    (("db", "export", "runs", "--where", "no_such_column = 1"), "--where 'no_such_column = 1'"),
    (("db", "export", "runs", "--where", "1; DROP TABLE runs"), "--where"),
])
def test_bad_input_is_one_line_and_changes_nothing(home, argv, expected):
    before = _md5(home / "pocketops.db")
    proc = cli(home, *argv)
    assert proc.returncode != 0
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert _md5(home / "pocketops.db") == before
    assert cli(home, "db", "tables", "--json").returncode == 0
