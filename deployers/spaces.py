"""Hugging Face Spaces: a static page (free) or the bundle's server in a Docker Space (paid plan).

Both push one commit per release with the real ``huggingface_hub`` client; status comes from
``get_space_runtime``; rollback is a commit that copies the previous release's files back
(``CommitOperationCopy(src_revision=<previous commit>)`` plus deletes), since the Hub has no
revert; stop pauses the Space. Files go up as on any Space: tracked/binary ones through
git LFS, with Xet pinned off (see ``_hub``). The token is huggingface_hub's own (``hf auth login`` or
``HF_TOKEN``): we never store, log or print it.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from core.optional import require
from deployers import pricing
from deployers.base import Bundle, DeployError, Plan, Release
from deployers.cloud_common import TEMPLATES, copy_bundle, listing, pinned_requirements, probe_health

LOGIN_HINT = "run `hf auth login` (or set HF_TOKEN) with a write token"
PAID_PLAN = "Docker Spaces need a paid plan (PRO for personal accounts)"

# get_space_runtime().stage -> our status. Anything unknown counts as deploying.
STAGES = {
    "RUNNING": "running",
    "SLEEPING": "sleeping",
    "BUILDING": "deploying",
    "APP_STARTING": "deploying",
    "RUNNING_BUILDING": "running",      # the previous build keeps serving while the new one builds
    "RUNNING_APP_STARTING": "running",
    "NO_APP_FILE": "failed",
    "CONFIG_ERROR": "failed",
    "BUILD_ERROR": "failed",
    "RUNTIME_ERROR": "failed",
    "PAUSED": "stopped",
    "STOPPED": "stopped",
    "DELETING": "stopped",
}


def map_stage(stage: str | None) -> str:
    """A Space runtime stage as one of our release statuses (the raw stage is kept in meta)."""
    stage = (stage or "").upper()
    if stage in STAGES:
        return STAGES[stage]
    return "failed" if stage.endswith("_ERROR") else "deploying"


# The static Space's README; its front matter goes through huggingface_hub's SpaceCardData.
STATIC_README = """---
title: __TITLE__
emoji: 📱
colorFrom: indigo
colorTo: green
sdk: static
app_file: index.html
pinned: false
---

# __TITLE__

Runs model `__VERSION__` in your browser with onnxruntime-web.
"""


class _SpaceDeployer:
    target = ""
    sdk = ""
    default_name = "pocketops"

    def __init__(self, *, endpoint: str | None = None, token: str | None = None, poll_s: float = 2.0):
        self.endpoint = endpoint
        self._token = token          # injected by tests; otherwise huggingface_hub resolves its own
        self.poll_s = poll_s

    # -- the client ----------------------------------------------------------------------
    def _hub(self):
        hub = require("huggingface_hub", f"Deploying to Hugging Face ({self.target})")
        constants = require("huggingface_hub.constants", f"Deploying to Hugging Face ({self.target})")
        # Pin uploads to git LFS, the documented HF_HUB_DISABLE_XET switch (read per call by
        # huggingface_hub's is_xet_available, so setting it here works after import too). With
        # hf_xet installed, 2.4.0 sends every LFS file (a Space's .gitattributes makes *.onnx one)
        # through hf_xet's Rust CAS client, and upload_folder through a multi-commit pipeline; no
        # loopback test can serve that protocol, so that path would first run on a user's real
        # deploy. The Hub keeps taking LFS batch uploads for Xet-backed repos, and our bundles
        # are small (KB to a few MB), where Xet's chunk de-duplication gains nothing.
        # tests/test_spaces.py checks the .onnx arrives through the LFS batch API intact.
        constants.HF_HUB_DISABLE_XET = True
        if constants.HF_HUB_DISABLE_PROGRESS_BARS is None:
            # LFS uploads draw tqdm bars on stderr: noise on a phone's screen and in worker.log.
            # A user's own HF_HUB_DISABLE_PROGRESS_BARS=0 still wins.
            require("huggingface_hub.utils", f"Deploying to Hugging Face ({self.target})").disable_progress_bars()
        return hub

    def _api(self):
        hub = self._hub()
        token = self._token or hub.get_token()
        if not token:
            raise DeployError(f"no Hugging Face token found: {LOGIN_HINT}")
        return hub.HfApi(endpoint=self.endpoint, token=token)

    def _call(self, what: str, fn, *args, missing_ok: bool = False, **kwargs):
        """Run one Hub call; a failure becomes a one-line DeployError (never showing the token).

        ``missing_ok`` answers None when the revision or repo is gone instead of raising.
        """
        errors = require("huggingface_hub.errors", f"Deploying to Hugging Face ({self.target})")
        try:
            return fn(*args, **kwargs)
        except (errors.RevisionNotFoundError, errors.RepositoryNotFoundError):
            if missing_ok:
                return None
            raise DeployError(f"{what}: not found on the Hub (deleted, renamed, or the token cannot see it)") from None
        except errors.HfHubHTTPError as exc:
            code = exc.response.status_code if exc.response is not None else None
            if code == 401:
                raise DeployError(f"{what}: Hugging Face rejected the token; {LOGIN_HINT}") from None
            if code == 402:
                raise DeployError(f"{what}: {PAID_PLAN}; upgrade at https://huggingface.co/subscribe/pro "
                                  "or deploy with --target spaces-static (free)") from None
            if code == 403:
                raise DeployError(f"{what}: the token may not write to this namespace; use a write token "
                                  "or another --repo-id") from None
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DeployError(f"{what} failed (HTTP {code}): {first}") from None
        except errors.HTTPError as exc:   # httpx transport errors: no connection, timeout
            raise DeployError(f"{what}: could not reach the Hub ({type(exc).__name__}: {exc}); "
                              "check the network and retry") from None

    def _repo_id(self, api, options: dict) -> str:
        repo_id = options.get("repo_id") or options.get("space_id") or self.default_name
        if "/" not in repo_id:
            user = self._call("who am I", api.whoami)["name"]
            repo_id = f"{user}/{repo_id}"
        return repo_id

    def _urls(self, api, repo_id: str) -> tuple[str, str | None]:
        """The Space's page on the Hub, and its app's host as ``space_info`` reports it (None if unknown)."""
        base = (self.endpoint or api.endpoint or "https://huggingface.co").rstrip("/")
        try:
            # The Hub names the host (owner-name.hf.space, .static.hf.space, hashed for long names).
            host = self._call(f"read the host of {repo_id}", api.space_info, repo_id).host
        except DeployError:
            host = None   # the release itself stands; only its app address is unknown for now
        return f"{base}/spaces/{repo_id}", host

    def _write_readme(self, bundle: Bundle, template: str, out_dir: Path, **fields) -> None:
        """README.md from ``template``: front matter through ``SpaceCardData`` (YAML-quoted), placeholders filled."""
        hub = self._hub_or_none()
        if hub is None:
            return   # an offline plan; deploy requires huggingface_hub and writes it then
        card = hub.SpaceCard(template)
        title = _title(bundle)
        card.data.title = title
        for key, value in fields.items():
            setattr(card.data, key, value)
        card.text = card.text.replace("__TITLE__", title).replace("__VERSION__", bundle.version)
        (out_dir / "README.md").write_text(str(card), "utf-8")

    # -- what each flavour uploads ---------------------------------------------------------
    def stage_files(self, bundle: Bundle, options: dict, out_dir: Path) -> None:
        raise NotImplementedError

    def _requirements(self, options: dict) -> list[str]:
        return [f"a Hugging Face account and write token ({LOGIN_HINT.removeprefix('run ')})"]

    def _estimate(self, options: dict) -> pricing.Estimate:
        return pricing.static_monthly()

    # -- the protocol --------------------------------------------------------------------
    def plan(self, bundle: Bundle, options: dict) -> Plan:
        with tempfile.TemporaryDirectory(prefix="pocketops-plan-") as tmp:
            self.stage_files(bundle, options, Path(tmp))
            files = listing(Path(tmp))
        estimate = self._estimate(options)
        repo = options.get("repo_id") or options.get("space_id") or f"<your user>/{self.default_name}"
        notes = [f"Space: {repo} (sdk: {self.sdk})", f"cost: {estimate.assumptions}"
                 + (", plus the paid plan itself (not included)" if self.sdk == "docker" else "")]
        hub = self._hub_or_none()
        if hub is not None:
            notes.append("token: found" if (self._token or hub.get_token()) else f"token: none found; {LOGIN_HINT}")
        else:
            notes.append("huggingface_hub not installed: README.md is written at deploy, which needs it")
        return Plan(self.target, files, estimate.monthly_usd, self._requirements(options), notes)

    def _hub_or_none(self):
        from core.optional import available

        return self._hub() if available("huggingface_hub") else None

    def deploy(self, bundle: Bundle, options: dict, previous: dict | None) -> Release:
        api = self._api()
        repo_id = self._repo_id(api, options)
        create = {"repo_type": "space", "space_sdk": self.sdk, "exist_ok": True}
        if options.get("private") is not None:
            create["private"] = bool(options["private"])
        if self.sdk == "docker" and options.get("hardware"):
            create["space_hardware"] = options["hardware"]
        self._call(f"create Space {repo_id}", api.create_repo, repo_id, **create)
        if self.sdk == "docker" and options.get("api_key"):
            # Kept by the Hub as a Space secret; never written to our database or logs.
            self._call(f"set the API key secret on {repo_id}", api.add_space_secret, repo_id,
                       "POCKETOPS_API_KEY", options["api_key"])
        with tempfile.TemporaryDirectory(prefix="pocketops-space-") as tmp:
            self.stage_files(bundle, options, Path(tmp))
            files = listing(Path(tmp))
            # delete_patterns="*" drops files of older releases that this one no longer has.
            commit = self._call(f"upload to Space {repo_id}", api.upload_folder, repo_id=repo_id,
                                repo_type="space", folder_path=tmp, delete_patterns="*",
                                commit_message=f"pocketops {bundle.version}")
        pushed = time.perf_counter()
        meta = {"repo_id": repo_id, "commit": commit.oid, "sdk": self.sdk, "bundle_version": bundle.version,
                "files": [f["path"] for f in files]}
        try:
            return self._settle(api, repo_id, meta, float(options.get("wait_s", 0) or 0), pushed)
        except DeployError as exc:
            # The commit landed, so this release is what the Space builds now: not a failed deploy.
            page, app = self._urls(api, repo_id)
            return Release("deploying", self._public_url(page, app, "deploying"), {**meta, "stage": None, "status_error": str(exc),
                                                                       "space_url": page, "app_url": app})

    def _settle(self, api, repo_id: str, meta: dict, wait_s: float, pushed: float) -> Release:
        """Read the runtime, waiting up to ``wait_s`` for the build to finish; RUNNING gives a cold start."""
        deadline = pushed + wait_s
        while True:
            runtime = self._call(f"read the status of {repo_id}", api.get_space_runtime, repo_id)
            status = map_stage(runtime.stage)
            if status != "deploying" or time.perf_counter() >= deadline:
                break
            time.sleep(self.poll_s)
        page, app = self._urls(api, repo_id)
        meta = {**meta, "stage": runtime.stage, "hardware": runtime.hardware, "space_url": page, "app_url": app}
        cold = round((time.perf_counter() - pushed) * 1000, 1) if wait_s and status == "running" else None
        health = None
        if status == "running" and app and self.sdk == "docker":
            health, meta["health"] = probe_health(app)
        return Release(status, self._public_url(page, app, status), meta, health_latency_ms=health, cold_start_ms=cold)

    def _public_url(self, page: str, app: str | None, status: str) -> str:
        """Where users go: a running Docker Space's API host, else the Space page.

        The page embeds a static Space's app, shows a Docker build's progress and wakes a sleeping Space.
        """
        return app if (app and self.sdk == "docker" and status == "running") else page

    def status(self, deployment: dict) -> Release:
        meta = dict(deployment.get("meta") or {})
        repo_id = meta.get("repo_id")
        if not repo_id:
            raise DeployError(f"deployment {deployment.get('id')}: no repo_id recorded; deploy again")
        api = self._api()
        return self._settle(api, repo_id, meta, 0.0, time.perf_counter())

    def rollback(self, current: dict, previous: dict, previous_bundle: Bundle) -> Release:
        hub = self._hub()
        api = self._api()
        cur_meta, prev_meta = current.get("meta") or {}, previous.get("meta") or {}
        repo_id = cur_meta.get("repo_id") or prev_meta.get("repo_id")
        if not repo_id:
            raise DeployError(f"deployment {current.get('id')}: no repo_id recorded; deploy the previous version again")
        version = prev_meta.get("bundle_version") or previous_bundle.version
        sha = self._find_commit(api, repo_id, prev_meta.get("commit"), version)
        old = None
        if sha:
            # None when history was squashed: then the previous bundle is uploaded again instead.
            found = self._call(f"list the files of {repo_id} at {sha[:8]}", api.list_repo_files, repo_id,
                               repo_type="space", revision=sha, missing_ok=True)
            old = set(found) if found is not None else None
        if old is None:
            # The previous release's recorded (secret-free) options, e.g. vendor_ort, hardware.
            options = {**(prev_meta.get("options") or {}), "repo_id": repo_id}
            release = self.deploy(previous_bundle, options, current)
            release.meta["restored_by"] = "re-upload"
            return release
        now = set(self._call(f"list the files of {repo_id}", api.list_repo_files, repo_id, repo_type="space"))
        ops = [hub.CommitOperationCopy(src_path_in_repo=p, path_in_repo=p, src_revision=sha) for p in sorted(old)]
        ops += [hub.CommitOperationDelete(path_in_repo=p) for p in sorted(now - old) if p != ".gitattributes"]
        commit = self._call(f"roll back Space {repo_id}", api.create_commit, repo_id, ops, repo_type="space",
                            commit_message=f"pocketops rollback to {version} ({sha[:8]})")
        # Only our own keys: the previous row's meta also holds the store's bookkeeping (superseded_by...).
        meta = {"repo_id": repo_id, "commit": commit.oid, "restored_commit": sha, "restored_by": "copy",
                "sdk": self.sdk, "bundle_version": prev_meta.get("bundle_version") or previous_bundle.version,
                "files": sorted(old)}
        return self._settle(api, repo_id, meta, 0.0, time.perf_counter())

    def _find_commit(self, api, repo_id: str, recorded: str | None, version: str) -> str | None:
        """The previous release's commit if it is still in the Space's history (by sha, else by our title)."""
        commits = self._call(f"list the commits of {repo_id}", api.list_repo_commits, repo_id,
                             repo_type="space", missing_ok=True) or []
        if recorded:
            return recorded if any(c.commit_id == recorded for c in commits) else None
        # Newest first: the last push of that bundle version (rows from before commits were recorded).
        return next((c.commit_id for c in commits if c.title == f"pocketops {version}"), None)

    def stop(self, deployment: dict) -> Release:
        meta = dict(deployment.get("meta") or {})
        repo_id = meta.get("repo_id")
        if not repo_id:
            raise DeployError(f"deployment {deployment.get('id')}: no repo_id recorded; nothing to stop")
        api = self._api()
        runtime = self._call(f"pause Space {repo_id}", api.pause_space, repo_id)
        page, app = self._urls(api, repo_id)
        meta.update(stage=runtime.stage, space_url=page, app_url=app)
        status = map_stage(runtime.stage)
        return Release(status, self._public_url(page, app, status), meta)


class StaticSpaceDeployer(_SpaceDeployer):
    """A static Space: the page from ``deployers.static`` runs the model in the visitor's browser."""

    target = "spaces-static"
    sdk = "static"
    default_name = "pocketops-demo"

    def stage_files(self, bundle: Bundle, options: dict, out_dir: Path) -> None:
        """The static page (deployers.static) and the Space's README into ``out_dir``."""
        from deployers.static import build_static_site

        vendor = options.get("vendor_ort")
        build_static_site(bundle, out_dir, vendor_ort=Path(vendor) if vendor else None)
        if not (out_dir / "README.md").exists():
            self._write_readme(bundle, STATIC_README, out_dir)

    def _requirements(self, options: dict) -> list[str]:
        return super()._requirements(options) + ["static Spaces are free for everyone"]


class DockerSpaceDeployer(_SpaceDeployer):
    """A Docker Space: the bundle's own HTTP server on port 7860, as UID 1000."""

    target = "spaces-docker"
    sdk = "docker"
    default_name = "pocketops-api"

    def stage_files(self, bundle: Bundle, options: dict, out_dir: Path) -> None:
        """The bundle, the Dockerfile, pinned requirements and the Space's README into ``out_dir``."""
        copy_bundle(bundle, out_dir)
        template = TEMPLATES / "docker"
        (out_dir / "Dockerfile").write_bytes((template / "Dockerfile").read_bytes())
        runtime = _runtime_of(bundle)
        (out_dir / "requirements.txt").write_text(pinned_requirements(template / "requirements.txt", runtime.name),
                                                  "utf-8")
        self._write_readme(bundle, (template / "README.md").read_text("utf-8"), out_dir,
                           short_description=f"pocketops model API ({runtime.name})")

    def _requirements(self, options: dict) -> list[str]:
        return [PAID_PLAN] + super()._requirements(options)

    def _estimate(self, options: dict) -> pricing.Estimate:
        return pricing.spaces_monthly(options.get("hardware") or "cpu-basic")


def _runtime_of(bundle: Bundle):
    """The runtime (core.runtimes) that serves the bundle's model file."""
    from core.runtimes import runtime_of

    return runtime_of(bundle.model_json.get("model_file", "model.onnx"))


def _title(bundle: Bundle) -> str:
    # Short and on one line (it is also the page's heading); SpaceCardData quotes it for YAML.
    parts = [bundle.model_json.get(k) for k in ("dataset", "variant")]
    name = " ".join(["pocketops", *(p for p in parts if isinstance(p, str) and p)])
    return " ".join(name.split())[:40].strip() or "pocketops model"
