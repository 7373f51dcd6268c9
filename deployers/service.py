"""Deploy, status, rollback and stop as recorded releases: the one path the CLI, the worker and the panel share.

Every release is a row in ``deployments`` (see ``store.deployments``). A failed deploy or
rollback is recorded with its reason and never touches the release that is serving.
Secrets (API keys, tokens, credentials) never reach a row, an event or an error message.
"""
from __future__ import annotations

import os
import socket
import tempfile
import traceback
from pathlib import Path

from core import jobkinds, paths
from core.errors import PocketopsError
from core.optional import MissingDependency
from deployers import registry, targets
from deployers.targets import release_label
from deployers.base import Bundle, Deployer, DeployError, Plan, Release
from deployers.bundle import build_bundle, load_variant
from store import deployments as store_deployments
from store import events
from store.db import transaction

SECRET_KEYS = set(jobkinds.SECRET_OPTIONS)  # one list: queued payloads refuse the same keys
# Environment variables whose values are secrets: the served API key, Hugging Face tokens (both
# names huggingface_hub reads) and the alert webhook (its URL is its credential).
SECRET_ENV = ("POCKETOPS_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "POCKETOPS_WEBHOOK_URL")
LIVE_QUERY = ("deploying", "running", "sleeping", "stopped")


def line_name(target: str, options: dict) -> str:
    """The line a release belongs to: a Space id, a function name, else the target itself."""
    for key in ("name", "space_id", "repo_id", "function_name"):
        if options.get(key):
            return str(options[key])
    return target


def public_options(options: dict) -> dict:
    """Options safe to record: no secrets, no internal paths."""
    safe = {k: v for k, v in options.items() if k not in SECRET_KEYS and k != "workdir" and v is not None}
    if options.get("api_key"):
        safe["api_key_set"] = True
    return safe


def _hub_tokens() -> list[str]:
    """The Hugging Face tokens huggingface_hub would send: HF_TOKEN, else its token file
    (HF_TOKEN_PATH or HF_HOME/token), plus every profile ``hf auth login`` stored.

    huggingface_hub's own getters, so its lookup rules are ours; imported only here, on paths
    that record a deploy or an error (never the dashboard's start), and skipped when absent.
    """
    try:
        import huggingface_hub
        from huggingface_hub.utils import get_stored_tokens
    except ImportError:
        return []
    tokens = []
    for getter in (huggingface_hub.get_token, lambda: list(get_stored_tokens().values())):
        try:
            found = getter()
        except Exception:   # a broken token file or a failed refresh: nothing more to mask from it
            continue
        tokens += found if isinstance(found, list) else [found]
    return [t for t in tokens if isinstance(t, str) and t]


def secret_values(options: dict | None = None) -> list[str]:
    """Every secret value this process could leak, longest first: secret options, the secret
    environment variables and huggingface_hub's tokens (a URL secret also by its path)."""
    found = [str(v) for k, v in (options or {}).items() if k in SECRET_KEYS and isinstance(v, str) and v]
    found += [os.environ[k] for k in SECRET_ENV if os.environ.get(k)]
    found += _hub_tokens()
    values = set()
    for value in (v.strip() for v in found):
        values.add(value)
        if "://" in value:
            # An error may quote a webhook's path without its host; the path is the secret part.
            path = value.split("://", 1)[1].partition("/")[2]
            if len(path) >= 8:
                values.add("/" + path)
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def scrub(text: str, options: dict | None = None) -> str:
    """``text`` with every secret of :func:`secret_values` masked as ``***``."""
    for secret in secret_values(options):
        text = text.replace(secret, "***")
    return text


def _clean_meta(meta: dict, secrets: list[str] | None = None) -> dict:
    """``meta`` without secret keys, and with any secret value quoted in a string (an error) masked."""
    secrets = secret_values() if secrets is None else secrets

    def clean(value):
        if isinstance(value, dict):
            return _clean_meta(value, secrets)
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str):
            for secret in secrets:
                value = value.replace(secret, "***")
        return value

    return {k: clean(v) for k, v in (meta or {}).items() if k not in SECRET_KEYS}


def _db_path(db) -> Path:
    for _seq, name, file in db.execute("PRAGMA database_list").fetchall():
        if name == "main" and file:
            return Path(file)
    raise DeployError("this database has no file (in memory); deployments need a database file")


def check_servable(variant: dict, target: str) -> None:
    """Refuse, in one line and before any row, bundle or network call, a variant ``target`` cannot serve.

    The static page and the Cloud Run function serve ONNX models only (``deployers.targets``);
    a .pte or .tflite variant also needs its runtime here, where its bundle is built and checked.
    """
    from core import runtimes

    what = f"variant {variant['id']} ({variant['name']})"
    why = targets.refusal(target, variant["path"], what)
    if why:
        raise DeployError(why)
    rt = runtimes.runtime_of(variant["path"])
    if rt.name != "onnxruntime":  # onnxruntime's own absence keeps the message the bundle build gives
        runtimes.require(rt.name, f"deploying {what} to {target}")


def plan(db, variant_id: int, target: str, options: dict, deployer: Deployer | None = None) -> Plan:
    """What deploying would do; builds the bundle in a temp dir and changes nothing else."""
    check_servable(load_variant(db, variant_id), target)
    deployer = deployer or registry.get(target)
    with tempfile.TemporaryDirectory(prefix="pocketops-plan-") as tmp:
        bundle = build_bundle(db, None, variant_id, out_dir=Path(tmp) / "bundle", register=False)
        return deployer.plan(bundle, dict(options))


def deploy(db, db_path, variant_id: int, target: str, options: dict, deployer: Deployer | None = None) -> dict:
    """Release ``variant_id`` to ``target``; returns the new deployment row (status running/sleeping/deploying).

    On failure the row is "failed" with the reason, the serving release stays "running", and a
    DeployError says both.
    """
    options = dict(options)
    variant = load_variant(db, variant_id)     # a wrong id fails before any row exists,
    check_servable(variant, target)            # and so does a runtime the target does not serve
    from deployers import costs                # hard budgets refuse before any network call or row
    costs.check_deploy(db, target, options)
    deployer = deployer or registry.get(target)  # so does a missing client package
    name = line_name(target, options)
    reconcile(db, target, name, deployer)
    row = store_deployments.create(db, variant_id=variant_id, target=target, name=name,
                                   meta={"options": public_options(options), "owner": _owner()})
    events.log(db, "info", "deploy", f"deployment {row['id']}: {release_label(row)} of variant {variant_id} started")
    previous = store_deployments.live(db, target, name, exclude_id=row["id"])
    _record_processes(db, row, deployer)
    try:
        bundle = build_bundle(db, db_path, variant_id)
        options.setdefault("workdir", str(paths.artifact_dir(db_path, "deployments", row["id"])))
        store_deployments.update(db, row["id"], meta={"workdir": options["workdir"]})  # known before any process
        release = deployer.deploy(bundle, options, previous)
    except Exception as exc:
        raise _failed(db, row, exc, options, previous) from exc
    # Every older release still marked live: also one whose Space was building when we last looked.
    return _succeeded(db, row, release, bundle, superseded=store_deployments.current(db, target, name, exclude_id=row["id"]))


def status(db, deployment_id: int, deployer: Deployer | None = None) -> dict:
    """Ask the target how the release is doing; record and return the row."""
    row = _get(db, deployment_id)
    if row["status"] not in LIVE_QUERY:
        return row  # history (superseded, rolled-back, failed) is not a live thing to ask about
    deployer = deployer or registry.get(row["target"])
    try:
        release = deployer.status(row)
    except (PocketopsError, MissingDependency) as exc:
        _raise_scrubbed(exc)
    except Exception as exc:
        raise DeployError(f"status of deployment {deployment_id} failed: {type(exc).__name__}: {scrub(str(exc))}") from exc
    fields = {"status": release.status}
    if release.url:
        fields["url"] = release.url
    if release.health_latency_ms is not None:
        fields["health_latency_ms"] = release.health_latency_ms
    return store_deployments.update(db, deployment_id, meta={**_clean_meta(release.meta), "checked": True}, **fields)


def rollback(db, deployment_id: int, deployer: Deployer | None = None) -> dict:
    """Serve the release before ``deployment_id`` again, as a new row (version + 1)."""
    current = _get(db, deployment_id)
    _only_the_serving_release(db, current, "roll back")
    previous = store_deployments.previous_served(db, current["target"], current["name"], current["id"])
    if previous is None:
        raise DeployError(f"deployment {deployment_id} ({release_label(current)}) "
                          f"has no earlier successful release to roll back to")
    deployer = deployer or registry.get(current["target"])
    previous_bundle = _bundle_of(db, previous)
    row = store_deployments.create(
        db, variant_id=previous["variant_id"], target=current["target"], name=current["name"],
        meta={"rolled_back_from": current["id"], "restores": previous["id"], "restores_version": previous["version"],
              "owner": _owner()})
    events.log(db, "info", "deploy", f"deployment {row['id']}: rollback of {release_label(current)} "
                                     f"to v{previous['version']} started")
    _record_processes(db, row, deployer)
    try:
        release = deployer.rollback(current, previous, previous_bundle)
    except Exception as exc:
        raise _failed(db, row, exc, {}, current if current["status"] in ("running", "sleeping") else None) from exc
    others = [r for r in store_deployments.current(db, current["target"], current["name"], exclude_id=row["id"])
              if r["id"] != current["id"]]
    return _succeeded(db, row, release, previous_bundle, superseded=others, rolled_back=current)


def stop(db, deployment_id: int, deployer: Deployer | None = None) -> dict:
    """Stop the serving release of deployment ``deployment_id`` and mark its row stopped; secrets are scrubbed from errors."""
    row = _get(db, deployment_id)
    _only_the_serving_release(db, row, "stop")
    deployer = deployer or registry.get(row["target"])
    try:
        release = deployer.stop(row)
    except (PocketopsError, MissingDependency) as exc:
        _raise_scrubbed(exc)
    except Exception as exc:
        raise DeployError(f"stop of deployment {deployment_id} failed: {type(exc).__name__}: {scrub(str(exc))}") from exc
    events.log(db, "info", "deploy", f"deployment {deployment_id}: {release_label(row)} stopped")
    return store_deployments.update(db, deployment_id, status=release.status or "stopped",
                                    meta={**_clean_meta(release.meta), "stopped_from": row["status"]})


def reconcile(db, target: str, name: str, deployer: Deployer | None = None) -> list[dict]:
    """Close the line's releases left 'deploying' by a process that died mid-deploy (signal 9).

    Such a row never got its outcome: the server it may have started is stopped (the deployer's
    ``abandon``) and the row is marked failed with the reason. Rows whose deploy returned (a
    Space still building: ``meta.served`` set) or whose deploying process still runs (or runs
    on another host, where its pid means nothing) are left alone. Returns the rows closed.
    """
    from core.worker import pid_alive  # the job loop's liveness rules (zombie, reused pid)

    host = socket.gethostname()
    closed = []
    for row in store_deployments.current(db, target, name):
        meta = row["meta"] or {}
        owner = meta.get("owner") or {}
        if row["status"] != "deploying" or "served" in meta or owner.get("host") != host or not owner.get("pid"):
            continue
        if pid_alive(owner["pid"], owner.get("create_time")):
            continue
        deployer = deployer or registry.get(target)
        abandon = getattr(deployer, "abandon", None)
        note = abandon(row) if abandon is not None else None
        reason = (f"interrupted: the process deploying it (pid {owner['pid']}) died before it finished"
                  + (f"; {note}" if note else ""))
        closed.append(store_deployments.update(db, row["id"], status="failed", error=reason,
                                               meta={"interrupted": True}))
        events.log(db, "warning", "deploy", f"deployment {row['id']}: {release_label(row)} {reason}")
    return closed


# -- helpers ------------------------------------------------------------------------------

def _owner() -> dict:
    """Who is deploying a row: this process (pid + create time, so a reused pid is not it) on this host."""
    from core.worker import process_create_time

    return {"pid": os.getpid(), "host": socket.gethostname(), "create_time": process_create_time()}


def _record_processes(db, row: dict, deployer: Deployer) -> None:
    """Have the deployer record each server process it starts on ``row`` before waiting for it,
    so one left behind by a kill can be found and stopped (see :func:`reconcile`)."""
    if hasattr(deployer, "on_started"):
        def record(process: dict) -> None:
            started = (store_deployments.get(db, row["id"])["meta"] or {}).get("started") or []
            store_deployments.update(db, row["id"], meta={"started": [*started, process]})

        deployer.on_started = record


def _only_the_serving_release(db, row: dict, action: str) -> None:
    """Refuse to act on an older row while another release of its line serves.

    An old row still names the same Space, function or port: stopping it would pause the Space
    or delete the function that serves the newer release; rolling it back would start a
    second server beside the serving one.
    """
    serving = store_deployments.live(db, row["target"], row["name"])
    if serving is not None and serving["id"] != row["id"]:
        raise DeployError(f"deployment {row['id']} ({release_label(row)}) is {row['status']}, not the release serving "
                          f"{row['name']}: #{serving['id']} v{serving['version']} is; {action} #{serving['id']} instead")


def _raise_scrubbed(exc: BaseException) -> None:
    """Re-raise ``exc``, as a DeployError without the secret if its message quotes one."""
    message = scrub(str(exc))
    if message != str(exc):
        raise DeployError(message) from None
    raise exc


def _get(db, deployment_id: int) -> dict:
    row = store_deployments.get(db, int(deployment_id))
    if row is None:
        raise DeployError(f"deployment {deployment_id} does not exist; see `pocketops deployments list`")
    return row


def _bundle_of(db, row: dict) -> Bundle:
    path = (row.get("meta") or {}).get("bundle")
    if path and (Path(path) / "model.json").is_file():
        return Bundle.load(path, row.get("variant_id"))
    if row.get("variant_id") is None:
        raise DeployError(f"deployment {row['id']}: its bundle {path} is gone and no variant is recorded to rebuild it")
    return build_bundle(db, _db_path(db), row["variant_id"])


def _succeeded(db, row: dict, release: Release, bundle: Bundle, *, superseded: list[dict],
               rolled_back: dict | None = None) -> dict:
    served = release.status in ("running", "sleeping", "deploying")
    meta = {**_clean_meta(release.meta), "bundle": str(bundle.path), "bundle_version": bundle.version, "served": served}
    with transaction(db):
        store_deployments.update(db, row["id"], status=release.status, url=release.url,
                                 health_latency_ms=release.health_latency_ms, cold_start_ms=release.cold_start_ms,
                                 meta=meta)
        for old in superseded:
            if old and old["id"] != row["id"]:
                store_deployments.update(db, old["id"], status="superseded", meta={"superseded_by": row["id"]})
        if rolled_back is not None:
            store_deployments.update(db, rolled_back["id"], status="rolled-back", meta={"rolled_back_by": row["id"]})
    events.log(db, "info", "deploy", f"deployment {row['id']}: {release_label(row)} "
                                     f"{release.status}" + (f" at {release.url}" if release.url else ""))
    return store_deployments.get(db, row["id"])


def _failed(db, row: dict, exc: BaseException, options: dict, serving: dict | None) -> DeployError:
    """Record the failure on ``row``; the DeployError to raise (one line, no secrets)."""
    if isinstance(exc, (PocketopsError, MissingDependency)):
        reason = str(exc)
    else:
        reason = f"{type(exc).__name__}: {exc}"
        events.log(db, "error", "deploy", scrub(traceback.format_exc(), options))  # a bug: keep the whole trace
    reason = scrub(reason, options)
    store_deployments.update(db, row["id"], status="failed", error=reason)
    restored = getattr(exc, "restored", None)
    if restored is not None and serving is not None:
        # The serving release stepped aside and was started again: record where it runs now.
        store_deployments.update(db, serving["id"], status=restored.status, url=restored.url,
                                 health_latency_ms=restored.health_latency_ms, meta=_clean_meta(restored.meta))
    tail = f"; v{serving['version']} keeps serving" if serving else ""
    message = f"deployment {row['id']} ({release_label(row)}) failed: {reason}{tail}"
    events.log(db, "error", "deploy", message)
    return DeployError(message)
