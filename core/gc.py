"""Retention: remove old runs' checkpoints and variants (files and their rows).

``plan`` says what would go and what is kept and why; ``apply`` deletes the rows in one
transaction (checking again under the write lock that nothing became protected meanwhile) and
unlinks the files only after it committed, so a crash in between leaves unreferenced files,
never a row that names a missing file.

Never removed: anything of a run still queued or running, with a queued or running job (an
export reading its checkpoint), or among the ``keep_last`` newest; a variant any deployment (a
rollback may need it) or queued deploy job refers to; a run's best checkpoint that a kept
variant was built from or whose run has a deployment; variants registered from elsewhere
(``models add``), datasets and metric points.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigError
from store import retention
from store.db import Database, now, transaction

DAY_S = 86_400.0


@dataclass
class Item:
    """One file (or bundle directory) to remove, with the row that names it."""

    kind: str  # checkpoint | variant | bundle
    run_id: int | None
    path: str
    size_bytes: int  # on disk now (0 when the file is already gone)
    row_id: int  # artifacts.id (checkpoint, bundle) or variants.id (variant)

    def as_dict(self) -> dict:
        """The item as JSON-ready fields (``row_id`` as ``id``)."""
        return {"kind": self.kind, "run_id": self.run_id, "path": self.path, "size_bytes": self.size_bytes,
                "id": self.row_id}


@dataclass
class Plan:
    """What ``pocketops gc`` would remove and what it keeps, with the reason for each kept file."""
    keep_last: int | None
    older_than_days: float | None
    runs: list[int] = field(default_factory=list)  # the runs whose files go
    items: list[Item] = field(default_factory=list)
    kept: list[dict] = field(default_factory=list)  # {"kind", "run_id", "path", "why"}
    # run -> (its checkpoint_path that goes, what it becomes: the kept best.pt or None)
    checkpoint_paths: dict[int, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        """Bytes the plan would free."""
        return sum(i.size_bytes for i in self.items)

    def counts(self) -> dict[str, int]:
        """How many checkpoints, variants and bundles the plan removes."""
        found = {"checkpoint": 0, "variant": 0, "bundle": 0}
        for item in self.items:
            found[item.kind] += 1
        return found

    def as_dict(self) -> dict:
        """The plan as JSON-ready fields (``--json`` output)."""
        return {"keep_last": self.keep_last, "older_than_days": self.older_than_days, "runs": self.runs,
                "files": len(self.items), "bytes": self.bytes, "counts": self.counts(),
                "items": [i.as_dict() for i in self.items], "kept": self.kept}


def _size(path: str) -> int:
    p = Path(path)
    try:
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return p.stat().st_size
    except OSError:
        return 0


def _old_runs(db: Database, keep_last: int | None, older_than_days: float | None, at: float) -> list[int]:
    runs = retention.runs_by_age(db)
    cutoff = None if older_than_days is None else at - older_than_days * DAY_S
    busy = retention.busy_run_ids(db)
    chosen = []
    for index, run in enumerate(runs):  # newest first
        if run["status"] not in retention.FINISHED or run["id"] in busy:
            continue
        if keep_last is not None and index < keep_last:
            continue
        if cutoff is not None and run["ended_at"] >= cutoff:
            continue
        chosen.append(run["id"])
    return chosen


def plan(db: Database, *, keep_last: int | None = None, older_than_days: float | None = None,
         at: float | None = None) -> Plan:
    """What ``apply`` would remove; reads only. At least one of the two limits must be given."""
    if keep_last is None and older_than_days is None:
        raise ConfigError("gc: say which runs are old: --keep-last N (keep the N newest runs) "
                          "and/or --older-than DAYS")
    if keep_last is not None and keep_last < 0:
        raise ConfigError(f"gc: --keep-last must be 0 or more, not {keep_last}")
    if older_than_days is not None and older_than_days < 0:
        raise ConfigError(f"gc: --older-than must be 0 or more days, not {older_than_days:g}")
    at = now() if at is None else at
    out = Plan(keep_last=keep_last, older_than_days=older_than_days)
    run_ids = _old_runs(db, keep_last, older_than_days, at)
    if not run_ids:
        return out
    deployed = retention.deployed_variant_ids(db) | retention.variants_in_active_jobs(db)
    run_rows = {r["id"]: r for r in retention.runs_by_age(db)}
    removed_variants: list[dict] = []
    kept_variant_runs: set[int] = set()
    for v in retention.variants(db, run_ids):
        if v["id"] in deployed:
            out.kept.append({"kind": "variant", "run_id": v["run_id"], "path": v["path"],
                             "why": f"variant {v['id']} is used by a deployment or a queued job"})
            kept_variant_runs.add(v["run_id"])
        else:
            removed_variants.append(v)
            out.items.append(Item("variant", v["run_id"], v["path"], _size(v["path"]), v["id"]))
    removed_ids = {v["id"] for v in removed_variants}
    # Checkpoints that a surviving variant names (ours are removed only if their variant goes too).
    sources = retention.checkpoints_in_use(db) - {v["meta"].get("checkpoint") for v in removed_variants}
    for b in retention.bundles(db, sorted(removed_ids)):
        out.items.append(Item("bundle", b["run_id"], b["path"], _size(b["path"]), b["id"]))
    by_run: dict[int, list[dict]] = {}
    for c in retention.checkpoints(db, run_ids):
        by_run.setdefault(c["run_id"], []).append(c)
    for run_id in run_ids:
        ckpts = by_run.get(run_id, [])
        keep_best = run_id in kept_variant_runs
        kept_path = None
        for c in ckpts:
            is_best = Path(c["path"]).name == "best.pt"
            if c["path"] in sources or (is_best and keep_best):
                out.kept.append({"kind": "checkpoint", "run_id": run_id, "path": c["path"],
                                 "why": "a kept variant or a deployment was built from it"})
                kept_path = c["path"] if kept_path is None or is_best else kept_path
            else:
                out.items.append(Item("checkpoint", run_id, c["path"], _size(c["path"]), c["id"]))
        recorded = run_rows.get(run_id, {}).get("checkpoint_path")
        if recorded and any(i.kind == "checkpoint" and i.path == recorded for i in out.items):
            out.checkpoint_paths[run_id] = (recorded, kept_path)  # the run row must not name a file that goes
    out.runs = sorted({i.run_id for i in out.items if i.run_id is not None}, reverse=True)
    return out


def apply(db: Database, chosen: Plan) -> Plan:
    """Remove what ``chosen`` lists, minus anything that became protected since; returns what went.

    Rows go in one transaction; files are unlinked after it committed, and only those no row
    names any more.
    """
    with transaction(db):
        # Under the write lock: a deployment made since the plan protects its variant now.
        fresh = plan(db, keep_last=chosen.keep_last, older_than_days=chosen.older_than_days)
        allowed = {(i.kind, i.row_id) for i in fresh.items}
        items = [i for i in chosen.items if (i.kind, i.row_id) in allowed]
        variant_items = [i for i in items if i.kind == "variant"]
        retention.delete_rows(db, artifact_ids=[i.row_id for i in items if i.kind != "variant"],
                              variant_ids=[i.row_id for i in variant_items],
                              variant_paths=[i.path for i in variant_items])
        removed = {i.path for i in items}
        for run_id, (recorded, path) in fresh.checkpoint_paths.items():
            if recorded in removed:
                retention.set_checkpoint_path(db, run_id, path)
        to_unlink = [i for i in items if not retention.path_referenced(db, i.path)]
    for item in to_unlink:
        _remove(item.path)
    done = Plan(keep_last=chosen.keep_last, older_than_days=chosen.older_than_days, items=items,
                kept=fresh.kept, checkpoint_paths={r: v for r, v in fresh.checkpoint_paths.items() if v[0] in removed})
    done.runs = sorted({i.run_id for i in items if i.run_id is not None}, reverse=True)
    return done


def _remove(path: str) -> None:
    p = Path(path)
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            os.unlink(p)
    except FileNotFoundError:
        pass  # already gone (e.g. the demo's variants have no files): the row went, which is the point
