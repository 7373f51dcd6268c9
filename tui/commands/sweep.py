"""`pocketops sweep --dataset NAME --model FAMILY --trials N [...]`: queue an Optuna sweep of ordinary train runs.

`sweep --show ID` prints a sweep (its trials and best; with ``--json`` the same summary as the
last line of a ``--wait``); `sweep --cancel ID` stops one: no new trial is asked, the trials in
flight are cancelled, finished ones stay (their runs are ordinary runs).
"""
from __future__ import annotations

import argparse
import re

from tui.commands._common import CliError, add_parser, emit, open_db, wait_for_job

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def register(sub) -> None:
    p = add_parser(sub, "sweep", "search training configs with Optuna (each trial an ordinary run); --wait streams trials")
    p.add_argument("--dataset")
    p.add_argument("--model", choices=("mlp", "cnn", "transformer"))
    p.add_argument("--trials", type=_trials, help="how many trials in all (done, pruned or failed)")
    p.add_argument("--parallel", type=_positive, default=1, help="trials in flight at once (one per worker; default 1)")
    p.add_argument("--timeout", type=_duration, default=None, metavar="DURATION",
                   help="ask no new trial after this long (e.g. 90s, 30m, 2h); running trials finish")
    p.add_argument("--metric", default="val_accuracy", choices=("val_accuracy", "val_loss"))
    p.add_argument("--space", default=None, metavar="FILE", help="YAML/JSON search space overriding the family's default")
    p.add_argument("--epochs", type=_positive, default=10, help="epochs per trial (pruning may stop one sooner)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed and every trial's training seed (recorded)")
    p.add_argument("--on", default=None, metavar="CLUSTER",
                   help="train every trial on this Ray cluster (see `pocketops cluster add`); the study stays here")
    p.add_argument("--wait", action="store_true", help="run now (or wait for the workers) and print each finished trial")
    p.add_argument("--show", type=int, metavar="SWEEP_ID", help="print a sweep: its trials and best")
    p.add_argument("--cancel", type=int, metavar="SWEEP_ID", help="stop a sweep: no new trials, those in flight cancelled")
    p.set_defaults(func=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, found {value}")
    return value


def _trials(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of trials, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a sweep needs at least 1 trial, found {value}; e.g. --trials 20")
    return value


def _duration(text: str) -> float:
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not found or float(found.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration above 0 such as 90s, 30m or 2h, found {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def run(args) -> int:
    from core.errors import ConfigError, DatasetError
    from core.optional import require_installed
    from core.sweep import new_sweep

    if args.show is not None or args.cancel is not None:
        return show_or_cancel(args)
    missing = [f"--{name}" for name in ("dataset", "model", "trials") if getattr(args, name) is None]
    if missing:
        raise CliError(f"sweep needs {', '.join(missing)} (or --show ID / --cancel ID); see `pocketops sweep --help`",
                       code=2)
    require_installed("optuna", "a sweep")
    if args.on is None:
        require_installed("torch", "training a sweep's trials")
    db, db_path = open_db(args)
    try:
        sweep_id, job_id = new_sweep(db, dataset=args.dataset, model=args.model, trials=args.trials,
                                     parallel=args.parallel, metric=args.metric, timeout_s=args.timeout,
                                     space_file=args.space, epochs=args.epochs, seed=args.seed, on=args.on)
    except (ConfigError, DatasetError) as exc:
        raise CliError(str(exc)) from exc
    if not args.wait:
        from core.worker import alive_workers

        who = ("a running worker will pick it up" if alive_workers(db_path) else
               "no worker is running: start one with `pocketops worker` (one per trial in parallel)")
        emit(args, {"sweep_id": sweep_id, "job_id": job_id, "status": "queued", "trials": [], "best": None},
             f"sweep {sweep_id} queued (job {job_id}); {who}")
        return 0
    return stream(args, db_path, sweep_id, job_id)


def show_or_cancel(args) -> int:
    """``--show ID`` / ``--cancel ID``: one sweep's summary, or a cancel request for its job."""
    from core.sweep import summary
    from store import jobs
    from store import sweeps as store_sweeps

    sweep_id = args.show if args.show is not None else args.cancel
    db, _ = open_db(args)
    sweep = store_sweeps.get(db, sweep_id)
    if sweep is None:
        latest = store_sweeps.latest(db)
        raise CliError(f"no sweep {sweep_id}" + (f"; the newest is {latest['id']}" if latest else "; none yet"))
    if args.cancel is not None:
        job = store_sweeps.job_of(db, sweep_id)
        if job is None or job["status"] not in jobs.ACTIVE:
            raise CliError(f"sweep {sweep_id} is {sweep['status']}; nothing to cancel")
        status = jobs.request_cancel(db, job["id"])
        if status == "cancelled":  # it was still queued: no worker will run it, so say so here
            store_sweeps.set_status(db, sweep_id, "cancelled", error="cancelled by the user")
        data = {"sweep_id": sweep_id, "job_id": job["id"], "status": "cancelled" if status == "cancelled" else "cancelling"}
        emit(args, data, f"sweep {sweep_id}: {data['status']} (job {job['id']}); finished trials stay as runs")
        return 0
    result = summary(db, sweep_id)
    if args.json:
        emit(args, {k: result[k] for k in ("sweep_id", "status", "trials", "best")})
        return 0
    lines = [f"sweep {sweep_id}: {result['status']}, {len(result['trials'])} trials"]
    for t in result["trials"]:
        value = "–" if t["value"] is None else f"{t['value']:.4f}"
        lines.append(f"  trial {t['trial']} (run {t['run_id']}): {t['status']}  value {value}  {t['params']}")
    if result["best"]:
        best = result["best"]
        lines.append(f"best: trial {best['trial']} = run {best['run_id']}, value {best['value']:.4f}")
    emit(args, result, "\n".join(lines))
    return 0


def stream(args, db_path, sweep_id: int, job_id: int) -> int:
    """Wait for the sweep's job, printing each trial as it finishes; the last line is the summary."""
    from core.sweep import summary, trial_dict
    from store import sweeps as store_sweeps

    printed: set[int] = set()

    def tick(db) -> None:
        for row in store_sweeps.trials(db, sweep_id):
            if row["status"] == "running" or row["trial"] in printed:
                continue
            printed.add(row["trial"])
            t = trial_dict(row)
            value = "–" if t["value"] is None else f"{t['value']:.4f}"
            extra = f" at epoch {t['pruned_epoch']}" if t["status"] == "pruned" else ""
            emit(args, t, f"trial {t['trial']} (run {t['run_id']}): {t['status']}{extra}  value {value}  {t['params']}")

    try:
        job = wait_for_job(db_path, job_id, tick=tick)
    except KeyboardInterrupt:
        raise CliError(f"stopped watching; sweep {sweep_id} goes on in a worker (or resumes in the next one)", code=130) from None
    import store

    result = summary(store.connect(db_path), sweep_id)
    if args.json:
        emit(args, {k: result[k] for k in ("sweep_id", "trials", "best")})
    else:
        best = result["best"]
        print(f"sweep {sweep_id}: {result['status']}, {len(result['trials'])} trials"
              + (f"; best trial {best['trial']} = run {best['run_id']}, value {best['value']:.4f}, {best['params']}"
                 if best else ""), flush=True)
    if job["status"] != "done":
        raise CliError(f"sweep {sweep_id} {job['status']}: {result.get('error') or job.get('error') or 'no reason recorded'}")
    return 0
