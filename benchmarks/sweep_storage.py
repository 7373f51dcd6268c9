"""Optuna's two storages for a sweep's study, side by side: RDB (SQLAlchemy on a SQLite file) and
the journal file. Prints the time to open a study and per trial (ask, 3 reports + should_prune,
tell; TPE seed 0; 5 parameters), then what signal 9 does: a child process runs ask/tell in a
loop and is killed at a random moment KILLS times; after each kill a new process loads the
study and writes one trial, timed (a lock left behind by the dead writer shows up here).

    python benchmarks/sweep_storage.py [--trials 50] [--kills 12] [--short]
"""
from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import sys, time
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
optuna.logging.set_verbosity(optuna.logging.WARNING)
kind, path, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def storage():
    if kind == "rdb":
        return optuna.storages.RDBStorage(f"sqlite:///{path}")
    from optuna.storages.journal import JournalFileBackend
    return optuna.storages.JournalStorage(JournalFileBackend(path))
t0 = time.perf_counter()
study = optuna.create_study(study_name="s", storage=storage(), load_if_exists=True, direction="maximize",
                            sampler=optuna.samplers.TPESampler(seed=0), pruner=optuna.pruners.MedianPruner())
t_open = time.perf_counter() - t0
if mode == "reopen":
    study.tell(study.ask(), 0.0)
    print(f"{time.perf_counter() - t0:.2f}")
    sys.exit(0)
dist = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "layers": IntDistribution(1, 3),
        "width": CategoricalDistribution([32, 64, 128, 256]), "dropout": FloatDistribution(0, 0.5),
        "batch_size": CategoricalDistribution([8, 16, 32])}
t0 = time.perf_counter()
for i in range(n):
    tr = study.ask(dist)
    for e in range(1, 4):
        tr.report(tr.params["lr"] * e, e)
    tr.should_prune()
    study.tell(tr, tr.params["lr"])
print(f"{t_open:.3f} {(time.perf_counter() - t0) / n * 1000:.1f}")
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--short", action="store_true")
    args = parser.parse_args()
    if args.short:
        args.trials, args.kills = 10, 2
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        child = Path(tmp) / "child.py"
        child.write_text(CHILD)
        for kind in ("rdb", "journal"):
            path = str(Path(tmp) / ("r.db" if kind == "rdb" else "j.log"))
            run = lambda *a: subprocess.run([sys.executable, str(child), kind, path, *a], capture_output=True,
                                            text=True, timeout=300).stdout.split()
            t_open, per_trial = run(str(args.trials), "bench")
            reopen = []
            for _ in range(args.kills):
                proc = subprocess.Popen([sys.executable, str(child), kind, path, "1000000", "bench"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0 + rng.random() * 1.5)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                reopen.append(float(run("1", "reopen")[0]))
            waited = sum(r > 10 for r in reopen)
            print(f"{kind:8} open {float(t_open):.3f} s  per trial {per_trial} ms  after kill -9: reopen+write "
                  f"median {sorted(reopen)[len(reopen) // 2]:.2f} s, worst {max(reopen):.2f} s, "
                  f"{waited}/{len(reopen)} waited > 10 s for a dead writer's lock", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
