"""The ``sweep`` job: an Optuna study (TPE, median pruning) driven by ask-and-tell over our queue.

Each trial is an ordinary run with an ordinary ``train`` job, so any local worker trains it and
the best trial is exported, quantized and deployed like any run. The sweep job itself:

1. opens the study from its journal file (one per sweep, beside the run directories) and
   reconciles it with the ``sweep_trials`` rows, so a worker killed anywhere loses nothing;
2. keeps ``parallel`` trials in flight: ``study.ask()``, then the run, its job and the trial row
   in one transaction;
3. reports each trial's per-epoch validation metric from the store (``trial.report``) and, when
   the median pruner says so, cancels the trial's train job and tells Optuna it was pruned;
4. tells Optuna each finished run's value, and stores the best trial and the parameters'
   importances in the sweep row for the dashboard (which never imports optuna or torch).

While it waits, the sweep's own worker trains this sweep's trials in a second thread (a worker
of its own, registered like any), so a sweep never holds a worker idle, and a sweep with a
single worker (or ``--wait`` with none) still finishes.

Why a journal file and not Optuna's RDB storage on our SQLite file (measured here, 2 cores,
``benchmarks/sweep_storage.py``): 8.5 ms vs 46 ms per ask/3 reports/tell, open in
~0.02 s vs ~0.5 s (SQLAlchemy + Alembic), and no Optuna tables beside our migrations. Its one
weakness under signal 9 (a lock link left behind makes the next writer wait 30 s) is handled
here: only the worker holding the sweep job writes the journal, so a lock left by a dead
holder is removed on open, as is a torn last line.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from core import jobkinds, models, pace, sweep_space
from core.datasets import model_input
from core.errors import ConfigError, DatasetError, JobCancelled, JobStopped, PocketopsError
from core.trainer import TrainConfig
from store import datasets as store_datasets
from store import events, jobs
from store import runs as store_runs
from store import sweeps as store_sweeps
from store.db import now as store_now
from store.db import transaction

METRICS = {"val_accuracy": ("maximize", "accuracy"), "val_loss": ("minimize", "loss")}
POLL_S = 0.1
IMPORTANCE_AFTER = 4  # finished trials before parameter importances mean anything


def startup_trials(n_trials: int) -> int:
    """Finished trials the median pruner waits for: 2 for a short study, up to Optuna's default 5."""
    return min(5, max(2, n_trials // 4))


# -- queueing ----------------------------------------------------------------------------------

def new_sweep(db, *, dataset: str, model: str, trials: int, parallel: int = 1, metric: str = "val_accuracy",
              timeout_s: float | None = None, space_file: str | None = None, epochs: int = 10, seed: int = 0,
              on: str | None = None) -> tuple[int, int]:
    """Check everything, then create the sweep row and queue its ``sweep`` job; (sweep_id, job_id).

    With ``on`` (a cluster added with ``pocketops cluster add``) every trial's train job runs there;
    the study itself stays here.
    """
    if on is not None:
        from core import clusters

        clusters.get(db, on)  # an unknown cluster: one line, nothing queued
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError(f"--trials must be 1 or more, not {trials!r}")
    if not isinstance(parallel, int) or parallel < 1:
        raise ConfigError(f"--parallel must be 1 or more, not {parallel!r}")
    if metric not in METRICS:
        raise ConfigError(f"--metric must be one of {', '.join(METRICS)}, not {metric!r}")
    if timeout_s is not None and timeout_s <= 0:
        raise ConfigError(f"--timeout must be more than 0 seconds, not {timeout_s:g}")
    if epochs < 1:
        raise ConfigError(f"--epochs must be 1 or more, not {epochs}")
    row = store_datasets.by_name(db, dataset)
    if row is None:
        known = ", ".join(d["name"] for d in store_datasets.list_all(db)) or "none"
        raise DatasetError(f"no dataset named {dataset!r}", found=f"known datasets: {known}",
                           hint="Add one with `pocketops datasets add PATH`")
    if model not in models.FAMILIES:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(models.FAMILIES)}")
    shape, dtype = model_input(row)
    override, lines, source = {}, {}, "space"
    if space_file:
        override, lines = sweep_space.read_file(space_file)
        source = str(space_file)
    space = sweep_space.build(model, shape, row["n_classes"], dtype, override=override, source=source, lines=lines)
    # One trial's config must be a valid training config (the sweep's fixed settings included).
    fixed = space.train_settings({k: p.values_at_extremes()[0] for k, p in space.searched().items()})
    TrainConfig.from_dict({"dataset": dataset, "model": model, "epochs": epochs, "seed": seed, **fixed}).validate()
    direction = METRICS[metric][0]
    config = {"trials": trials, "parallel": parallel, "metric": metric, "direction": direction, "seed": seed,
              "timeout_s": timeout_s, "epochs": epochs, "space": space.as_dict(), "sampler": "TPESampler", "on": on,
              "pruner": {"name": "MedianPruner", "n_startup_trials": startup_trials(trials), "n_warmup_steps": 0}}
    with transaction(db):
        sweep_id = store_sweeps.create(db, dataset_id=row["id"], model=model, config=config)
        job_id = jobkinds.queue(db, "sweep", sweep_id=sweep_id)
        events.log(db, "info", "sweeps", f"sweep {sweep_id} queued: {trials} trials of {dataset}/{model}, "
                   f"{parallel} in parallel, seed {seed}", job_id=job_id)
    return sweep_id, job_id


def summary(db, sweep_id: int) -> dict:
    """What ``sweep --json`` prints last: the sweep, its trials and its best trial."""
    sweep = store_sweeps.get(db, sweep_id)
    if sweep is None:
        raise PocketopsError(f"no sweep with id {sweep_id}")
    trials = [trial_dict(t) for t in store_sweeps.trials(db, sweep_id)]
    return {"sweep_id": sweep_id, "status": sweep["status"], "trials": trials, "best": sweep["best"],
            "importances": sweep["importances"], "error": sweep["error"]}


def trial_dict(row: dict) -> dict:
    """One trial as the CLI prints it."""
    return {"trial": row["trial"], "run_id": row["run_id"], "status": row["status"], "params": row["params"],
            "value": row["value"], "pruned_epoch": row["pruned_epoch"]}


# -- the study ---------------------------------------------------------------------------------

def _journal(path: Path):
    """Optuna's journal storage on ``path``, after clearing what a killed holder left behind."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    lock = Path(str(path) + ".lock")
    if lock.is_symlink() or lock.exists():
        lock.unlink()  # we hold the sweep job: its last holder is dead (or taken over and stopping)
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):  # torn last append: drop it, the op was never acknowledged
            with open(path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
                handle.flush()
                os.fsync(handle.fileno())
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileSymlinkLock(str(path))))


def open_study(path: Path, name: str, config: dict):
    """The study (created on first open), with a TPE sampler and median pruner from ``config``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _journal(path)
    try:
        n = storage.get_n_trials(storage.get_study_id_from_name(name))
    except KeyError:
        n = 0
    seed = int(config["seed"])
    # The sampler's random state is not in the journal: a resumed study seeded as at its start
    # would draw its first trials' parameters again. Resumed, it is seeded by (seed, trials so far).
    sampler = optuna.samplers.TPESampler(seed=seed if n == 0 else seed * 1_000_003 + n, constant_liar=True)
    pruner_cfg = config["pruner"]
    pruner = optuna.pruners.MedianPruner(n_startup_trials=pruner_cfg["n_startup_trials"],
                                         n_warmup_steps=pruner_cfg["n_warmup_steps"])
    return optuna.create_study(study_name=name, storage=storage, direction=config["direction"],
                               load_if_exists=True, pruner=pruner, sampler=sampler)


def _suggest(trial, space: sweep_space.Space) -> dict:
    """The trial's values for every searched parameter (values already in the study are kept)."""
    values = {}
    for name, p in space.searched().items():
        if p.choices is not None:
            values[name] = trial.suggest_categorical(name, list(p.choices))
        elif name in sweep_space.INT_PARAMS:
            values[name] = trial.suggest_int(name, int(p.low), int(p.high), log=p.log, step=p.step or 1)
        else:
            values[name] = trial.suggest_float(name, float(p.low), float(p.high), log=p.log)
    return values


class _TrialRunner:
    """A worker of the sweep's own process that trains only this sweep's trials, in a thread."""

    def __init__(self, ctx, sweep_id: int):
        from core.worker import Worker

        self.sweep_id = sweep_id
        self.worker = Worker(ctx.db_path, worker_id=f"{ctx.worker_id}/sweep-{sweep_id}", kinds=("train",))
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"sweep-{sweep_id}-trials", daemon=True)

    def _run(self) -> None:
        from core import worker as core_worker

        try:
            with self.worker._registered():
                db = self.worker.db
                while not self.worker.stopping.is_set():
                    job_id = store_sweeps.next_trial_job(db, self.sweep_id, store_now() - core_worker.STALE_AFTER_S)
                    job = jobs.claim(db, self.worker.id, kinds=("train",), stale_after=core_worker.STALE_AFTER_S,
                                     job_id=job_id) if job_id else None
                    if job is None:
                        self.worker.stopping.wait(POLL_S)
                        continue
                    self.worker.run_job(job)
        except BaseException as exc:  # reported by the sweep loop
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    def stop(self, db) -> None:
        """Stop after (or at a checkpoint of) the trial it trains; that trial goes back to the queue,
        unless it was pruned (cancel requested): then it ends cancelled here, not in a later worker."""
        current = self.worker._current
        if current is not None and jobs.cancel_requested(db, current.job_id):
            current._cancelled.set()
        self.worker.request_stop()
        self.thread.join(timeout=120)


class SweepLoop:
    """One sweep job's state between polls."""

    def __init__(self, ctx, sweep: dict):
        self.ctx, self.db, self.sweep = ctx, ctx.db, sweep
        self.id = sweep["id"]
        self.cfg = sweep["config"]
        self.space = sweep_space.from_dict(sweep["model"], self.cfg["space"])
        self.metric_column = METRICS[self.cfg["metric"]][1]
        self.maximize = self.cfg["direction"] == "maximize"
        self.trials: dict[int, object] = {}  # trial number -> optuna Trial (for report/should_prune)
        self.reported: dict[int, set[int]] = {}

    # -- opening --------------------------------------------------------------------------
    def open(self) -> None:
        """Open (or create) the study in its journal file, clearing a dead writer's lock and a torn last line."""
        path = Path(self.sweep["storage"]) if self.sweep["storage"] else self.ctx.files("sweeps", self.id) / "study.journal"
        if not self.sweep["storage"]:
            store_sweeps.update(self.db, self.id, storage=str(path))
        self.study = open_study(path, f"sweep-{self.id}", self.cfg)
        self.reconcile()

    def reconcile(self) -> None:
        """Make the study and the trial rows agree after a kill at any point between them."""
        from optuna.trial import TrialState

        rows = {r["trial"]: r for r in store_sweeps.trials(self.db, self.id)}
        for frozen in self.study.get_trials(deepcopy=False):
            row = rows.get(frozen.number)
            if frozen.state == TrialState.RUNNING:
                if row is None:  # asked, then killed before its run existed: give it its run now
                    self._start_trial(self._trial(frozen.number))
                elif row["status"] != "running":  # the row was closed, Optuna was not told
                    self._tell_from_row(row)
                else:
                    self.reported[frozen.number] = set(frozen.intermediate_values)
            elif row is not None and row["status"] == "running":  # told, killed before the row
                self._close_row_from(frozen)

    def _trial(self, number: int):
        import optuna

        if number not in self.trials:
            trial_id = self.study.get_trials(deepcopy=False)[number]._trial_id
            self.trials[number] = optuna.trial.Trial(self.study, trial_id)
        return self.trials[number]

    def _tell_from_row(self, row: dict) -> None:
        from optuna.trial import TrialState

        state = {"done": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}[row["status"]]
        self._tell(row["trial"], row["value"] if state == TrialState.COMPLETE else None, state=state)

    def _tell(self, trial, value: float | None = None, *, state=None, attrs: dict | None = None) -> bool:
        """Tell Optuna how ``trial`` ended, once: False (and the row closed from what the study holds)
        when it was told already, by this study's earlier driver (a worker whose claim went stale under
        load and was taken over, still finishing its poll). Telling twice must not fail the sweep."""
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            for key, attr in (attrs or {}).items():  # on a finished trial this raises too
                trial.set_user_attr(key, attr)
            if state is None:
                self.study.tell(trial, value)
            else:
                self.study.tell(trial, value, state=state)
            return True
        except UpdateFinishedTrialError:
            number = trial if isinstance(trial, int) else trial.number
            frozen = self.study.get_trials(deepcopy=False)[number]
            self.ctx.log("warning", f"sweep {self.id}: trial {number} was already told ({frozen.state.name}); kept that")
            self._close_row_from(frozen)
            return False

    def _close_row_from(self, frozen) -> None:
        from optuna.trial import TrialState

        status = {TrialState.COMPLETE: "done", TrialState.PRUNED: "pruned"}.get(frozen.state, "failed")
        store_sweeps.finish_trial(self.db, self.id, frozen.number, status,
                                  value=frozen.value if status == "done" else None,
                                  pruned_epoch=frozen.user_attrs.get("pruned_epoch"),
                                  error=frozen.user_attrs.get("error"))

    # -- trials ---------------------------------------------------------------------------
    def _start_trial(self, trial) -> None:
        values = _suggest(trial, self.space)
        settings = self.space.train_settings(values)
        sweep = self.sweep
        ds = store_datasets.get(self.db, sweep["dataset_id"])
        cfg = TrainConfig.from_dict({"dataset": ds["name"], "model": sweep["model"], "epochs": self.cfg["epochs"],
                                     "seed": self.cfg["seed"], **settings}).validate()
        shape, dtype = model_input(ds)
        sizes = models.check_config(cfg.model, shape, ds["n_classes"], cfg.preset, dtype, cfg.arch)
        with transaction(self.db):
            run_id = store_runs.create(self.db, dataset_id=ds["id"], model=cfg.model, config=cfg.to_dict(),
                                       epochs_total=cfg.epochs, params=sizes["params"], size_bytes=sizes["size_bytes"])
            jobkinds.queue(self.db, "train", run_id=run_id, on=self.cfg.get("on"))
            store_sweeps.add_trial(self.db, self.id, trial.number, run_id, values)
        self.reported[trial.number] = set()

    def top_up(self, running: list[dict]) -> None:
        """Ask for new trials while fewer than ``parallel`` run and the budget allows."""
        total = len(self.study.get_trials(deepcopy=False))
        in_flight = len(running)
        while in_flight < self.cfg["parallel"] and total < self.cfg["trials"] and not self.timed_out():
            pace.hold("sweep:ask", step=total, check=self.ctx.check)  # tests only: kill the sweep at this point
            trial = self.study.ask()
            self.trials[trial.number] = trial
            self._start_trial(trial)
            total += 1
            in_flight += 1

    def timed_out(self) -> bool:
        """True once the sweep's ``--timeout`` (counted from its first start) has passed."""
        limit = self.cfg.get("timeout_s")
        started = self.sweep.get("started_at") or store_now()
        return limit is not None and store_now() - started >= limit

    def watch(self, row: dict) -> None:
        """Report a running trial's new epochs, prune it if the pruner says so, close it when its run ended."""
        number, run_id = row["trial"], row["run_id"]
        run = store_runs.get(self.db, run_id)
        seen = self.reported.setdefault(number, set())
        trial = self._trial(number)
        for p in store_sweeps.val_points(self.db, run_id):
            value = p[self.metric_column]
            if p["epoch"] in seen or value is None:
                continue
            trial.report(float(value), int(p["epoch"]))
            seen.add(p["epoch"])
            if run["status"] not in ("done", "failed", "cancelled") and trial.should_prune():
                self.prune(row, trial, int(p["epoch"]))
                return
        if run["status"] == "done":
            value = (run["metrics"] or {}).get(self.cfg["metric"])
            if value is None:
                self.fail(row, trial, f"run {run_id} finished without {self.cfg['metric']}")
                return
            if self._tell(trial, float(value)):
                store_sweeps.finish_trial(self.db, self.id, number, "done", value=float(value))
            self.after_finish()
        elif run["status"] in ("failed", "cancelled"):
            self.fail(row, trial, run["error"] or f"run {run_id} {run['status']}")

    def prune(self, row: dict, trial, epoch: int) -> None:
        """Cancel the trial's train job and record it as pruned at ``epoch``, in the study and the store."""
        from optuna.trial import TrialState

        from core.runs import RunError, cancel_run

        try:
            cancel_run(self.db, row["run_id"])
        except RunError:
            return  # it finished meanwhile: the next poll records its value
        if not self._tell(trial, state=TrialState.PRUNED, attrs={"pruned_epoch": epoch}):
            return
        store_sweeps.finish_trial(self.db, self.id, row["trial"], "pruned", pruned_epoch=epoch)
        events.log(self.db, "info", "sweeps", f"sweep {self.id}: trial {row['trial']} (run {row['run_id']}) "
                   f"pruned at epoch {epoch}", run_id=row["run_id"], job_id=self.ctx.job_id)

    def fail(self, row: dict, trial, reason: str) -> None:
        """Record a trial whose run failed, in the study and the store, with the run's reason."""
        from optuna.trial import TrialState

        if self._tell(trial, state=TrialState.FAIL, attrs={"error": reason[:500]}):
            store_sweeps.finish_trial(self.db, self.id, row["trial"], "failed", error=reason[:500])

    def after_finish(self) -> None:
        """Best trial and (with enough finished trials) importances, stored for the dashboard."""
        from optuna.trial import TrialState

        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return
        best = self.study.best_trial
        row = next((r for r in store_sweeps.trials(self.db, self.id) if r["trial"] == best.number), None)
        fields = {"best": {"trial": best.number, "run_id": row["run_id"] if row else None,
                           "params": row["params"] if row else best.params, "value": best.value}}
        if len(done) >= IMPORTANCE_AFTER and len(self.space.searched()) > 1:
            import optuna

            try:
                found = optuna.importance.get_param_importances(self.study)
                fields["importances"] = {k: round(float(v), 4) for k, v in found.items()}
            except (ValueError, RuntimeError) as exc:  # e.g. every trial chose the same values
                self.ctx.log("warning", f"sweep {self.id}: no parameter importances yet ({exc})")
        store_sweeps.update(self.db, self.id, **fields)

    def cancel_in_flight(self) -> None:
        """Cancel every trial still training (the sweep itself was cancelled)."""
        from core.runs import RunError, cancel_run

        for row in store_sweeps.trials(self.db, self.id):
            if row["status"] == "running":
                try:
                    cancel_run(self.db, row["run_id"])
                except RunError:
                    pass  # already ended
                self.fail(row, self._trial(row["trial"]), "the sweep was cancelled")

    # -- the loop -------------------------------------------------------------------------
    def step(self) -> bool:
        """One poll; False when the study is finished (budget spent or timed out, nothing in flight)."""
        running = [r for r in store_sweeps.trials(self.db, self.id) if r["status"] == "running"]
        for row in running:
            self.watch(row)
        running = [r for r in store_sweeps.trials(self.db, self.id) if r["status"] == "running"]
        self.top_up(running)
        running = [r for r in store_sweeps.trials(self.db, self.id) if r["status"] == "running"]
        self.ctx.progress(trials=len(self.study.get_trials(deepcopy=False)), of=self.cfg["trials"], running=len(running))
        return bool(running)


def run(ctx) -> dict:
    """Run (or resume) the sweep in ``the job's payload (``sweep_id``)``; its row and trials say how it went."""
    from core.optional import require

    require("optuna", "a sweep")
    db = ctx.db
    sweep_id = jobkinds.payload_of(ctx.job).sweep_id
    sweep = store_sweeps.get(db, sweep_id)
    if sweep is None:
        raise PocketopsError(f"sweep job {ctx.job_id}: sweep {sweep_id} does not exist")
    if sweep["status"] in ("done", "cancelled"):
        return {"sweep_id": sweep_id, "status": sweep["status"], "skipped": True}
    store_sweeps.set_status(db, sweep_id, "running")
    sweep = store_sweeps.get(db, sweep_id)
    loop = SweepLoop(ctx, sweep)
    runner = _TrialRunner(ctx, sweep_id)
    try:
        loop.open()
        runner.start()
        if ctx.job["attempts"] > 1:
            ctx.log("info", f"sweep {sweep_id} resumed: {len(loop.study.trials)} of {sweep['config']['trials']} trials asked")
        while loop.step():
            ctx.check()
            if runner.error is not None:
                raise runner.error
            ctx._stopping.wait(POLL_S)  # wakes at once on SIGTERM
            ctx.check()
        loop.after_finish()
    except JobCancelled:
        loop.cancel_in_flight()
        store_sweeps.set_status(db, sweep_id, "cancelled", error="cancelled by the user")
        raise
    except JobStopped:
        store_sweeps.set_status(db, sweep_id, "queued")  # the next worker resumes the study
        raise
    except BaseException as exc:
        message = str(exc) if isinstance(exc, (PocketopsError, ConfigError)) else f"{type(exc).__name__}: {exc}"
        store_sweeps.set_status(db, sweep_id, "failed", error=message)
        raise
    finally:
        runner.stop(db)
    result = summary(db, sweep_id)
    status = "done" if result["best"] is not None else "failed"
    store_sweeps.set_status(db, sweep_id, status, error=None if status == "done" else "no trial finished")
    best = result["best"]
    events.log(db, "info", "job:sweep", f"sweep {sweep_id} {status}: {len(result['trials'])} trials"
               + (f", best trial {best['trial']} (run {best['run_id']}) {sweep['config']['metric']} {best['value']:.4f}"
                  if best else ""), job_id=ctx.job_id)
    if status == "failed":
        raise PocketopsError(f"sweep {sweep_id}: no trial finished ({len(result['trials'])} failed or pruned)")
    return {"sweep_id": sweep_id, "trials": len(result["trials"]), "best": best}
