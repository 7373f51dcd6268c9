"""The same Optuna study two ways: (a) ``study.optimize`` in one process on our Trainer, (b) a
pocketops sweep whose trials are train jobs on 2 worker processes. Prints both wall times, the
ratio (b)/(a) and each side's best metric.

Same study on both sides: digits, the mlp family's default search space, EPOCHS epochs per
trial, TPE (seed 0, constant liar) and the median pruner with the same startup, trials'
training seed 0 (same splits), torch threads 1 in every process (the Trainer's choice for
models this small). (a) reports each epoch's val accuracy to the pruner from a Trainer
callback and stops a pruned trial at once; (b) is the whole product path: runs, jobs, SQLite,
checkpoints, the sweep job reading metrics from the store and cancelling pruned jobs. Workers
are started and warmed with one 1-epoch run each before the clock starts (torch imported, as
in (a)); runs and jobs of the warm-up are not counted. One run of each (a 16-trial study is the
unit); the machine's other load is not controlled, so run it when the machine is quiet.

    python benchmarks/sweep.py [--trials 16] [--epochs 5] [--short]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import store  # noqa: E402
from core import datasets, sweep, sweep_space  # noqa: E402
from store import sweeps as store_sweeps  # noqa: E402
from store.db import rows  # noqa: E402

SEED = 0


def direct(trials: int, epochs: int, workdir: Path) -> dict:
    """(a) Optuna's own loop, in this process, on core.trainer.Trainer."""
    import optuna
    import torch

    from core.errors import JobStopped
    from core.trainer import Callbacks, Trainer, TrainConfig

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    db = store.connect(workdir / "direct.db")
    datasets.ensure_builtin(db, workdir / "direct.db")
    from store import datasets as store_datasets

    arrays = datasets.load_arrays(store_datasets.by_name(db, "digits"))
    space = sweep_space.build("mlp", arrays.input_shape, len(arrays.classes), arrays.input_dtype)

    class Report(Callbacks):
        def __init__(self, trial):
            self.trial, self.pruned_at = trial, None

        def on_epoch_end(self, epoch, metrics, checkpoint_path):
            self.trial.report(metrics["val_accuracy"], epoch)
            if self.trial.should_prune():
                self.pruned_at = epoch

        def check(self):
            if self.pruned_at is not None:
                raise JobStopped()  # the Trainer's own way out at the next batch

    def objective(trial):
        values = sweep._suggest(trial, space)
        cfg = TrainConfig.from_dict({"dataset": "digits", "model": "mlp", "epochs": epochs, "seed": SEED, "threads": 1,
                                     **space.train_settings(values)})
        cb = Report(trial)
        try:
            summary = Trainer(cfg, arrays, workdir / f"direct-{trial.number}", cb).fit()
        except JobStopped:
            raise optuna.TrialPruned() from None
        if cb.pruned_at is not None:  # pruned after the last epoch's report: nothing left to stop
            raise optuna.TrialPruned()
        return summary["val_accuracy"]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=SEED, constant_liar=True),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=sweep.startup_trials(trials),
                                                                   n_warmup_steps=0))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    wall = time.perf_counter() - t0
    pruned = sum(t.state.name == "PRUNED" for t in study.trials)
    return {"wall_s": wall, "best": study.best_value, "pruned": pruned, "trials": len(study.trials)}


def through_pocketops(trials: int, epochs: int, workdir: Path, n_workers: int = 2) -> dict:
    """(b) `pocketops sweep --parallel 2` with 2 worker processes."""
    db_path = workdir / "ours.db"
    db = store.connect(db_path)
    datasets.ensure_builtin(db, db_path)
    env = {**os.environ, "POCKETOPS_HOME": str(workdir / "home"), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "core.worker", "--db", str(db_path)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(workdir / f"worker{i}.log", "wb"))
             for i in range(n_workers)]
    try:
        from core.worker import live_workers

        deadline = time.monotonic() + 120
        while len(live_workers(db)) < n_workers:
            if time.monotonic() > deadline:
                raise SystemExit("workers did not start within 120 s")
            time.sleep(0.05)
        warm(db, n_workers)
        t0 = time.perf_counter()
        sweep_id, _ = sweep.new_sweep(db, dataset="digits", model="mlp", trials=trials, parallel=n_workers,
                                      epochs=epochs, seed=SEED)
        while store_sweeps.get(db, sweep_id)["status"] not in ("done", "failed", "cancelled"):
            time.sleep(0.05)
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
    result = sweep.summary(db, sweep_id)
    pruned = sum(t["status"] == "pruned" for t in result["trials"])
    cancelled_early = len(rows(db, "SELECT id FROM runs WHERE status = 'cancelled'"))
    return {"wall_s": wall, "best": (result["best"] or {}).get("value"), "pruned": pruned,
            "trials": len(result["trials"]), "cancelled_early": cancelled_early, "status": result["status"]}


def warm(db, n_workers: int) -> None:
    """One 1-epoch run on every worker before the clock, so each has imported torch as (a) has."""
    from core.runs import new_run

    warmed: set[str] = set()
    while len(warmed) < n_workers:
        run_ids = [new_run(db, dataset="digits", model="mlp", preset="tiny", epochs=1)[0] for _ in range(n_workers)]
        deadline = time.monotonic() + 300
        while any(r["status"] not in ("done", "failed") for r in rows(db, f"SELECT status FROM runs WHERE id IN ({','.join(map(str, run_ids))})")):
            if time.monotonic() > deadline:
                raise SystemExit("warm-up runs did not finish within 300 s")
            time.sleep(0.05)
        warmed |= {r["worker_id"] for r in rows(db, "SELECT worker_id FROM jobs WHERE kind = 'train' AND status = 'done'")}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--short", action="store_true", help="6 trials of 3 epochs (a quick check, not a measurement)")
    args = parser.parse_args()
    if args.short:
        args.trials, args.epochs = 6, 3
    print(f"study: digits mlp default space, {args.trials} trials × ≤{args.epochs} epochs, TPE seed {SEED}, "
          f"median pruner (startup {sweep.startup_trials(args.trials)}); torch threads 1; cores {os.cpu_count()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        a = direct(args.trials, args.epochs, work)
        print(f"(a) optuna.optimize, 1 process : {a['wall_s']:7.1f} s  best val_accuracy {a['best']:.4f}  "
              f"pruned {a['pruned']}/{a['trials']}", flush=True)
        b = through_pocketops(args.trials, args.epochs, work)
        print(f"(b) pocketops sweep, 2 workers : {b['wall_s']:7.1f} s  best val_accuracy {b['best']:.4f}  "
              f"pruned {b['pruned']}/{b['trials']} ({b['cancelled_early']} stopped before their last epoch)", flush=True)
    print(f"ratio (b)/(a) wall time: {b['wall_s'] / a['wall_s']:.2f}  (target ≤ 0.65 on 2 cores)")
    print(f"best val_accuracy: (a) {a['best']:.4f}  (b) {b['best']:.4f}  difference {b['best'] - a['best']:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
