"""Many writers on one store: the dashboard (pilot, switching panels and queueing runs), two
worker processes training what is queued, and CLI loops (`datasets add/delete`, `train`
queueing, `runs list`) for a while -> no "database is locked" anywhere, every exit code 0,
integrity_check clean, no half rows.

``POCKETOPS_MANY_WRITERS_S`` sets the duration (default 15 s for CI; 60 s is the full run).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import store
from core.datasets import ensure_builtin
from store.db import one, rows

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
DURATION_S = float(os.environ.get("POCKETOPS_MANY_WRITERS_S", "15"))
LOCKED = "database is locked"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "POCKETOPS_HOME": str(tmp_path / "home"), "PYTHONWARNINGS": "ignore"}


def wait_until(predicate, timeout: float, what: str, procs) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        dead = [p.returncode for p in procs if p.poll() is not None]
        assert not dead, f"a worker exited ({dead}) while waiting for {what}"
        time.sleep(0.1)


class CliLoop(threading.Thread):
    """Run one kind of CLI command again and again until ``deadline``, recording every outcome."""

    def __init__(self, name: str, commands, db_path: Path, env: dict, deadline: float):
        super().__init__(name=name, daemon=True)
        self.commands, self.db_path, self.env, self.deadline = commands, db_path, env, deadline
        self.results: list[tuple[list[str], int, str]] = []

    def run(self) -> None:
        i = 0
        while time.monotonic() < self.deadline:
            for argv in self.commands(i):
                done = subprocess.run([sys.executable, "-m", "tui.cli", "--db", str(self.db_path), *argv],
                                      cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120)
                self.results.append((argv, done.returncode, done.stderr + done.stdout))
            i += 1


async def test_dashboard_workers_and_cli_loops_write_together(tmp_path):
    from core.runs import new_run
    from tui.app import make_app

    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    ensure_builtin(db, db_path)
    env = _env(tmp_path)
    csv = tmp_path / "pairs.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i % 7},{'xy'[i % 2]}\n" for i in range(60)))

    logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
    workers = []
    for log in logs:
        with open(log, "wb") as out:
            workers.append(subprocess.Popen([sys.executable, "-m", "core.worker", "--db", str(db_path)],
                                            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
    # Warm-up (not timed): each worker trains one run, so both have torch loaded before the clock starts.
    warm = [new_run(db, dataset="digits", model="mlp", preset="tiny", epochs=1, batch_size=64, seed=900 + n)[0]
            for n in range(2)]
    wait_until(lambda: all(one(db, "SELECT status FROM runs WHERE id = ?", (r,))["status"] == "done" for r in warm),
               300, "the warm-up runs", workers)
    assert len({r["worker_id"] for r in rows(db, "SELECT worker_id FROM jobs WHERE kind = 'train'")}) == 2
    metrics_before = one(db, "SELECT COUNT(*) AS n FROM metrics")["n"]
    t0 = time.monotonic()
    deadline = t0 + DURATION_S
    loops = [
        CliLoop("datasets", lambda i: [["datasets", "add", str(csv), "--name", f"pairs-{i}"],
                                       ["datasets", "delete", f"pairs-{i}"]], db_path, env, deadline),
        CliLoop("train", lambda i: [["train", "--dataset", "digits", "--model", "mlp", "--preset", "tiny",
                                     "--epochs", "1", "--batch-size", "64", "--seed", str(i)]], db_path, env, deadline),
        CliLoop("runs", lambda i: [["runs", "list", "--json"]], db_path, env, deadline),
    ]
    for loop in loops:
        loop.start()
    app = make_app(db_path, poll_interval=0.2, sample_device=False)
    queued_by_dashboard = 0
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            keys = ["t", "d", "q", "p", "t"]
            i = 0
            while time.monotonic() < deadline:
                await pilot.press(keys[i % len(keys)])
                if i % 5 == 0:  # an intent from the dashboard's own connection, as its new-run dialog does
                    new_run(app.db, dataset="digits", model="mlp", preset="tiny", epochs=1, batch_size=64, seed=1000 + i)
                    queued_by_dashboard += 1
                await pilot.pause(0.2)
                i += 1
            dashboard_problems = [m for sev, m in app.notices if sev == "error" or LOCKED in m]
    finally:
        for loop in loops:
            loop.join(timeout=180)
        for proc in workers:
            proc.send_signal(signal.SIGTERM)  # checkpoint, give the job back, exit 0
        codes = [proc.wait(timeout=120) for proc in workers]
    elapsed = time.monotonic() - t0

    results = [r for loop in loops for r in loop.results]
    failed = [(argv, rc, out.strip()[-300:]) for argv, rc, out in results if rc != 0]
    assert failed == [], failed[:5]
    assert not [out for _argv, _rc, out in results if LOCKED in out]
    worker_output = [log.read_text(errors="replace") for log in logs]
    assert codes == [0, 0], worker_output
    assert not [text for text in worker_output if LOCKED in text or "Traceback" in text], worker_output
    assert dashboard_problems == []
    for loop in loops:  # every loop really ran, more than once
        assert len(loop.results) >= 2, (loop.name, len(loop.results))

    db = store.connect(db_path)
    assert one(db, "PRAGMA integrity_check")["integrity_check"] == "ok"
    assert rows(db, "PRAGMA foreign_key_check") == []
    runs = [r for r in rows(db, "SELECT id, status FROM runs") if r["id"] not in warm]
    queued_by_cli = sum(1 for argv, _rc, _out in results if argv[0] == "train")
    assert len(runs) == queued_by_cli + queued_by_dashboard
    # Every run has its one train job; none is lost or doubled.
    assert one(db, "SELECT COUNT(*) AS n FROM jobs WHERE kind = 'train'")["n"] == len(runs) + len(warm)
    assert {r["status"] for r in runs} <= {"queued", "running", "done"}
    done = [r["id"] for r in runs if r["status"] == "done"]
    written = one(db, "SELECT COUNT(*) AS n FROM metrics")["n"] - metrics_before
    claimed = one(db, "SELECT COUNT(*) AS n FROM jobs WHERE kind = 'train' AND attempts > 0 AND run_id NOT IN (?, ?)",
                  tuple(warm))["n"]
    assert written > 0 and claimed >= 1, ("the workers wrote nothing meanwhile", written, claimed)
    failed_jobs = rows(db, "SELECT id, error FROM jobs WHERE status = 'failed'")
    assert failed_jobs == []
    left = rows(db, "SELECT name FROM datasets WHERE name LIKE 'pairs-%'")
    assert len(left) <= 1  # only an add whose delete the deadline cut off
    print(f"\nmany writers: {elapsed:.0f} s, {len(results)} CLI commands, {len(runs)} runs queued "
          f"({queued_by_dashboard} from the dashboard), {len(done)} trained by 2 workers "
          f"({written} metric points), 0 locked")
