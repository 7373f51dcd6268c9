"""A damaged database file (garbage bytes, truncated, not SQLite at all): every entry point --
CLI commands, the worker, the dashboard -- says in one line which file and how to restore it
(from `pocketops backup`), never a traceback, and exits non-zero."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import store
from store.db import CorruptDatabase, is_corruption

ROOT = Path(__file__).resolve().parent.parent
DAMAGE = ("garbage", "truncated", "text", "damaged-pages")


def _healthy(path: Path) -> bytes:
    from core.datasets import ensure_builtin

    db = store.connect(path)
    ensure_builtin(db, path)
    for i in range(1500):
        db.execute("INSERT INTO events (ts, level, source, message) VALUES (?, 'info', 'test', ?)", (i, "m" * 120))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path.read_bytes()


@pytest.fixture(params=DAMAGE)
def damaged(request, tmp_path) -> Path:
    path = tmp_path / "t.db"
    good = _healthy(path)
    kind = request.param
    rng = __import__("random").Random(7)
    if kind == "garbage":
        bad = bytes(rng.randrange(256) for _ in range(len(good)))
    elif kind == "truncated":
        bad = good[: len(good) // 2]
    elif kind == "text":
        bad = b"name,label\nthis is a CSV, not a database\n" * 20
    else:  # the header survives, later pages are overwritten
        bad = good[:8192] + bytes(rng.randrange(256) for _ in range(len(good) - 8192))
    path.write_bytes(bad)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def assert_restore_line(text: str, path: Path, prefix: str = "pocketops: ") -> None:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    line = lines[0]
    assert line.startswith(prefix) and "Traceback" not in line, line
    assert str(path) in line and "damaged or not a pocketops database" in line, line
    assert "pocketops backup" in line and "copy" in line and "stop the workers" in line, line


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_connect_raises_one_corrupt_database_error(damaged):
    with pytest.raises(CorruptDatabase) as caught:
        store.connect(damaged)
    assert is_corruption(caught.value) and caught.value.path == str(damaged)
    assert_restore_line(str(caught.value), damaged, prefix=str(damaged))


@pytest.mark.parametrize("command", [["runs", "list"], ["datasets", "list", "--json"], ["backup", "x.db"]])
def test_cli_commands_print_one_line_and_exit_1(damaged, command):
    done = _run("-m", "tui.cli", "--db", str(damaged), *command)
    assert done.returncode == 1 and done.stdout == ""
    assert_restore_line(done.stderr, damaged)


def test_train_queueing_reports_it_too(damaged):
    done = _run("-m", "tui.cli", "--db", str(damaged), "train", "--dataset", "digits", "--model", "cnn", "--epochs", "1")
    assert done.returncode == 1
    assert_restore_line(done.stderr, damaged)


def test_worker_prints_one_line_and_exits_1(damaged):
    done = _run("-m", "core.worker", "--db", str(damaged), "--once")
    assert done.returncode == 1
    assert_restore_line(done.stderr, damaged, prefix="pocketops worker: ")


def test_a_lock_or_other_sqlite_error_is_not_called_corruption():
    import sqlite3

    assert not is_corruption(sqlite3.OperationalError("database is locked"))
    assert not is_corruption(ValueError("malformed"))


@pytest.mark.anyio
async def test_dashboard_closes_with_the_restore_line(damaged):
    from tui.app import make_app

    app = make_app(damaged)
    async with app.run_test(size=(60, 24)) as pilot:
        for _ in range(400):  # the store is opened in a thread after the first frame
            if app.return_code is not None:
                break
            await pilot.pause(0.05)
    assert app.return_code == 1
    assert_restore_line(f"pocketops: {app.fatal}", damaged)


@pytest.fixture
def anyio_backend():
    return "asyncio"
