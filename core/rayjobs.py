"""A client of Ray's Jobs REST API over urllib: the calls ``ray.job_submission.JobSubmissionClient``
makes (``ray/dashboard/modules/job/sdk.py``), without importing ray, which has no Android wheel.

Every failure is a :class:`ClusterError`: one line naming the cluster, what happened and what
to do. The token travels only in the ``Authorization`` header; it is never logged or stored.
"""
from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

from core.errors import PocketopsError

# The Jobs REST API with submission ids and /api/packages settled in Ray 2.9; token auth
# (Authorization: Bearer) arrived in 2.52.
MIN_RAY = (2, 9)
MIN_RAY_TOKEN = (2, 52)
CONNECT_TIMEOUT_S = 4.0
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class ClusterError(PocketopsError):
    """A cluster that cannot be reached, refuses us, is too old, or rejected a job."""

    def __init__(self, message: str, *, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable  # no answer at all: worth retrying when the network is back


def parse_version(text: str) -> tuple[int, ...]:
    """``"2.60.0"`` → ``(2, 60, 0)``; non-numeric parts (``rc1``, ``dev0``) end the tuple."""
    import re

    out: list[int] = []
    for part in str(text).split("."):
        lead = re.match(r"\d+", part)
        if lead is None:
            break
        out.append(int(lead.group()))
        if lead.group() != part:
            break
    return tuple(out)


def ray_token(token_env: str | None = None) -> tuple[str | None, str]:
    """(token, where it came from) the way Ray looks: ``$token_env`` if the cluster names one,
    else ``$RAY_AUTH_TOKEN``, the file in ``$RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``
    (Ray's default, ``ray/_private/authentication/authentication_token_setup.py``)."""
    if token_env:
        value = os.environ.get(token_env, "").strip()
        return (value or None), f"${token_env}"
    value = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if value:
        return value, "$RAY_AUTH_TOKEN"
    path_env = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    path = Path(path_env).expanduser() if path_env else Path.home() / ".ray" / "auth_token"
    where = "$RAY_AUTH_TOKEN_PATH" if path_env else "~/.ray/auth_token"
    try:
        value = path.read_text().strip()
    except OSError:
        return None, where
    return (value or None), where


class RayJobs:
    """The Jobs API of one cluster (``name`` is only for messages)."""

    def __init__(self, name: str, address: str, token: str | None = None, token_source: str = "",
                 timeout: float = CONNECT_TIMEOUT_S):
        self.name, self.address = name, address.rstrip("/")
        self._token, self.token_source, self.timeout = token, token_source, timeout

    def __repr__(self) -> str:  # never the token
        return f"RayJobs({self.name!r}, {self.address!r})"

    # -- plumbing ----------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, body: bytes | None = None, content_type: str | None = None,
                 ok=(200,), timeout: float | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.address + path, data=body, method=method)
        if self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
            if status in ok:
                return status, data
            raise self._http_error(method, path, status, data) from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClusterError(f"cluster {self.name!r} at {self.address} is unreachable ({reason}); "
                               f"check the address and that the Ray head runs (`pocketops cluster check {self.name}`)",
                               unreachable=True) from None

    def _http_error(self, method: str, path: str, status: int, data: bytes) -> ClusterError:
        text = data.decode("utf-8", "replace").strip().replace("\n", " ")[:300]
        if status == 401:
            return ClusterError(f"cluster {self.name!r} wants a token and none was found in {self.token_source or 'the environment'}; "
                                f"set it (see `ray get-auth-token` on the head) and retry")
        if status == 403:
            return ClusterError(f"cluster {self.name!r} rejected the token from {self.token_source or 'the environment'} "
                                "(wrong token); copy the head's `ray get-auth-token` into it")
        if status == 404 and path == "/api/version":
            return ClusterError(f"cluster {self.name!r} at {self.address} has no Jobs API (/api/version: 404); "
                                "it needs Ray ≥ 2.9 with the dashboard (ray[default])")
        return ClusterError(f"cluster {self.name!r}: {method} {path} answered {status}: {text or 'no reason given'}")

    def _json(self, method: str, path: str, payload: dict | None = None, **kw):
        body = json.dumps(payload).encode() if payload is not None else None
        status, data = self._request(method, path, body=body, content_type="application/json" if body else None, **kw)
        if status != 200:  # an accepted non-200 (404: no such job) has a text body, not JSON
            return status, None
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            raise ClusterError(f"cluster {self.name!r}: {path} did not answer JSON ({data[:80]!r}); is {self.address} a Ray dashboard?") from None

    # -- the API ------------------------------------------------------------------------------
    def version(self) -> str:
        """The cluster's Ray version, checked against what we need (one-line error if too old)."""
        _, info = self._json("GET", "/api/version")
        found = (info or {}).get("ray_version") if isinstance(info, dict) else None
        if not found:
            raise ClusterError(f"cluster {self.name!r}: /api/version has no ray_version; is {self.address} a Ray dashboard?")
        need = MIN_RAY_TOKEN if self._token else MIN_RAY
        if parse_version(found) < need:
            why = "token auth" if self._token else "the Jobs API"
            raise ClusterError(f"cluster {self.name!r} runs Ray {found}; pocketops needs Ray ≥ {'.'.join(map(str, need))} "
                               f"for {why}; upgrade the cluster's ray[default]")
        return found

    def resources(self) -> dict:
        """Total resources of the cluster's nodes (CPU, memory, GPU), summed; {} if not exposed."""
        status, data = self._json("GET", "/nodes?view=summary", ok=(200, 404))
        total: dict[str, float] = {}
        if status != 200 or not isinstance(data, dict):
            return total
        for node in ((data.get("data") or {}).get("summary") or []):
            if (node.get("raylet") or {}).get("state", "ALIVE") != "ALIVE":
                continue
            for key, value in ((node.get("raylet") or {}).get("resourcesTotal") or {}).items():
                if key in ("CPU", "GPU", "memory", "objectStoreMemory") and isinstance(value, (int, float)):
                    total[key] = total.get(key, 0) + value
        return total

    def list_jobs(self) -> list[dict]:
        """Every job the cluster knows (proves the token is accepted by the Jobs API)."""
        return self._json("GET", "/api/jobs/")[1] or []

    def package_exists(self, name: str) -> bool:
        """True if ``gcs://name`` was uploaded already."""
        status, _ = self._request("GET", f"/api/packages/gcs/{name}", ok=(200, 404))
        return status == 200

    def upload_package(self, name: str, data: bytes) -> str:
        """Upload a zip as ``gcs://name`` (unless there); its URI for ``runtime_env.working_dir``."""
        if not self.package_exists(name):
            self._request("PUT", f"/api/packages/gcs/{name}", body=data, timeout=max(self.timeout, 60))
        return f"gcs://{name}"

    def submit(self, submission_id: str, entrypoint: str, runtime_env: dict, metadata: dict | None = None,
               entrypoint_num_cpus: float | None = None) -> str:
        """Submit a job under our own ``submission_id`` (so a retry cannot start it twice)."""
        payload = {"entrypoint": entrypoint, "submission_id": submission_id, "runtime_env": runtime_env,
                   "metadata": metadata or {}}
        if entrypoint_num_cpus is not None:
            payload["entrypoint_num_cpus"] = entrypoint_num_cpus
        try:
            _, data = self._json("POST", "/api/jobs/", payload, timeout=max(self.timeout, 30))
        except ClusterError as exc:
            raise ClusterError(f"cluster {self.name!r} rejected the job: {exc}".replace(f"cluster {self.name!r}: ", "")) from None
        return (data or {}).get("submission_id") or submission_id

    def info(self, submission_id: str) -> dict | None:
        """The job's details (``status``, ``message``, ...), or None if the cluster has no such job."""
        status, data = self._json("GET", f"/api/jobs/{submission_id}", ok=(200, 404))
        return data if status == 200 else None

    def logs(self, submission_id: str) -> str:
        """The job's whole log so far."""
        return (self._json("GET", f"/api/jobs/{submission_id}/logs")[1] or {}).get("logs") or ""

    def stop(self, submission_id: str) -> bool:
        """Ask the cluster to stop the job; True if it was running."""
        status, data = self._json("POST", f"/api/jobs/{submission_id}/stop", ok=(200, 404))
        return bool(status == 200 and (data or {}).get("stopped"))
