"""The queries the dashboard polls use an index (EXPLAIN QUERY PLAN has no full SCAN), so they stay fast at scale."""
from __future__ import annotations

import pytest

import store
from store import deployments, events, jobs, runs, variants


class PlanRecorder:
    """Records ``EXPLAIN QUERY PLAN`` of every SELECT a store function runs on a real connection."""

    def __init__(self, db):
        self.db = db

    def run(self, func, *args, **kwargs) -> list[tuple[str, list[str]]]:
        """Call ``func(db, ...)``; the (SQL, plan lines) of each SELECT it ran."""
        seen: list[tuple[str, tuple]] = []
        original = self.db.conn

        class Spy:
            def __getattr__(self, name):
                return getattr(original, name)

            def execute(self, sql, params=()):
                seen.append((sql, params))
                return original.execute(sql, params)

        self.db.conn = Spy()
        try:
            func(self.db, *args, **kwargs)
        finally:
            self.db.conn = original
        found = []
        for sql, params in seen:
            if sql.lstrip().upper().startswith("SELECT"):
                detail = [row[3] for row in original.execute("EXPLAIN QUERY PLAN " + sql, params)]
                found.append((sql, detail))
        return found


@pytest.fixture
def db(tmp_path):
    db = store.connect(tmp_path / "p.db")
    db.execute("INSERT INTO datasets (name, kind, fingerprint, rows, n_classes, classes, class_counts, input_shape,"
               " artifact_path, created_at) VALUES ('d', 'csv', 'f', 1, 2, '[]', '[]', '[1]', 'a.npz', 0)")
    for _ in range(3):
        run_id = runs.create(db, dataset_id=1, model="mlp", config={}, epochs_total=1)
        jobs.enqueue(db, "train", {"run_id": run_id}, run_id=run_id)
        runs.add_metrics(db, [{"run_id": run_id, "kind": "train", "step": s, "epoch": 1, "loss": 1.0} for s in range(5)])
        events.log(db, "info", "test", "hello", run_id=run_id)
    db.execute("ANALYZE")  # the planner sees a realistic shape, not an empty table
    return db


HOT = {
    "runs list": (runs.list_all, (), {"limit": 100}),
    "runs list, next page": (runs.list_all, (), {"limit": 100, "before": 2}),
    "metrics since cursor for a run": (runs.metrics_since, (2, 3), {}),
    "a run's train job": (jobs.latest_for_run, (2, "train"), {}),
    "variants for a run": (variants.list_all, (), {"run_id": 2}),
    "latest variant per name for a run": (variants.latest_for_run, (2,), {}),
    "deployments list": (deployments.list_all, (), {}),
    "deployments of a target": (deployments.list_all, (), {"target": "local"}),
    "events since cursor": (events.since, (1,), {}),
    "events of a run since cursor": (events.since, (0,), {"run_id": 2}),
}


@pytest.mark.parametrize("name", list(HOT))
def test_hot_query_uses_an_index_not_a_full_scan(db, name):
    func, args, kwargs = HOT[name]
    plans = PlanRecorder(db).run(func, *args, **kwargs)
    assert plans, f"{name}: no SELECT recorded"
    for sql, detail in plans:
        scans = [d for d in detail if d.startswith("SCAN") and "USING" not in d]
        assert not scans, f"{name}: full scan in {detail} for {sql!r}"
        assert any("USING" in d for d in detail), f"{name}: no index in {detail}"


def test_the_check_catches_a_query_without_an_index(db):
    """The same check on an unindexed filter reports the scan: the test above can fail."""
    plans = PlanRecorder(db).run(lambda d: d.execute("SELECT * FROM events WHERE message = ?", ("hello",)).fetchall())
    (_, detail), = plans
    assert any(d.startswith("SCAN") and "USING" not in d for d in detail)
