"""Alerts as the user sees them: list, evidence, ack, resolve, label, mute, retrain. No torch, no Textual.

The CLI (``pocketops alerts``) and the Alerts panel both go through here. Every refusal is one
line naming what was wrong and what to do, and changes nothing.
"""
from __future__ import annotations

import json
from typing import Any

from core.errors import PocketopsError
from store import alerts as store_alerts
from store import datasets as store_datasets
from store import deployments as store_deployments
from store import runs as store_runs
from store.db import transaction

DETECTORS = ("distance", "confidence", "classes", "health")
CONFIDENCE_BINS = 10
SIGNAL_OF = {"distance": "distance", "confidence": "confidence", "classes": "pred"}


class AlertError(PocketopsError):
    """A request about an alert that cannot be done (unknown id, bad sample, bad label)."""


def _alert(db, alert_id: int) -> dict:
    row = store_alerts.get(db, alert_id)
    if row is None:
        raise AlertError(f"no alert with id {alert_id}; `pocketops alerts list --all` shows them")
    return row


def list_alerts(db, *, include_resolved: bool = False) -> list[dict]:
    """``alerts list`` rows (public fields only), newest first."""
    return [store_alerts.public(r) for r in store_alerts.list_alerts(db, include_resolved=include_resolved)]


def ack(db, alert_id: int) -> dict:
    """Acknowledge an open alert; the public row."""
    row = _alert(db, alert_id)
    if row["status"] == "resolved":
        raise AlertError(f"alert {alert_id} is resolved already; nothing to acknowledge")
    return store_alerts.public(store_alerts.set_status(db, alert_id, "acked"))


def resolve(db, alert_id: int) -> dict:
    """Resolve an alert; the public row."""
    _alert(db, alert_id)
    return store_alerts.public(store_alerts.set_status(db, alert_id, "resolved"))


def mute(db, deployment_id: int, detector: str) -> bool:
    """Mute ``detector`` for a deployment (new alerts from it are not opened); False if already muted."""
    if store_deployments.get(db, deployment_id) is None:
        raise AlertError(f"no deployment with id {deployment_id}; `pocketops deployments list` shows them")
    if detector not in DETECTORS:
        raise AlertError(f"unknown detector {detector!r}; expected one of {', '.join(DETECTORS)}")
    return store_alerts.mute(db, deployment_id, detector)


# -- evidence -------------------------------------------------------------------------------

def _signals(db, row: dict) -> list[dict]:
    """The evidence window: the snapshot taken when the alert opened, completed from the store."""
    ev = row["evidence"]
    snap = {s["seq"]: s for s in ev.get("signals") or []}
    if ev.get("server_id") and row.get("request_seq") is not None and row.get("deployment_id") is not None:
        seq = int(row["request_seq"])
        for s in store_alerts.signals(db, row["deployment_id"], ev["server_id"], lo=seq - 300, hi=seq + 200):
            snap.setdefault(s["seq"], s)
    return [snap[k] for k in sorted(snap)]


def _histogram(values: list[float]) -> list[int]:
    counts = [0] * CONFIDENCE_BINS
    for v in values:
        if v is not None:
            counts[min(CONFIDENCE_BINS - 1, max(0, int(float(v) * CONFIDENCE_BINS)))] += 1
    return counts


def _shares(preds: list, n: int) -> list[int]:
    counts = [0] * n
    for p in preds:
        if isinstance(p, int) and 0 <= p < n:
            counts[p] += 1
    return counts


def samples(db, row: dict) -> list[dict]:
    """The alert's quarantined inputs, index K = position: ``{"index","seq","input","pred","confidence","label"}``."""
    ev = row["evidence"]
    if not ev.get("server_id") or row.get("deployment_id") is None:
        return []
    found = store_alerts.quarantine(db, row["deployment_id"], ev["server_id"], ev.get("quarantine") or [])
    return [{"index": i, **q} for i, q in enumerate(found)]


def classes_of(db, row: dict) -> list[str]:
    """The class names of the model that served when the alert opened."""
    labels = row["evidence"].get("labels") or []
    if labels:
        return [str(x) for x in labels]
    dataset = _dataset_of(db, row, required=False)
    return list(dataset["classes"]) if dataset else []


def detail(db, alert_id: int) -> dict:
    """``alerts show --json``: the public row plus its evidence, ready to draw.

    ``evidence``: ``signal`` (name and ``[seq, value]`` points), ``alarm_seq``, ``threshold``,
    ``confidence_histogram`` and ``class_counts`` before/after the alarm, ``samples``,
    ``classes``, the ``deployment`` (target, version, url, variant) and the served side's
    ``detector`` and ``calibration``; for a ``down`` alert the reason.
    """
    row = _alert(db, alert_id)
    ev = row["evidence"]
    out: dict[str, Any] = store_alerts.public(row)
    classes = classes_of(db, row)
    sigs = _signals(db, row)
    name = SIGNAL_OF.get(row.get("detector") or "", "distance")
    seq = row.get("request_seq")
    before = [s for s in sigs if seq is None or s["seq"] < seq]
    after = [s for s in sigs if seq is not None and s["seq"] >= seq]
    deployment = store_deployments.get(db, row["deployment_id"]) if row.get("deployment_id") is not None else None
    out["evidence"] = {
        "signal": {"name": name, "points": [[s["seq"], s.get(name)] for s in sigs if s.get(name) is not None]},
        "alarm_seq": seq,
        "threshold": row.get("threshold"),
        "value": row.get("value"),
        "confidence_histogram": {"before": _histogram([s.get("confidence") for s in before]),
                                 "after": _histogram([s.get("confidence") for s in after])},
        "class_counts": {"before": _shares([s.get("pred") for s in before], len(classes)),
                         "after": _shares([s.get("pred") for s in after], len(classes))},
        "classes": classes,
        "samples": samples(db, row),
        "deployment": {"deployment_id": row.get("deployment_id"), "target": ev.get("target") or (deployment or {}).get("target"),
                       "version": ev.get("version") or (deployment or {}).get("version"),
                       "url": ev.get("url") or (deployment or {}).get("url"),
                       "variant_id": ev.get("variant_id") or (deployment or {}).get("variant_id"),
                       "status_now": (deployment or {}).get("status")},
        "detector": ev.get("detector"),
        "calibration": ev.get("calibration"),
        "reason": ev.get("reason"),
        "notifications": [{k: n[k] for k in ("channel", "target", "status", "attempts", "last_error")}
                          for n in store_alerts.notifications(db, alert_id)],
    }
    out["acked_at"], out["resolved_at"] = row.get("acked_at"), row.get("resolved_at")
    return out


def label(db, alert_id: int, sample: int, label_name: str) -> dict:
    """Label quarantined sample ``sample`` of an alert with class ``label_name``; the sample after."""
    row = _alert(db, alert_id)
    found = samples(db, row)
    if not found:
        raise AlertError(f"alert {alert_id} has no quarantined samples to label")
    if not 0 <= sample < len(found):
        raise AlertError(f"alert {alert_id} has samples 0..{len(found) - 1}; there is no sample {sample}")
    classes = classes_of(db, row)
    if classes and label_name not in classes:
        shown = ", ".join(classes[:20]) + (" …" if len(classes) > 20 else "")
        raise AlertError(f"{label_name!r} is not one of the model's classes ({shown})")
    item = found[sample]
    store_alerts.set_label(db, row["deployment_id"], row["evidence"]["server_id"], item["seq"], label_name)
    return {**item, "label": label_name}


# -- retraining -------------------------------------------------------------------------------

def _dataset_of(db, row: dict, *, required: bool = True) -> dict | None:
    variant_id = row["evidence"].get("variant_id")
    if variant_id is None and row.get("deployment_id") is not None:
        dep = store_deployments.get(db, row["deployment_id"])
        variant_id = dep and dep.get("variant_id")
    variant = store_deployments.variant(db, variant_id) if variant_id is not None else None
    dataset = None
    if variant is not None:
        ds = (variant.get("meta") or {}).get("dataset")
        if isinstance(ds, str):
            dataset = store_datasets.by_name(db, ds)
        if dataset is None and variant.get("run_id"):
            run = store_runs.get(db, variant["run_id"])
            dataset = store_datasets.get(db, run["dataset_id"]) if run else None
    if dataset is None and required:
        raise AlertError(f"alert {row['id']}: the model's dataset is not known here (variant {variant_id}); "
                         "train on a dataset with `pocketops train --dataset NAME`")
    return dataset


def _train_settings(db, row: dict, dataset: dict) -> dict:
    """The served model's training settings (its run's config), else a small MLP."""
    variant_id = row["evidence"].get("variant_id")
    variant = store_deployments.variant(db, variant_id) if variant_id is not None else None
    run = store_runs.get(db, variant["run_id"]) if variant and variant.get("run_id") else None
    if run is None:
        return {"model": "mlp", "preset": "small", "epochs": 10}
    cfg = dict(run["config"])
    keep = ("model", "preset", "epochs", "batch_size", "accum", "lr", "weight_decay", "seed", "patience",
            "min_battery", "pause_on_low_battery", "val", "test")
    return {k: cfg[k] for k in keep if k in cfg}


def _as_raw(value, dataset: dict, raw_shape: tuple, dtype) -> Any:
    """A quarantined input as received by /v1/predict -> one raw row of the dataset's arrays."""
    import numpy as np

    meta = dataset.get("meta") or {}
    if meta.get("type") == "text":
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            value = value[0]
        if isinstance(value, str):
            ids = [b + 1 for b in value.encode("utf-8")[: raw_shape[0]]]
            return np.asarray(ids + [0] * (raw_shape[0] - len(ids)), dtype=dtype)
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != int(np.prod(raw_shape)):
        raise AlertError(f"a quarantined input has {arr.size} values; dataset {dataset['name']!r} has "
                         f"{int(np.prod(raw_shape))} per sample")
    arr = arr.reshape(raw_shape)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        arr = np.clip(np.rint(arr), info.min, info.max)
    return arr.astype(dtype)


def new_version(db, db_path, row: dict, labelled: list[dict]) -> dict:
    """A new dataset: the alert's dataset plus the labelled samples (the old one untouched); its row."""
    import numpy as np

    from core.datasets import _Processed, _register

    dataset = _dataset_of(db, row)
    with np.load(dataset["artifact_path"]) as data:
        raw, y = data["raw"], data["y"].astype(np.int64)
    classes = list(dataset["classes"])
    added = np.stack([_as_raw(s["input"], dataset, raw.shape[1:], raw.dtype) for s in labelled])
    labels = np.asarray([classes.index(s["label"]) for s in labelled], dtype=np.int64)
    meta = dict(dataset.get("meta") or {})
    base = meta.get("base_dataset") or dataset["name"]
    version = 2
    while store_datasets.by_name(db, f"{base}-v{version}") is not None:
        version += 1
    meta.update({"base_dataset": base, "version": version, "parent": dataset["name"], "alert_id": row["id"],
                 "added_rows": int(len(labels))})
    proc = _Processed(raw=np.concatenate([raw, added]), y=np.concatenate([y, labels]), classes=classes,
                      kind=dataset["kind"], meta=meta)
    return _register(db, db_path, proc, name=f"{base}-v{version}", source=f"alert {row['id']} + {dataset['name']}",
                     kind=dataset["kind"])


def retrain(db, db_path, alert_id: int, *, epochs: int | None = None, dataset_only: bool = False) -> dict:
    """Register the dataset plus the alert's labelled samples as a new version and queue a run on it
    (with ``dataset_only``, a run on the dataset as it is).

    ``{"alert_id", "dataset", "parent_dataset", "added_rows", "run_id", "job_id"}``.
    """
    from core.runs import new_run

    row = _alert(db, alert_id)
    labelled = [s for s in samples(db, row) if s.get("label") is not None]
    dataset = _dataset_of(db, row)
    if dataset_only:
        settings = _train_settings(db, row, dataset)
        if epochs is not None:
            settings["epochs"] = epochs
        run_id, job_id = new_run(db, dataset=dataset["name"], **settings)
        return {"alert_id": alert_id, "dataset": dataset["name"], "parent_dataset": dataset["name"],
                "added_rows": 0, "run_id": run_id, "job_id": job_id}
    if not labelled:
        raise AlertError(f"alert {alert_id} has no labelled samples: label some with `pocketops alerts label "
                         f"{alert_id} --sample K --label L`, or retrain on dataset {dataset['name']!r} alone with "
                         f"`pocketops alerts retrain {alert_id} --dataset-only`")
    settings = _train_settings(db, row, dataset)
    if epochs is not None:
        settings["epochs"] = epochs
    with transaction(db):
        fresh = new_version(db, db_path, row, labelled)
        run_id, job_id = new_run(db, dataset=fresh["name"], **settings)
    return {"alert_id": alert_id, "dataset": fresh["name"], "parent_dataset": dataset["name"],
            "added_rows": len(labelled), "run_id": run_id, "job_id": job_id}


def previews(db, alert_id: int, detail_data: dict | None = None) -> list[dict]:
    """The quarantined inputs drawn like the Datasets preview: ``{"label", "image"|"text"|"features", ...}``.

    ``seen`` reads ``seen P conf``, ``label`` the user's label (or "none yet"); images come scaled to [0, 1].
    """
    import numpy as np

    row = _alert(db, alert_id)
    data = detail_data or detail(db, alert_id)
    ev = data["evidence"]
    dataset = _dataset_of(db, row, required=False) or {}
    meta = dataset.get("meta") or {}
    shape = [int(d) for d in dataset.get("input_shape") or []]
    out = []
    for s in ev["samples"]:
        seen = _class(ev["classes"], s.get("pred"))
        conf = f" {s['confidence']:.2f}" if isinstance(s.get("confidence"), (int, float)) else ""
        item: dict = {"index": s["index"], "seq": s["seq"], "seen": f"seen {seen}{conf}",
                      "label": s.get("label") or "none yet", "image": None, "text": None, "features": None}
        value = s.get("input")
        try:
            if meta.get("type") == "text" or isinstance(value, str):
                item["text"] = value if isinstance(value, str) else json.dumps(value)
            elif meta.get("type") == "image" or (shape and len(shape) >= 2):
                arr = np.asarray(value, dtype=np.float64).reshape(shape[-2:] if shape else (8, 8))
                item["image"] = np.clip(arr * float(meta.get("scale", 1.0)), 0.0, 1.0)
            else:
                names = meta.get("features") or [f"x{i}" for i in range(len(np.ravel(value)))]
                item["features"] = {n: float(v) for n, v in zip(names, np.ravel(np.asarray(value, dtype=np.float64)))}
        except (ValueError, TypeError):
            item["text"] = str(value)[:200]
        out.append(item)
    return out


def _class(classes: list, index) -> str:
    return str(classes[index]) if isinstance(index, int) and 0 <= index < len(classes) else "?"
