"""A loopback stand-in for the Hugging Face Hub API routes that ``huggingface_hub.HfApi`` calls.

Routes (huggingface_hub 2.4.0, read from hf_api.py / _commit_api.py / lfs.py): repos/create,
space info, validate-yaml, preupload, commit (NDJSON), paths-info, resolve (raw file), commits,
tree, runtime, pause, restart, and git LFS: the batch API
(``POST /spaces/{repo}.git/info/lfs/objects/batch``), the presigned-URL ``PUT`` of an object
(no Authorization, like S3) and ``.../objects/verify``.

Upload modes are the Hub's: a new repo starts with the Hub's system commit holding the default
``.gitattributes``; preupload answers ``"lfs"`` for a path those attributes track (``*.onnx``,
``*.npz``, ...), for a binary sample (a NUL byte) or a file of 10 MiB or more, else ``"regular"``.
A commit that sends such a file inline ("file") is refused, as the Hub refuses binary files
outside LFS, and an ``lfsFile`` whose object never arrived is refused too. The Xet path is not
served: ``deployers.spaces`` pins huggingface_hub to LFS (see ``_hub`` there).

Space info carries the Hub's ``subdomain`` and ``host`` fields (on the Hub
``https://<subdomain>.hf.space``, ``https://<subdomain>.static.hf.space`` for a static Space).
Here a Space's host is this server itself under ``/_host/<subdomain>``, so the app stays on
loopback: ``GET <host>/health`` answers 200 while the stage is RUNNING and 503 otherwise,
without a token like a public Space. A test can set ``repos[repo_id].host`` to anything.

State is in memory: ``repos[repo_id]`` holds the sdk, the commit list (each with the full file
map) and the runtime ``stage``; tests set ``stage`` directly ("BUILDING" -> "RUNNING" ->
"SLEEPING") and make a route fail with ``fail["commit"] = 500``.
"""
from __future__ import annotations

import base64
import fnmatch
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
    lfs: set[str] = field(default_factory=set)    # paths stored as LFS objects (pointer in git)


@dataclass
class Repo:
    repo_id: str
    sdk: str
    private: bool = False
    stage: str = "NO_APP_FILE"
    hardware: str = "cpu-basic"
    commits: list[Commit] = field(default_factory=list)     # newest last
    secrets: dict[str, str] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)   # sha256 hex -> content (the LFS store)
    host: str | None = None     # what space info answers as ``host``; set when the Space is created

    @property
    def subdomain(self) -> str:
        # The Hub's shape for short names: owner-name, lower case, "_" and "." as "-".
        return self.repo_id.replace("/", "-").replace("_", "-").replace(".", "-").lower()

    @property
    def head(self) -> Commit | None:
        return self.commits[-1] if self.commits else None

    def commit_at(self, revision: str) -> Commit | None:
        if revision in ("main", "HEAD"):
            return self.head
        for commit in self.commits:
            if commit.id == revision or (len(revision) >= 7 and commit.id.startswith(revision)):
                return commit
        return None

    def files_at(self, revision: str) -> dict[str, bytes] | None:
        commit = self.commit_at(revision)
        if commit is None:
            return {} if revision in ("main", "HEAD") else None
        return dict(commit.files)

    def lfs_at(self, revision: str) -> set[str]:
        commit = self.commit_at(revision)
        return set(commit.lfs) if commit else set()

    def entry(self, revision: str, name: str) -> dict:
        """A tree / paths-info entry: an LFS file's oid is its pointer's blob id, plus an ``lfs`` block."""
        data = self.files_at(revision)[name]
        if name not in self.lfs_at(revision):
            return {"type": "file", "path": name, "size": len(data), "oid": git_blob_oid(data)}
        pointer = lfs_pointer(data)
        return {"type": "file", "path": name, "size": len(data), "oid": git_blob_oid(pointer),
                "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}}

    def upload_mode(self, revision: str, path: str, size: int, sample: bytes) -> str:
        """What the Hub's preupload answers: "lfs" when tracked, binary or large, else "regular"."""
        attributes = (self.files_at(revision) or {}).get(".gitattributes", b"").decode("utf-8", "replace")
        return "lfs" if (size >= LARGE_FILE or b"\0" in sample or lfs_tracked(attributes, path)) else "regular"


# The .gitattributes the Hub writes in a new repo's first (system) commit, as of 2025.
DEFAULT_GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
    "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*"))
LARGE_FILE = 10 * 1024 * 1024    # the Hub sends files from 10 MiB up through LFS whatever their name


def lfs_tracked(attributes: str, path: str) -> bool:
    """Whether a ``.gitattributes`` text puts ``path`` under ``filter=lfs`` (last matching line wins)."""
    tracked = False
    for line in attributes.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0].startswith("#"):
            continue
        pattern = parts[0]
        # A pattern without a slash matches the base name at any depth (gitignore rules).
        subject = path if "/" in pattern.rstrip("/") else path.rsplit("/", 1)[-1]
        if fnmatch.fnmatchcase(subject, pattern.replace("**/", "*")):
            if "filter=lfs" in parts[1:]:
                tracked = True
            elif "-filter" in parts[1:] or "!filter" in parts[1:]:
                tracked = False
    return tracked


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


ROUTE = re.compile(r"^/api/(?P<kind>spaces|models|datasets)/(?P<repo>[^/]+/[^/]+)(?:/(?P<action>[a-z-]+)(?:/(?P<rest>.*))?)?$")
RESOLVE = re.compile(r"^/spaces/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
LFS = re.compile(r"^/spaces/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/(?P<action>batch|verify)$")
LFS_PUT = re.compile(r"^/lfs-storage/(?P<repo>[^/]+/[^/]+)/(?P<oid>[0-9a-f]{64})$")
APP_HEALTH = re.compile(r"^/_host/(?P<sub>[^/]+)/health$")


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
        if m := APP_HEALTH.match(path):    # the Space's own app: public, no token
            with self.standin.lock:
                repo = next((r for r in self.standin.repos.values() if r.host and r.host.endswith(f"/_host/{m['sub']}")), None)
                running = repo is not None and repo.stage.startswith("RUNNING")
            self.send(200 if running else 503, {"status": "ok" if running else "not running"})
            return
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
                                "private": repo.private, "subdomain": repo.subdomain, "host": repo.host,
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
                self.send(200, [repo.entry(revision, name) for name in sorted(files) if name.startswith(prefix)])
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
            if m := LFS.match(path):
                repo = self._repo(m["repo"])
                if repo is not None:
                    (self._lfs_batch if m["action"] == "batch" else self._lfs_verify)(repo, json.loads(body))
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
                current, stored_lfs = repo.files_at(rest) or {}, repo.lfs_at(rest)
                answers = []
                for f in json.loads(body)["files"]:
                    mode = repo.upload_mode(rest, f["path"], int(f["size"]), base64.b64decode(f.get("sample") or ""))
                    data = current.get(f["path"])
                    # The client compares this oid with its own: sha256 for LFS, git blob id for regular.
                    oid = None if data is None else (
                        hashlib.sha256(data).hexdigest() if f["path"] in stored_lfs else git_blob_oid(data))
                    answers.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
                self.standin.upload_modes.update({a["path"]: a["uploadMode"] for a in answers})
                self.send(200, {"files": answers})
            elif action == "commit":
                if not self.failing("commit"):
                    self._commit(repo, body)
            elif action == "paths-info":
                form = parse_qs(body.decode())
                files = repo.files_at(rest)
                if files is None:
                    self.send(404, {"error": "Revision not found"}, headers={"X-Error-Code": "RevisionNotFound"})
                    return
                self.send(200, [repo.entry(rest, p) for p in form.get("paths", []) if p in files])
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
        repo = self.standin.repos[repo_id] = Repo(repo_id, payload["sdk"], payload.get("visibility") == "private")
        repo.host = f"{self.standin.url}/_host/{repo.subdomain}"
        # A new repo on the Hub already has one system commit: the default .gitattributes.
        self._record(repo, "initial commit", "", {".gitattributes": DEFAULT_GITATTRIBUTES.encode()}, set())
        repo.stage = "NO_APP_FILE"
        self.send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _commit(self, repo: Repo, body: bytes) -> None:
        files = dict(repo.head.files) if repo.head else {}
        lfs = set(repo.head.lfs) if repo.head else set()
        header: dict = {}
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                data = base64.b64decode(value["content"])
                if data and repo.upload_mode("main", value["path"], len(data), data[:512]) == "lfs":
                    # The Hub refuses binary, large or LFS-tracked files sent inline in a commit
                    # (empty ones excepted: huggingface_hub sends those inline on purpose).
                    self.send(400, {"error": f"{value['path']}: Your push was rejected because it contains binary "
                                             "files. Please use https://huggingface.co/docs/hub/xet to store them."})
                    return
                files[value["path"]] = data
                lfs.discard(value["path"])
            elif key == "lfsFile":
                data = repo.lfs_objects.get(value["oid"])
                if data is None or ("size" in value and int(value["size"]) != len(data)):
                    self.send(422, {"error": f"{value['path']}: LFS object {value['oid']} was never uploaded"})
                    return
                files[value["path"]] = data
                lfs.add(value["path"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
                lfs.discard(value["path"])
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {k: v for k, v in files.items() if not k.startswith(prefix)}
                lfs = {k for k in lfs if not k.startswith(prefix)}
            else:
                self.send(400, {"error": f"stand-in does not take {key}"})
                return
        self._record(repo, header.get("summary", ""), header.get("description", ""), files, lfs)
        self.send(200, {"success": True, "commitOid": repo.head.id,
                        "commitUrl": f"{self.standin.url}/spaces/{repo.repo_id}/commit/{repo.head.id}"})

    def _record(self, repo: Repo, title: str, message: str, files: dict[str, bytes], lfs: set[str]) -> None:
        digest = hashlib.sha1(repr((repo.head.id if repo.head else "", sorted(files.items()))).encode())
        digest.update(str(len(repo.commits)).encode())
        commit = Commit(digest.hexdigest(), title, message,
                        time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), files, lfs & set(files))
        repo.commits.append(commit)
        repo.stage = self.standin.stage_after_commit

    def _lfs_batch(self, repo: Repo, payload: dict) -> None:
        """The git LFS batch API: an upload action (presigned PUT) and a verify action per new object."""
        if payload.get("operation") != "upload" or "basic" not in (payload.get("transfers") or ["basic"]):
            self.send(422, {"message": "this stand-in takes basic LFS uploads only"})
            return
        verify = f"{self.standin.url}/spaces/{repo.repo_id}.git/info/lfs/objects/verify"
        objects = []
        for obj in payload.get("objects") or []:
            answer = {"oid": obj["oid"], "size": int(obj["size"]), "authenticated": True}
            if obj["oid"] not in repo.lfs_objects:   # an object already stored needs no upload
                answer["actions"] = {"upload": {"href": f"{self.standin.url}/lfs-storage/{repo.repo_id}/{obj['oid']}"},
                                     "verify": {"href": verify}}
            objects.append(answer)
        self.standin.lfs_batches.append([o["oid"] for o in payload.get("objects") or []])
        self.send(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _lfs_verify(self, repo: Repo, payload: dict) -> None:
        data = repo.lfs_objects.get(payload.get("oid", ""))
        if data is None or len(data) != int(payload.get("size", -1)):
            self.send(404, {"message": f"LFS object {payload.get('oid')} not found"})
            return
        self.send(200, {})

    def do_PUT(self):
        """A presigned storage URL: no Authorization header, the sha256 in the path is checked."""
        path, _ = self.split()
        body = self.body()
        self.standin.requests.append(("PUT", path))
        with self.standin.lock:
            m = LFS_PUT.match(path)
            repo = self.standin.repos.get(m["repo"]) if m else None
            if repo is None:
                self.send(404, {"error": f"no route {path}"})
                return
            if hashlib.sha256(body).hexdigest() != m["oid"]:
                self.send(400, {"error": "content does not match the sha256 in the URL"})
                return
            repo.lfs_objects[m["oid"]] = body
            self.standin.lfs_puts.append((m["repo"], m["oid"], len(body)))
            self.send(200, raw=b"", content_type="text/plain")


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
        self.upload_modes: dict[str, str] = {}                  # path -> the last preupload answer for it
        self.lfs_batches: list[list[str]] = []                  # oids asked about, per batch call
        self.lfs_puts: list[tuple[str, str, int]] = []          # (repo, sha256, size) of each object stored

    def runtime(self, repo: Repo) -> dict:
        return {"stage": repo.stage, "hardware": {"current": repo.hardware, "requested": repo.hardware},
                "gcTimeout": 172800, "storage": None}

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id].files_at(revision) or {}
