"""Ray clusters as the user sees them: add, list, check, remove. No ray import (the phone has none).

A cluster is a name, the address of its Ray dashboard (the Jobs API) and, optionally, the
environment variable that holds its token; the token itself never reaches the store.
"""
from __future__ import annotations

import re
import sqlite3
from urllib.parse import urlparse

from core.errors import ConfigError
from core.rayjobs import ClusterError, RayJobs, ray_token
from store import clusters as store_clusters

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def add(db, name: str, address: str, token_env: str | None = None, shared_dir: str | None = None) -> dict:
    """Register a cluster after checking the name, address and variable name (nothing is contacted)."""
    if not _NAME.match(name or ""):
        raise ConfigError(f"cluster name {name!r}: expected letters, digits, '.', '_' or '-' (up to 64), e.g. lab")
    parsed = urlparse(address or "")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"--address {address!r}: expected the Ray dashboard's URL, e.g. http://head:8265")
    if token_env is not None and not _ENV.match(token_env):
        raise ConfigError(f"--token-env {token_env!r}: expected an environment variable name, e.g. RAY_AUTH_TOKEN "
                          "(the variable's name, never the token itself)")
    try:
        store_clusters.add(db, name=name, address=address.rstrip("/"), token_env=token_env, shared_dir=shared_dir)
    except sqlite3.IntegrityError:
        raise ConfigError(f"a cluster named {name!r} exists already; `pocketops cluster remove {name}` first") from None
    return get(db, name)


def get(db, name: str) -> dict:
    """The cluster row ``name``; a one-line ConfigError listing the known ones otherwise."""
    row = store_clusters.get(db, name)
    if row is None:
        known = ", ".join(c["name"] for c in store_clusters.list_all(db)) or "none yet"
        raise ConfigError(f"no cluster named {name!r} (known: {known}); add it with "
                          f"`pocketops cluster add {name} --address http://HEAD:8265`")
    return row


def client(db_or_row, name: str | None = None, *, timeout: float | None = None) -> RayJobs:
    """A Jobs API client for a cluster row (or ``name`` in ``db``), its token read from the environment now."""
    row = get(db_or_row, name) if name is not None else db_or_row
    token, source = ray_token(row.get("token_env"))
    kw = {"timeout": timeout} if timeout else {}
    return RayJobs(row["name"], row["address"], token, source, **kw)


def check(db, name: str) -> dict:
    """Contact the cluster: reachable, Ray version, resources, whether the token is accepted."""
    row = get(db, name)
    api = client(row)
    version = api.version()  # raises ClusterError: unreachable, 401/403, too old
    api.list_jobs()  # the Jobs API itself, with the same token
    return {"name": row["name"], "address": row["address"], "reachable": True, "ray_version": version,
            "auth": "token" if api._token else "none", "token_from": api.token_source if api._token else None,
            "resources": api.resources(), "shared_dir": row.get("shared_dir")}


def list_with_status(db, *, timeout: float = 3.0) -> list[dict]:
    """Every cluster with ``reachable`` and ``ray_version`` (None when it could not be asked) and why not."""
    out = []
    for row in store_clusters.list_all(db):
        entry = {"name": row["name"], "address": row["address"], "reachable": False, "ray_version": None}
        try:
            entry["ray_version"] = client(row, timeout=timeout).version()
            entry["reachable"] = True
        except ClusterError as exc:
            entry["error"] = str(exc)
        out.append(entry)
    return out


def remove(db, name: str) -> None:
    """Forget a cluster (its remote jobs' history stays)."""
    get(db, name)
    store_clusters.remove(db, name)
