"""`pocketops backup PATH`: a consistent copy taken while another process writes, written
atomically and checked; restoring it (copy over the database file) gives a working store."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import store
from store.db import one, rows
from tui.cli import main

ROOT = Path(__file__).resolve().parent.parent

WRITER = """
import sys, store
from store import events
db = store.connect(sys.argv[1])
i = 0
while True:
    with store.transaction(db):  # two rows per transaction: a torn copy would show an odd count
        events.log(db, "info", "writer", f"a {i}")
        events.log(db, "info", "writer", f"b {i}")
    i += 1
    if i == 50:
        print("writing", flush=True)
"""

def _events(path: Path) -> list[dict]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        cur = conn.execute("SELECT id, message FROM events WHERE source = 'writer' ORDER BY id")
        return [{"id": r[0], "message": r[1]} for r in cur.fetchall()]
    finally:
        conn.close()

def test_backups_taken_while_a_process_writes_are_consistent(tmp_path, capsys):
    db_path = tmp_path / "t.db"
    store.connect(db_path).close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db_path)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        counts = []
        for n in range(5):
            dest = tmp_path / f"b{n}.db"
            assert main(["--db", str(db_path), "backup", str(dest), "--json"]) == 0
            out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            assert out["path"] == str(dest) and out["size_bytes"] == dest.stat().st_size > 0
            assert out["integrity"] == "ok" and out["source"] == str(db_path)
            found = _events(dest)
            assert len(found) % 2 == 0 and len(found) >= 100  # whole transactions only
            for k in range(0, len(found), 2):
                assert found[k]["message"] == f"a {k // 2}" and found[k + 1]["message"] == f"b {k // 2}"
            counts.append(len(found))
            assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp left
            assert not Path(f"{dest}-wal").exists()  # self-contained: one file to copy back
        assert writer.poll() is None  # the writer was never blocked into failing
    finally:
        writer.kill()
        writer.wait()
    assert counts == sorted(counts) and counts[-1] > counts[0]  # the writer went on meanwhile

def test_restore_by_copying_the_backup_over_the_database(tmp_path, capsys):
    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    db.execute("INSERT INTO events (ts, level, source, message) VALUES (1, 'info', 'x', 'before')")
    assert main(["--db", str(db_path), "backup", str(tmp_path)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"backed up {db_path} to {tmp_path}/pocketops-") and line.endswith("integrity ok)")
    (backup,) = tmp_path.glob("pocketops-*.db")
    db.close()
    db_path.write_bytes(b"garbage" * 100)  # the damage
    for suffix in ("-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, db_path)  # the restore the error message describes
    db = store.connect(db_path)
    assert one(db, "PRAGMA integrity_check")["integrity_check"] == "ok"
    assert [r["message"] for r in rows(db, "SELECT message FROM events WHERE source = 'x'")] == ["before"]

@pytest.mark.parametrize("case", ["missing-db", "into-itself", "no-folder"])
def test_bad_backup_requests_are_one_line(tmp_path, capsys, case):
    db_path = tmp_path / "t.db"
    if case != "missing-db":
        store.connect(db_path).close()
    dest = {"missing-db": tmp_path / "b.db", "into-itself": db_path, "no-folder": tmp_path / "nope" / "b.db"}[case]
    assert main(["--db", str(db_path), "backup", str(dest)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pocketops: "), err
    expected = {"missing-db": "no database to back up", "into-itself": "that is the database itself",
                "no-folder": "no such folder"}[case]
    assert expected in err[0]
    assert not (tmp_path / "b.db").exists()

def test_a_copy_that_fails_its_check_leaves_no_file(tmp_path, monkeypatch):
    from store import db as storedb

    db = store.connect(tmp_path / "t.db")
    real_connect = sqlite3.connect

    class Checked:
        def __init__(self, conn):
            self._conn = conn

        def execute(self, sql, *a):
            if sql.startswith("PRAGMA integrity_check"):
                return real_connect(":memory:").execute("SELECT 'row 3 missing from index x'")
            return self._conn.execute(sql, *a)

        def __getattr__(self, name):
            return getattr(self._conn, name)

    monkeypatch.setattr(storedb.sqlite3, "connect", lambda *a, **k: Checked(real_connect(*a, **k)))
    db_conn = db.conn
    monkeypatch.setattr(db, "conn", type("C", (), {"backup": lambda self, target: db_conn.backup(target._conn)})())
    with pytest.raises(sqlite3.DatabaseError, match="integrity check: row 3 missing"):
        storedb.backup(db, tmp_path / "b.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.db", "t.db-shm", "t.db-wal"]
