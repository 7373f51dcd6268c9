"""The one registry of job kinds: every kind's name, payload dataclass and handler path.

The worker, the dashboard and the CLI only go through here: ``queue(db, "export", run_id=3)``
validates the payload (a one-line error naming the field, and no row written) and enqueues it;
the worker looks the handler up with ``handler_path(kind)``. Adding a kind is one ``@kind``
entry in this file plus its handler function.

Handler paths are strings resolved by the worker at run time, so this module (which the
dashboard imports) loads neither torch nor the deployers; the import-linter contract
"core must not import deployers" holds for static imports, and ``tests/test_jobkinds.py``
checks that every path here resolves to a callable (and that nothing queues a job but ``queue``).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field
from typing import Any, Callable

from core.errors import ConfigError


@dataclass(frozen=True)
class JobKind:
    """One kind of job: what its payload holds and which function runs it."""

    name: str
    payload: type
    handler: str  # "module:function", taking a core.worker.JobContext, returning a JSON-able dict
    summary: str


_KINDS: dict[str, JobKind] = {}

# Option names that hold secrets: a deploy payload refuses them (the worker's environment, or the
# CLI's memory, has them), and deployers.service never records them.
SECRET_OPTIONS = frozenset({"api_key", "token", "hf_token", "credentials", "password", "secret", "webhook_url"})


def kind(name: str, handler: str, summary: str) -> Callable[[type], type]:
    """Class decorator: register ``cls`` (a dataclass) as the payload of job kind ``name``."""

    def register(cls: type) -> type:
        if not dataclasses.is_dataclass(cls):
            cls = dataclass(cls)
        if name in _KINDS:
            raise RuntimeError(f"job kind {name!r} registered twice")
        _KINDS[name] = JobKind(name=name, payload=cls, handler=handler, summary=summary)
        cls.KIND = name
        return cls

    return register


def get(name: str) -> JobKind:
    """The registered kind ``name``; a one-line ConfigError listing the known kinds otherwise."""
    found = _KINDS.get(name)
    if found is None:
        raise ConfigError(f"unknown job kind {name!r}; known kinds: {', '.join(sorted(_KINDS))}")
    return found


def names() -> tuple[str, ...]:
    """All registered kind names, in registration order."""
    return tuple(_KINDS)


def handler_path(name: str) -> str:
    """The ``module:function`` that runs jobs of kind ``name``."""
    return get(name).handler


# -- payload validation ----------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]" if args else origin.__name__
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _conforms(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and (not args or all(_conforms(v, args[0]) for v in value))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def validate(name: str, payload: dict | Any) -> Any:
    """The payload of a ``name`` job as its dataclass, checked field by field.

    Unknown fields, missing required fields and values of the wrong type raise one-line
    ConfigErrors naming the kind and the field; the dataclass's own ``check()`` (if any) then
    validates meaning (ranges, names) and may normalise values.
    """
    spec = get(name)
    cls = spec.payload
    if dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        if not isinstance(payload, cls):
            raise ConfigError(f"{name} job: payload must be {cls.__name__}, not {type(payload).__name__}")
        payload = asdict(payload)
    if not isinstance(payload, dict):
        raise ConfigError(f"{name} job: payload must be an object of fields, not {type(payload).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(payload) - set(known))
    if unknown:
        raise ConfigError(f"{name} job: unknown field(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for f in dataclasses.fields(cls):
        if f.name not in payload:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{name} job: payload needs field {f.name!r} ({_type_name(hints[f.name])})")
            continue
        value = payload[f.name]
        if not _conforms(value, hints[f.name]):
            raise ConfigError(f"{name} job: field {f.name!r} must be {_type_name(hints[f.name])}, not {value!r}")
    obj = cls(**payload)
    check = getattr(obj, "check", None)
    if check is not None:
        check()
    return obj


def queue(db, name: str, payload: dict | Any | None = None, **fields: Any) -> int:
    """Validate a ``name`` payload (a dict, its dataclass, or keyword fields) and enqueue it; the job id.

    Nothing is written when validation fails. A payload's ``run_id`` (if its kind has one) is
    also the job row's, so a run's jobs are found by run.
    """
    from store import jobs

    if payload is None:
        payload = fields
    elif fields:
        raise TypeError("give the payload either as one object or as keyword fields, not both")
    obj = validate(name, payload)
    return jobs.enqueue(db, name, asdict(obj), run_id=getattr(obj, "run_id", None))


def payload_of(job: dict) -> Any:
    """A claimed job's payload as its kind's dataclass (validated again: rows may predate a change)."""
    return validate(job["kind"], job.get("payload") or {})


# -- the kinds -------------------------------------------------------------------------------

@kind("train", "core.train_job:run", "train a queued run (its config lives in the runs row)")
class TrainPayload:
    """Payload of ``train``: the run to train, and the cluster to train it on (None: here)."""

    run_id: int
    on: str | None = None


@kind("export", "core.export_job:run", "export a finished run to ONNX, quantize, benchmark on this device")
class ExportPayload:
    """Payload of ``export``: which run, which variants, and how to measure and recommend."""

    run_id: int
    variants: list[str] = field(default_factory=list)
    threads: int = 1
    calibration_samples: int = 256
    prefer: str | None = None          # None: the stored preference (core.recommend.load_prefs)
    budget_points: float | None = None
    runtime: str | None = None         # None: the stored one; "any" or the runtime the app ships with
    on: str | None = None  # a cluster (core/remote_job.py) builds the variants; they are benchmarked here

    def check(self) -> None:
        """Variant names known (fp32 always first: the reference), counts ≥ 1, preference known."""
        from core import recommend
        from core.quantize import DEFAULT_VARIANTS, check_names

        self.variants = check_names(list(self.variants or DEFAULT_VARIANTS))
        if "fp32" not in self.variants:
            self.variants.insert(0, "fp32")
        if self.threads < 1:
            raise ConfigError(f"threads must be 1 or more, not {self.threads}")
        if self.calibration_samples < 1:
            raise ConfigError(f"calibration_samples must be 1 or more, not {self.calibration_samples}")
        recommend.check_prefs(self.prefer, self.budget_points, self.runtime)


@kind("bench", "core.export_job:run_bench", "re-benchmark variants on this device")
class BenchPayload:
    """Payload of ``bench``: a run's newest variants, or explicit variant ids."""

    run_id: int | None = None
    variant_ids: list[int] = field(default_factory=list)
    threads: int = 1
    prefer: str | None = None          # None: the stored preference (core.recommend.load_prefs)
    budget_points: float | None = None
    runtime: str | None = None         # None: the stored one; "any" or the runtime the app ships with

    def check(self) -> None:
        """Exactly one of run_id / variant_ids; threads ≥ 1; preference known."""
        from core import recommend

        if (self.run_id is None) == (not self.variant_ids):
            raise ConfigError("bench job: give either run_id or variant_ids")
        if self.threads < 1:
            raise ConfigError(f"threads must be 1 or more, not {self.threads}")
        recommend.check_prefs(self.prefer, self.budget_points, self.runtime)


@kind("deploy", "deployers.jobs:deploy", "release a variant to a target")
class DeployPayload:
    """Payload of ``deploy``: which variant, where, with which options (never secrets)."""

    variant_id: int
    target: str
    options: dict = field(default_factory=dict)

    def check(self) -> None:
        """No secret travels through the queue: the worker reads keys from its environment."""
        secret = sorted(set(self.options) & SECRET_OPTIONS)
        if secret:
            raise ConfigError(f"{self.KIND} job: option(s) {', '.join(secret)} are secrets and never go through the "
                              "queue; set POCKETOPS_API_KEY in the worker's environment")


@kind("deploy-plan", "deployers.jobs:plan", "what deploying a variant would do (files, cost, requirements)")
class DeployPlanPayload(DeployPayload):
    """Payload of ``deploy-plan``: as ``deploy``; the worker builds the bundle in a temp dir."""


@kind("deploy-status", "deployers.jobs:status", "ask a target how a release is doing")
class DeployStatusPayload:
    """Payload of ``deploy-status``: the deployment to check."""

    deployment_id: int


@kind("deploy-rollback", "deployers.jobs:rollback", "serve the previous successful release of a line again")
class DeployRollbackPayload(DeployStatusPayload):
    """Payload of ``deploy-rollback``: the deployment to roll back from."""


@kind("deploy-stop", "deployers.jobs:stop", "stop serving a release")
class DeployStopPayload(DeployStatusPayload):
    """Payload of ``deploy-stop``: the deployment to stop."""


@kind("costs", "deployers.costs:run", "collect usage, raise budget warnings, stop what a hard budget covers")
class CostsPayload:
    """Payload of ``costs``: who asked (the audit log's ``who``); or a confirmed resume of a budget pause."""

    refresh: bool = True
    who: str = "worker"
    resume_deployment_id: int | None = None

    def check(self) -> None:
        """``who`` is one of the audit log's actors."""
        if self.who not in ("dashboard", "cli", "worker"):
            raise ConfigError(f"costs job: who must be dashboard, cli or worker, not {self.who!r}")


@kind("sweep", "core.sweep:run", "search training configs with Optuna; each trial is an ordinary train run")
class SweepPayload:
    """Payload of ``sweep``: the sweep (its config lives in the sweeps row)."""

    sweep_id: int


@kind("monitor", "deployers.monitor:run", "pull /v1/monitor of live deployments, open alerts, send notifications")
class MonitorPayload:
    """Payload of ``monitor``: one pass over every watched deployment, or over ``deployment_id`` only."""

    deployment_id: int | None = None
