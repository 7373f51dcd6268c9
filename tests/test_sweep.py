"""Sweeps: an Optuna study of ordinary train runs on real worker processes; kill -9 mid-study; bad input.

Moments are chosen by observable state (trial rows, the pace hook holding the sweep before it
asks a trial), never by sleeping.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import store
from store import jobs
from store import sweeps as store_sweeps
from store.db import rows
from tests._pace import Pace

pytest.importorskip("optuna")
pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
# Seed 0 draws learning rates 0.0023, 0.0012, 0.0026, 0.0085 for trials 0-3 (all reach ≥ 0.95 in
# 6 epochs) and 0.0002, 0.0005 for trials 4-5, which start after two trials finished (the median
# pruner's startup) and trail the median from epoch 1: pruned whichever worker is faster.
SPACE = """\
lr: {low: 0.0001, high: 0.03, log: true}
batch_size: {choices: [16, 32]}
layers: {low: 1, high: 2}
width: {choices: [64, 128]}
weight_decay: 0.0001
"""


def _env(tmp_path: Path, pace: Pace | None = None) -> dict:
    env = {**os.environ, "POCKETOPS_HOME": str(tmp_path / "home"), "PYTHONWARNINGS": "ignore",
           "POCKETOPS_HEARTBEAT_S": "0.2",  # a pruned trial's worker sees its cancel sooner
           "PYTHONPATH": str(ROOT), **(pace.env if pace else {})}
    env.pop("POCKETOPS_API_KEY", None)
    return env


def start_worker(db_path: Path, env: dict) -> subprocess.Popen:
    log = open(db_path.parent / f"worker-{time.monotonic_ns()}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "core.worker", "--db", str(db_path)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def stop(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def cli(db_path: Path, *args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", "--db", str(db_path), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def cli_here(db_path: Path, *args: str, capsys) -> tuple[int, str, str]:
    """The CLI in this process (no interpreter start per case): exit code, stdout, stderr."""
    from tui.cli import main

    try:
        code = main(["--db", str(db_path), *args])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def space_file(tmp_path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def test_eight_trials_on_two_workers_find_a_good_mlp_and_prune_a_bad_one(tmp_path, space_file):
    """8 trials of the digits mlp on 2 real workers: best val_accuracy ≥ 0.95, at least one trial pruned
    (its train job cancelled, its run stopped before the last epoch), trials trained by both workers,
    and `sweep --wait --json` prints one line per finished trial, then the summary."""
    db_path = tmp_path / "data" / "t.db"
    db = store.connect(db_path)
    env = _env(tmp_path)
    workers = [start_worker(db_path, env) for _ in range(2)]
    try:
        out = cli(db_path, "sweep", "--dataset", "digits", "--model", "mlp", "--trials", "8", "--parallel", "2",
                  "--epochs", "6", "--space", str(space_file), "--seed", "0", "--wait", "--json", env=env)
    finally:
        stop(workers)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    *streamed, last = lines
    assert set(last) == {"sweep_id", "trials", "best"}
    assert sorted(t["trial"] for t in streamed) == list(range(8)) == [t["trial"] for t in last["trials"]]
    assert all(set(t) >= {"trial", "run_id", "status", "params", "value"} for t in last["trials"])
    statuses = [t["status"] for t in last["trials"]]
    assert set(statuses) <= {"done", "pruned", "failed"} and "failed" not in statuses
    assert "pruned" in statuses, last["trials"]
    best = last["best"]
    assert best["value"] >= 0.95 and set(best) == {"trial", "run_id", "params", "value"}
    assert best["value"] == max(t["value"] for t in last["trials"] if t["status"] == "done")
    # The best trial is an ordinary finished run with its checkpoint; a pruned one was cancelled early.
    from store import runs as store_runs

    best_run = store_runs.get(db, best["run_id"])
    assert best_run["status"] == "done" and Path(best_run["checkpoint_path"]).is_file()
    assert best_run["config"]["arch"]["hidden"] == [best["params"]["width"]] * best["params"]["layers"]
    for t in last["trials"]:
        run = store_runs.get(db, t["run_id"])
        train_jobs = [j for j in rows(db, "SELECT * FROM jobs WHERE run_id = ? AND kind = 'train'", (t["run_id"],))]
        assert len(train_jobs) == 1
        if t["status"] == "pruned":
            # Cancelled at the pruned epoch; a run this small may still finish before its worker's
            # next heartbeat sees the request, which changes nothing for the study.
            assert train_jobs[0]["cancel_requested"] == 1 and 1 <= t["pruned_epoch"] < 6
            assert run["status"] == "done" or (run["status"] == "cancelled" and run["epochs_done"] < 6)
        else:
            assert train_jobs[0]["cancel_requested"] == 0 and run["status"] == "done"
    trainers = {j["worker_id"].split("/")[0] for j in rows(db, "SELECT worker_id FROM jobs WHERE kind = 'train'")}
    assert len(trainers) == 2, "both worker processes trained trials"
    sweep = store_sweeps.get(db, last["sweep_id"])
    assert sweep["status"] == "done" and sweep["config"]["seed"] == 0 and sweep["importances"]
    assert set(sweep["importances"]) <= {"lr", "batch_size", "layers", "width"}


def test_kill9_of_the_sweeps_worker_mid_study_loses_nothing(tmp_path, space_file):
    """Signal 9 to the worker running the sweep (held just before asking trial 3, at least two trials
    finished), then a new worker: the study resumes, no finished trial is rerun,
    exactly 6 trials and 6 runs."""
    from core.sweep import new_sweep

    db_path = tmp_path / "data" / "t.db"
    pace = Pace(tmp_path, **{"sweep:ask": 3})
    env = _env(tmp_path, pace)
    db = store.connect(db_path)
    from core.datasets import ensure_builtin

    ensure_builtin(db, db_path)
    sweep_id, job_id = new_sweep(db, dataset="digits", model="mlp", trials=6, parallel=2, epochs=3,
                                 space_file=str(space_file), seed=0)
    first = start_worker(db_path, env)
    second = third = None
    try:
        at = pace.wait_held("sweep:ask", pid=first.pid, proc=first, timeout=240)
        assert at["step"] == 3
        second = start_worker(db_path, env)  # started after the hold: it can only train, the sweep job is held
        before = {t["trial"]: t for t in store_sweeps.trials(db, sweep_id)}
        assert sorted(before) == [0, 1, 2]
        finished = {n: t for n, t in before.items() if t["status"] != "running"}
        # Two trials have ended for the sweep to ask trial 3; trial 2 may have ended too by the time
        # we look (a fast machine, or the sweep's own trial thread): either way none may be rerun.
        assert len(finished) >= 2
        first.kill()
        first.wait()
        pace.set()  # no holds from here on
        pace.clear_held()
        third = start_worker(db_path, env)
        wait_for(lambda: store_sweeps.get(db, sweep_id)["status"] in ("done", "failed"), 300, "the resumed sweep to end")
    finally:
        stop([p for p in (first, second, third) if p is not None])
    sweep = store_sweeps.get(db, sweep_id)
    assert sweep["status"] == "done", sweep["error"]
    trials = store_sweeps.trials(db, sweep_id)
    assert [t["trial"] for t in trials] == list(range(6))
    assert all(t["status"] in ("done", "pruned") for t in trials)
    assert len(rows(db, "SELECT id FROM runs")) == 6, "one run per trial, none repeated"
    for n, old in finished.items():
        now_row = trials[n]
        assert (now_row["status"], now_row["value"], now_row["finished_at"], now_row["run_id"]) == \
               (old["status"], old["value"], old["finished_at"], old["run_id"])
        [train] = rows(db, "SELECT * FROM jobs WHERE run_id = ? AND kind = 'train'", (old["run_id"],))
        if old["status"] == "done":
            assert train["attempts"] == 1, "a finished trial was not trained again"
        else:  # pruned before the kill: its cancel may reach the job only in the next worker, which ends it
            assert old["status"] == "pruned" and train["status"] in ("cancelled", "done"), train
    assert jobs.get(db, job_id)["attempts"] == 2
    import optuna

    study = optuna.load_study(study_name=f"sweep-{sweep_id}", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(sweep["storage"])))
    assert len(study.trials) == 6
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)


# -- bad input: one line, nothing queued ---------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("lr: {low: 0.001, high: 0.01}\nwidht: {choices: [32]}\n", "line 2, 'widht': unknown parameter for the mlp family"),
    ("lr: {low: 0.01, high: 0.001, log: true}\n", "line 1, 'lr': empty range, low 0.01 is above high 0.001"),
    ("width: {choices: []}\n", "line 1, 'width': empty choices"),
    ("layers: {low: 0, high: 2}\n", "line 1, 'layers': layers must be 1 or more, not 0"),
    ("batch_size: 16\nwidth: {choices: [64, 100000]}\n", "largest model of this space does not fit"),
    ("lr: {low: 0, high: 0.1, log: true}\n", "line 1, 'lr': a log range needs low > 0"),
    ("heads: {choices: [2, 4]}\n", "line 1, 'heads': unknown parameter for the mlp family"),
    ("lr: [0.1, 0.2\n", "not valid YAML/JSON"),
    ('{"lr": {"low": 0.001, "high": 0.01},\n "layers": {"low": 1, "high": 9}}\n', "line 2, 'layers': a mlp takes at most 4 layers"),
])
def test_a_bad_space_file_is_one_line_and_queues_nothing(tmp_path, text, expected, capsys):
    db_path = tmp_path / "t.db"
    space = tmp_path / "space.yaml"
    space.write_text(text)
    code, _, err = cli_here(db_path, "sweep", "--dataset", "digits", "--model", "mlp", "--trials", "4",
                            "--space", str(space), capsys=capsys)
    assert code == 1
    assert err.count("\n") == 1 and expected in err and str(space) in err, err
    db = store.connect(db_path)
    assert rows(db, "SELECT id FROM sweeps") == [] and rows(db, "SELECT id FROM jobs") == []


@pytest.mark.parametrize("args, expected", [
    (("--trials", "0"), "a sweep needs at least 1 trial, found 0"),
    (("--trials", "4", "--parallel", "0"), "expected 1 or more, found 0"),
    (("--trials", "4", "--timeout", "soon"), "expected a duration above 0 such as 90s, 30m or 2h"),
    (("--trials", "4", "--on", "lab"), "no cluster named 'lab' (known: none yet)"),
    (("--trials", "4", "--dataset", "nope"), "no dataset named 'nope'"),
])
def test_bad_sweep_options_are_one_line_and_queue_nothing(tmp_path, args, expected, capsys):
    db_path = tmp_path / "t.db"
    store.connect(db_path)
    base = ["sweep", "--model", "mlp"] + ([] if "--dataset" in args else ["--dataset", "digits"])
    code, _, err = cli_here(db_path, *base, *args, capsys=capsys)
    assert code != 0
    assert err.count("\n") == 1 and expected in err, err
    assert rows(store.connect(db_path), "SELECT id FROM jobs") == []


def test_a_family_that_cannot_take_the_data_is_refused(tmp_path):
    """cnn on tabular data: the family cannot take it, whatever the space."""
    from core.errors import ConfigError
    from core.sweep_space import build

    with pytest.raises(ConfigError, match="cnn family needs image data"):
        build("cnn", [4], 3)
    with pytest.raises(ConfigError, match="line 1, 'd_model': d_model 64 does not split into 5 heads"):
        build("transformer", [20], 3, "int64", override={"d_model": {"choices": [64, 96]}, "heads": {"choices": [4, 5]}},
              source="s.yaml", lines={"d_model": 1})


def test_default_spaces_fit_the_size_limit_and_map_to_valid_training_configs():
    """Each family's default space on its data: the largest model fits; a trial's values become a valid arch."""
    from core import models
    from core.sweep_space import build

    for family, shape, dtype in (("mlp", [1, 8, 8], "float32"), ("cnn", [1, 8, 8], "float32"),
                                 ("transformer", [32], "int64"), ("mlp", [1, 512, 512], "float32")):
        space = build(family, shape, 10, dtype)
        largest = {k: max(p.values_at_extremes()) for k, p in space.searched().items()}
        settings = space.train_settings(largest)
        assert models.check_config(family, shape, 10, "small", dtype, settings["arch"])["size_bytes"] <= models.MAX_MODEL_BYTES
    wide = build("mlp", [1, 512, 512], 10)
    assert max(wide.searched()["width"].choices) < 256, "shrunk to fit 512×512 inputs"


def test_a_lock_and_a_torn_line_left_by_a_killed_writer_do_not_stall_the_study(tmp_path):
    """Signal 9 inside Optuna's journal append leaves its lock link (the next writer would wait 30 s)
    and at worst half a line: the sweep job, the journal's only writer, clears both on open."""
    from core.sweep import open_study

    cfg = {"seed": 0, "direction": "maximize", "pruner": {"n_startup_trials": 2, "n_warmup_steps": 0}}
    path = tmp_path / "study.journal"
    study = open_study(path, "s", cfg)
    study.tell(study.ask(), 0.5)
    os.symlink(str(path), str(path) + ".lock")
    with open(path, "ab") as handle:
        handle.write(b'{"op_code":5,"worker_id":"x"')
    t0 = time.monotonic()
    study = open_study(path, "s", cfg)
    study.tell(study.ask(), 0.7)
    assert time.monotonic() - t0 < 10
    assert [t.value for t in study.trials] == [0.5, 0.7]
    assert not os.path.lexists(str(path) + ".lock")


@pytest.mark.parametrize("family, shape, dtype, arch", [
    ("mlp", [1, 8, 8], "float32", {"hidden": [64, 64, 64]}),
    ("cnn", [1, 8, 8], "float32", {"channels": [16, 32, 64], "hidden": 64}),
    ("transformer", [20], "int64", {"d_model": 64, "heads": 2, "layers": 1, "ff": 64}),
])
def test_a_trials_arch_builds_the_model_it_counts(family, shape, dtype, arch):
    """The size check a space relies on counts exactly the parameters of the model a trial trains."""
    from core import models

    model = models.build_model(models.model_args(family, shape, 10, "small", dtype, arch))
    real = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert models.estimate_params(family, shape, 10, "small", dtype, arch) == real
    assert "arch" not in models.model_args(family, shape, 10, "small", dtype), "runs without one are unchanged"


def test_a_sweep_on_a_cluster_queues_its_trials_there(tmp_path):
    """``sweep --on NAME`` records the cluster in the sweep's config, which each trial's train job
    carries (``on``), so the worker runs it through the remote executor (tests/test_cluster_remote.py)."""
    from core import jobkinds
    from core.sweep import new_sweep
    from store import clusters as store_clusters

    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    from core.datasets import ensure_builtin

    ensure_builtin(db, db_path)
    store_clusters.add(db, name="lab", address="http://127.0.0.1:9", token_env=None)
    sweep_id, _ = new_sweep(db, dataset="digits", model="mlp", trials=2, on="lab")
    assert store_sweeps.get(db, sweep_id)["config"]["on"] == "lab"
    assert jobkinds.validate("train", {"run_id": 1, "on": "lab"}).on == "lab"


def test_show_and_cancel_a_sweep(tmp_path, space_file):
    """``--show`` prints the summary; ``--cancel`` of a queued sweep cancels it at once, of a running one
    stops it (no new trial asked, the trial in flight cancelled); a second cancel is one line."""
    from core.sweep import new_sweep

    db_path = tmp_path / "data" / "t.db"
    db = store.connect(db_path)
    from core.datasets import ensure_builtin

    ensure_builtin(db, db_path)
    env = _env(tmp_path)
    queued, queued_job = new_sweep(db, dataset="digits", model="mlp", trials=4, epochs=2, space_file=str(space_file))
    shown = json.loads(cli(db_path, "sweep", "--show", str(queued), "--json", env=env).stdout)
    assert (shown["sweep_id"], shown["status"], shown["trials"], shown["best"]) == (queued, "queued", [], None)
    r = cli(db_path, "sweep", "--cancel", str(queued), "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "cancelled", r.stderr
    assert store_sweeps.get(db, queued)["status"] == "cancelled" and jobs.get(db, queued_job)["status"] == "cancelled"
    again = cli(db_path, "sweep", "--cancel", str(queued), env=env)
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "nothing to cancel" in again.stderr
    missing = cli(db_path, "sweep", "--show", "99", env=env)
    assert missing.returncode == 1 and f"no sweep 99; the newest is {queued}" in missing.stderr

    pace = Pace(tmp_path, train_step=5)  # the first trial holds mid-training
    sweep_id, job_id = new_sweep(db, dataset="digits", model="mlp", trials=4, epochs=2, space_file=str(space_file))
    worker = start_worker(db_path, _env(tmp_path, pace))
    try:
        pace.wait_held("train:step", pid=None, proc=worker, timeout=240)
        r = cli(db_path, "sweep", "--cancel", str(sweep_id), "--json", env=env)
        assert r.returncode == 0 and json.loads(r.stdout)["status"] == "cancelling", r.stderr
        pace.set()
        wait_for(lambda: store_sweeps.get(db, sweep_id)["status"] == "cancelled", 240, "the sweep to stop")
        wait_for(lambda: jobs.get(db, job_id)["status"] in jobs.FINAL, 120, "the sweep job to end")
    finally:
        stop([worker])
        pace.set()
    assert jobs.get(db, job_id)["status"] == "cancelled"
    trials = store_sweeps.trials(db, sweep_id)
    assert len(trials) <= 2 and all(t["status"] != "running" for t in trials), trials
    trial_jobs = rows(db, "SELECT status FROM jobs WHERE kind = 'train' AND run_id IN (%s)"
                      % ",".join(str(t["run_id"]) for t in trials))
    assert all(j["status"] in jobs.FINAL for j in trial_jobs)


def test_a_trial_told_by_an_earlier_driver_is_kept_not_a_failure(tmp_path):
    """Two drivers of one study (a worker whose claim went stale under load, and the one that took it
    over): the second telling an already finished trial keeps what the study holds and closes the row
    from it, instead of failing the sweep with UpdateFinishedTrialError."""
    from optuna.trial import TrialState

    from core.datasets import ensure_builtin
    from core.sweep import SweepLoop, new_sweep
    from core.worker import JobContext

    db_path = tmp_path / "data" / "t.db"
    db = store.connect(db_path)
    ensure_builtin(db, db_path)
    sweep_id, job_id = new_sweep(db, dataset="digits", model="mlp", trials=2, epochs=1, seed=0)

    def driver() -> SweepLoop:
        ctx = JobContext(db_path, jobs.get(db, job_id), "w-test", db=store.connect(db_path))
        loop = SweepLoop(ctx, store_sweeps.get(db, sweep_id))
        loop.open()
        return loop

    first = driver()
    first.top_up([])  # asks trial 0 (and 1: parallel 1 asks one) and gives it a run
    row = store_sweeps.trials(db, sweep_id)[0]
    second = driver()  # the taker-over opens the same journal
    first.study.tell(first._trial(row["trial"]), 0.91)
    store_sweeps.finish_trial(db, sweep_id, row["trial"], "done", value=0.91)
    # The stale driver, a poll behind, sees the run end otherwise: nothing raises, the study keeps 0.91.
    second.fail(row, second._trial(row["trial"]), "its run was cancelled")
    frozen = second.study.get_trials(deepcopy=False)[row["trial"]]
    assert frozen.state == TrialState.COMPLETE and frozen.value == 0.91
    again = {t["trial"]: t for t in store_sweeps.trials(db, sweep_id)}[row["trial"]]
    assert again["status"] == "done" and again["value"] == 0.91
