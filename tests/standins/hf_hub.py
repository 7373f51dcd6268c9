"""A loopback stand-in for the Hugging Face Hub API routes that ``huggingface_hub.HfApi`` calls.

Routes (huggingface_hub 2.4.0, read from hf_api.py / _commit_api.py): repos/create, space info,
validate-yaml, preupload, commit (NDJSON), paths-info, resolve (raw file), commits, tree,
runtime, pause, restart. Every file is answered as upload mode "regular" at preupload, which is
the Hub's own choice to make: the real client then sends contents base64 inside the commit and
never takes the LFS/Xet path, so no Xet setting is needed in tests.

State is in memory: ``repos[repo_id]`` holds the sdk, the commit list (each with the full file
map) and the runtime ``stage``; tests set ``stage`` directly ("BUILDING" -> "RUNNING" ->
"SLEEPING") and make a route fail with ``fail["commit"] = 500``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

from tests.standins import JsonHandler, StandIn


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    id: str
    title: str
    message: str
    date: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    sdk: str
    private: bool = False
    stage: str = "NO_APP_FILE"
    hardware: str = "cpu-basic"
    commits: list[Commit] = field(default_factory=list)     # newest last
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def head(self) -> Commit | None:
        return self.commits[-1] if self.commits else None

    def files_at(self, revision: str) -> dict[str, bytes] | None:
        if revision in ("main", "HEAD"):
            return dict(self.head.files) if self.head else {}
        for commit in self.commits:
            if commit.id == revision or (len(revision) >= 7 and commit.id.startswith(revision)):
                return dict(commit.files)
        return None


ROUTE = re.compile(r"^/api/(?P<kind>spaces|models|datasets)/(?P<repo>[^/]+/[^/]+)(?:/(?P<action>[a-z-]+)(?:/(?P<rest>.*))?)?$")
RESOLVE = re.compile(r"^/spaces/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class HubHandler(JsonHandler):
    def _auth(self) -> bool:
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if token in self.standin.tokens:
            return True
        self.send(401, {"error": "Invalid credentials in Authorization header"},
                  headers={"X-Error-Message": "Invalid credentials in Authorization header"})
        return False

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.standin.repos.get(repo_id)
        if repo is None:
            self.send(404, {"error": "Repository not found"},
                      headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
        return repo

    def do_GET(self):
        path, query = self.split()
        self.standin.requests.append(("GET", path))
        if not self._auth():
            return
        with self.standin.lock:
            if path == "/api/whoami-v2":
                self.send(200, {"type": "user", "name": self.standin.user, "auth": {"type": "access_token"}})
                return
            if m := RESOLVE.match(path):
                repo = self._repo(m["repo"])
                if repo is None:
                    return
                files = repo.files_at(unquote(m["rev"])) or {}
                name = unquote(m["file"])
                if name not in files:
                    self.send(404, {"error": "Entry not found"}, headers={"X-Error-Code": "EntryNotFound"})
                    return
                self.send(200, raw=files[name], content_type="application/octet-stream")
                return
            m = ROUTE.match(path)
            if not m:
                self.send(404, {"error": f"no route {path}"})
                return
            repo = self._repo(m["repo"])
            if repo is None:
                return
            action, rest = m["action"], unquote(m["rest"] or "")
            if action is None or action == "revision":
                head = repo.head
                files = repo.files_at(rest or "main") or {}
                self.send(200, {"id": repo.repo_id, "sha": head.id if head else None, "sdk": repo.sdk,
                                "private": repo.private,
                                "siblings": [{"rfilename": name} for name in sorted(files)],
                                "runtime": self.standin.runtime(repo)})
            elif action == "runtime":
                if not self.failing("runtime"):
                    self.send(200, self.standin.runtime(repo))
            elif action == "commits":
                files = repo.files_at(rest or "main")
                if files is None:
                    self.send(404, {"error": "Revision not found"}, headers={"X-Error-Code": "RevisionNotFound"})
                    return
                self.send(200, [{"id": c.id, "authors": [{"user": "tester"}], "date": c.date,
                                 "title": c.title, "message": c.message} for c in reversed(repo.commits)])
            elif action == "tree":
                revision, _, prefix = rest.partition("/")
                files = repo.files_at(revision)
                if files is None:
                    self.send(404, {"error": "Revision not found"}, headers={"X-Error-Code": "RevisionNotFound"})
                    return
                self.send(200, [{"type": "file", "path": name, "size": len(data), "oid": git_blob_oid(data)}
                                for name, data in sorted(files.items()) if name.startswith(prefix)])
            else:
                self.send(404, {"error": f"no route {path}"})

    def do_POST(self):
        path, query = self.split()
        body = self.body()
        self.standin.requests.append(("POST", path))
        if not self._auth():
            return
        with self.standin.lock:
            if path == "/api/repos/create":
                self._create(json.loads(body))
                return
            if path == "/api/validate-yaml":
                self.send(200, {"errors": [], "warnings": []})
                return
            m = ROUTE.match(path)
            if not m:
                self.send(404, {"error": f"no route {path}"})
                return
            repo = self._repo(m["repo"])
            if repo is None:
                return
            action, rest = m["action"], unquote(m["rest"] or "")
            if action == "preupload":
                current = repo.files_at(rest) or {}
                files = json.loads(body)["files"]
                self.send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                           "oid": git_blob_oid(current[f["path"]]) if f["path"] in current else None}
                                          for f in files]})
            elif action == "commit":
                if not self.failing("commit"):
                    self._commit(repo, body)
            elif action == "paths-info":
                form = parse_qs(body.decode())
                files = repo.files_at(rest)
                if files is None:
                    self.send(404, {"error": "Revision not found"}, headers={"X-Error-Code": "RevisionNotFound"})
                    return
                self.send(200, [{"type": "file", "path": p, "size": len(files[p]), "oid": git_blob_oid(files[p])}
                                for p in form.get("paths", []) if p in files])
            elif action == "secrets":
                secret = json.loads(body)
                repo.secrets[secret["key"]] = secret["value"]
                self.send(200, {})
            elif action == "pause":
                repo.stage = "PAUSED"
                self.send(200, self.standin.runtime(repo))
            elif action == "restart":
                repo.stage = "BUILDING"
                self.send(200, self.standin.runtime(repo))
            else:
                self.send(404, {"error": f"no route {path}"})

    def _create(self, payload: dict) -> None:
        if self.failing("create"):
            return
        repo_id = f"{payload.get('organization') or self.standin.user}/{payload['name']}"
        url = f"{self.standin.url}/spaces/{repo_id}"
        if payload.get("type") != "space":
            self.send(400, {"error": "this stand-in only hosts Spaces"})
            return
        if repo_id in self.standin.repos:
            self.send(409, {"error": "You already created this space repo", "url": url})
            return
        if payload.get("sdk") in self.standin.paid_sdks and not self.standin.paid_plan:
            self.send(402, {"error": f"{payload['sdk']} Spaces need a paid plan (PRO)"})
            return
        self.standin.repos[repo_id] = Repo(repo_id, payload["sdk"], payload.get("visibility") == "private")
        self.send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _commit(self, repo: Repo, body: bytes) -> None:
        files = dict(repo.head.files) if repo.head else {}
        header: dict = {}
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {k: v for k, v in files.items() if not k.startswith(prefix)}
            else:
                self.send(400, {"error": f"stand-in does not take {key} (every upload is 'regular')"})
                return
        digest = hashlib.sha1(repr((repo.head.id if repo.head else "", sorted(files.items()))).encode())
        digest.update(str(len(repo.commits)).encode())
        commit = Commit(digest.hexdigest(), header.get("summary", ""), header.get("description", ""),
                        time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), files)
        repo.commits.append(commit)
        repo.stage = self.standin.stage_after_commit
        self.send(200, {"success": True, "commitOid": commit.id,
                        "commitUrl": f"{self.standin.url}/spaces/{repo.repo_id}/commit/{commit.id}"})


class HubStandIn(StandIn):
    """The Hub at ``.url``: pass it as ``HfApi(endpoint=...)`` with one of ``.tokens``."""

    handler_class = HubHandler

    def __init__(self, *, user: str = "tester", token: str = "hf_test_token") -> None:
        super().__init__()
        self.user = user
        self.tokens = {token}
        self.repos: dict[str, Repo] = {}
        self.paid_sdks = {"docker", "gradio", "streamlit"}
        self.paid_plan = True
        self.stage_after_commit = "BUILDING"   # what the Space does after a push

    def runtime(self, repo: Repo) -> dict:
        return {"stage": repo.stage, "hardware": {"current": repo.hardware, "requested": repo.hardware},
                "gcTimeout": 172800, "storage": None}

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id].files_at(revision) or {}
