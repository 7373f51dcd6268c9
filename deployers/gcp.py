"""Google Cloud: the bundle as a Cloud Run function (2nd gen), with the real google-cloud clients.

Deploy: build a deterministic source zip (bundle + ``templates/gcp/main.py`` + requirements),
``generate_upload_url`` -> HTTP PUT the zip -> ``create_function`` or ``update_function`` -> wait
for the long-running operation. Status is ``get_function``. Rollback pins the Cloud Run
service's traffic to the previous release's revision (``run_v2``), or redeploys the previous
bundle when that revision is gone. Stop deletes the function (nothing left to bill).

Credentials are Google's Application Default Credentials (``gcloud auth application-default
login``); we never store, log or print them.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from core.optional import require
from deployers import pricing
from deployers.base import Bundle, DeployError, Plan, Release
from deployers.cloud_common import TEMPLATES, pinned_requirements, probe_health

LOGIN_HINT = "run `gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS)"
RUNTIME = "python312"
ENTRY_POINT = "handle"
DEFAULT_REGION = "us-central1"
DEFAULT_FUNCTION = "pocketops-predict"
DEFAULT_MEMORY = "512Mi"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)     # fixed timestamps: the same bundle always gives the same zip
FUNCTION_NAME = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_RAISE = object()
OWN_META = ("project", "region", "function_name", "function", "service", "uri", "storage_source",
            "source_sha256", "bundle_version")
STATES = {"ACTIVE": "running", "DEPLOYING": "deploying", "FAILED": "failed", "DELETING": "stopped",
          "UNKNOWN": "failed", "STATE_UNSPECIFIED": "deploying"}


# -- the source zip ---------------------------------------------------------------------------
def _safe_member(name: str) -> str:
    """Refuse names that would land outside the extraction directory (zip-slip)."""
    path = PurePosixPath(name)
    if not name or "\\" in name or path.is_absolute() or ".." in path.parts or name.startswith("/"):
        raise DeployError(f"refusing unsafe path {name!r} in the function source (absolute or '..')")
    return path.as_posix()


def source_files(bundle: Bundle) -> dict[str, bytes]:
    """What goes in the zip: the bundle's files, then ``main.py`` and ``requirements.txt``."""
    root = Path(bundle.path).resolve()
    from deployers.targets import refusal

    why = refusal("gcp", bundle.model_json.get("model_file", "model.onnx"), f"bundle {bundle.version}")
    if why:  # the plan and the deploy both stage these files first: refused before any network call
        raise DeployError(why)
    files: dict[str, bytes] = {}
    for rel, _size in bundle.files():
        path = root / rel
        if path.is_symlink() or not path.resolve().is_relative_to(root):
            raise DeployError(f"{path}: a symlink or a path outside the bundle; rebuild the bundle")
        files[_safe_member(rel)] = path.read_bytes()
    if "main.py" in files:
        raise DeployError(f"{root}: the bundle already has a main.py, which the function's own would replace")
    files["main.py"] = (TEMPLATES / "gcp" / "main.py").read_bytes()
    files["requirements.txt"] = pinned_requirements(TEMPLATES / "gcp" / "requirements.txt").encode("utf-8")
    return files


def build_source_zip(bundle: Bundle) -> bytes:
    """The function's source as a zip: sorted entries, fixed timestamps and modes (deterministic)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(source_files(bundle).items()):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buffer.getvalue()


def safe_extract(data: bytes, dest: Path) -> list[str]:
    """Extract a source zip into ``dest``, refusing any member that would escape it."""
    dest = Path(dest).resolve()
    names = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            name = _safe_member(info.filename)
            target = (dest / name).resolve()
            if not target.is_relative_to(dest):
                raise DeployError(f"refusing unsafe path {info.filename!r} in the function source")
            if info.is_dir():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
            names.append(name)
    return names


# -- the deployer -----------------------------------------------------------------------------
class CloudRunFunctionDeployer:
    """Target "gcp": a Cloud Run function (2nd gen) running the bundle's predictor."""

    target = "gcp"

    def __init__(self, *, api_endpoint: str | None = None, project: str | None = None, region: str | None = None,
                 credentials=None, transport: str = "rest", poll_s: float = 2.0, timeout_s: float = 900.0,
                 run_api_endpoint: str | None = None):
        self.api_endpoint = api_endpoint
        self.run_api_endpoint = run_api_endpoint or api_endpoint
        self.project = project
        self.region = region
        self._credentials = credentials     # tests pass AnonymousCredentials(); otherwise ADC
        self.transport = transport
        self.poll_s = poll_s
        self.timeout_s = timeout_s

    # -- clients and names -------------------------------------------------------------------
    def _auth(self) -> tuple[object, str | None]:
        if self._credentials is not None:
            return self._credentials, self.project
        google_auth = require("google.auth", "Deploying to Google Cloud")
        exceptions = require("google.auth.exceptions", "Deploying to Google Cloud")
        try:
            credentials, project = google_auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        except exceptions.DefaultCredentialsError as exc:
            pointed = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
            if pointed:  # the variable is set, so its file is what is wrong: say which and why
                first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                raise DeployError(f"GOOGLE_APPLICATION_CREDENTIALS={pointed} is not usable ({first}); "
                                  f"fix or unset it, or {LOGIN_HINT.removeprefix('run ')}") from None
            raise DeployError(f"no Google credentials found: {LOGIN_HINT}") from None
        return credentials, self.project or project

    def _client_kwargs(self, endpoint: str | None) -> dict:
        credentials, _ = self._auth()
        kwargs = {"transport": self.transport, "credentials": credentials}
        if endpoint:
            kwargs["client_options"] = {"api_endpoint": endpoint}
        return kwargs

    def _functions(self):
        functions_v2 = require("google.cloud.functions_v2", "Deploying to Google Cloud")
        return functions_v2, functions_v2.FunctionServiceClient(**self._client_kwargs(self.api_endpoint))

    def _services(self):
        run_v2 = require("google.cloud.run_v2", "Rolling back on Google Cloud")
        return run_v2, run_v2.ServicesClient(**self._client_kwargs(self.run_api_endpoint))

    def _where(self, options: dict) -> tuple[str, str, str]:
        _, adc_project = self._auth()
        project = options.get("project") or self.project or adc_project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        if not project:
            raise DeployError("no Google Cloud project: pass --project, or run `gcloud config set project ID` "
                              "and `gcloud auth application-default login`")
        region = options.get("region") or self.region or DEFAULT_REGION
        name = options.get("function_name") or DEFAULT_FUNCTION
        if not FUNCTION_NAME.match(name):
            raise DeployError(f"function name {name!r} is invalid: use lowercase letters, digits and '-', "
                              "starting with a letter, at most 63 characters")
        return project, region, name

    def _call(self, what: str, fn, *args, not_found=_RAISE, **kwargs):
        """One API call; errors become a one-line DeployError saying what to do.

        ``not_found`` is answered instead of raising when the resource does not exist.
        """
        exceptions = require("google.api_core.exceptions", "Deploying to Google Cloud")
        auth_exceptions = require("google.auth.exceptions", "Deploying to Google Cloud")
        try:
            return fn(*args, **kwargs)
        except auth_exceptions.GoogleAuthError as exc:
            # e.g. RefreshError "Reauthentication is needed" after a 401: the ADC login expired.
            raise DeployError(f"{what}: Google rejected the credentials ({type(exc).__name__}); {LOGIN_HINT}") from None
        except exceptions.NotFound:
            if not_found is not _RAISE:
                return not_found
            raise DeployError(f"{what}: not found (deleted, or another project/region?)") from None
        except (exceptions.Unauthenticated, exceptions.Unauthorized):  # gRPC code / HTTP 401
            raise DeployError(f"{what}: Google rejected the credentials; {LOGIN_HINT}") from None
        except (exceptions.PermissionDenied, exceptions.Forbidden) as exc:  # gRPC code / HTTP 403
            raise DeployError(f"{what}: permission denied ({exc.message}); the account needs the Cloud Functions "
                              "Developer role and the Cloud Functions/Run/Build APIs enabled") from None
        except exceptions.GoogleAPICallError as exc:
            code = getattr(exc, "code", None)
            raise DeployError(f"{what} failed ({code}): {str(exc.message).splitlines()[0] if exc.message else exc}") from None
        except exceptions.RetryError as exc:
            raise DeployError(f"{what}: gave up waiting ({exc}); check `pocketops deployments status` later") from None

    def _wait(self, what: str, operation):
        polling = require("google.api_core.future.polling", "Deploying to Google Cloud")
        wait = polling.DEFAULT_POLLING.with_delay(initial=self.poll_s, maximum=max(self.poll_s, 20.0))
        return self._call(what, operation.result, timeout=self.timeout_s,
                          polling=wait.with_timeout(self.timeout_s))

    # -- the protocol ------------------------------------------------------------------------
    def plan(self, bundle: Bundle, options: dict) -> Plan:
        """Files of the source zip, the monthly estimate at the assumed traffic and what the deploy needs."""
        files = [{"path": name, "size_bytes": len(data)} for name, data in sorted(source_files(bundle).items())]
        latency = float(options.get("latency_ms") or bundle.model_json.get("latency_ms") or 100.0)
        traffic = pricing.Traffic(requests_per_month=float(options.get("requests_per_month") or 10_000),
                                  latency_ms=latency, memory_gib=0.5)
        estimate = pricing.cloud_run_monthly(traffic)
        zipped = len(build_source_zip(bundle))
        project = options.get("project") or self.project or "<ADC project>"
        region = options.get("region") or self.region or DEFAULT_REGION
        name = options.get("function_name") or DEFAULT_FUNCTION
        return Plan(
            self.target, files, estimate.monthly_usd,
            requirements=[f"Google Application Default Credentials ({LOGIN_HINT.removeprefix('run ')})",
                          "a Google Cloud project with billing and the Cloud Functions, Cloud Run, Cloud Build "
                          "and Artifact Registry APIs enabled"],
            notes=[f"function {name} in {project}/{region}, runtime {RUNTIME}, {DEFAULT_MEMORY}",
                   "public: anyone may call it" if options.get("public") else
                   "private: callers need `Authorization: Bearer $(gcloud auth print-identity-token)` "
                   "(deploy with --public for a public demo)",
                   f"source zip {zipped} bytes",
                   f"cost assumes {estimate.assumptions}; free tier: "
                   f"{pricing.free_tier_requests(traffic):,.0f} requests/month at this latency",
                   "budgets on Google Cloud only alert; they do not cap spend"])

    def deploy(self, bundle: Bundle, options: dict, previous: dict | None) -> Release:
        """Upload the source zip and create or update the function; waits for the operation."""
        project, region, name = self._where(options)
        functions_v2, client = self._functions()
        parent = f"projects/{project}/locations/{region}"
        full_name = f"{parent}/functions/{name}"
        data = build_source_zip(bundle)
        upload = self._call("get an upload URL", client.generate_upload_url, request={"parent": parent})
        self._put(upload.upload_url, data)
        env = {"POCKETOPS_BUNDLE_VERSION": bundle.version}
        key = options.get("api_key")
        if not key and options.get("api_key_set"):
            # A redeploy of a keyed release (rollback): we never kept the key, the function did.
            key = self._existing_key(client, full_name)
        if key:
            env["POCKETOPS_API_KEY"] = key   # kept by Google in the function config, not by us
        function = functions_v2.Function(
            name=full_name,
            description=f"pocketops {bundle.version}",
            environment=functions_v2.Environment.GEN_2,
            build_config=functions_v2.BuildConfig(
                runtime=RUNTIME, entry_point=ENTRY_POINT,
                source=functions_v2.Source(storage_source=upload.storage_source)),
            service_config=functions_v2.ServiceConfig(
                available_memory=options.get("memory") or DEFAULT_MEMORY,
                max_instance_count=int(options.get("max_instances") or 3), min_instance_count=0,
                environment_variables=env, all_traffic_on_latest_revision=True),
            labels={"managed-by": "pocketops"},
        )
        exists = self._exists(client, full_name)
        started = time.perf_counter()
        if exists:
            operation = self._call(f"update function {name}", client.update_function, function=function)
        else:
            operation = self._call(f"create function {name}", client.create_function, parent=parent,
                                   function=function, function_id=name)
        result = self._wait(f"build and deploy function {name}", operation)
        deploy_ms = round((time.perf_counter() - started) * 1000, 1)
        meta = {"project": project, "region": region, "function_name": name, "function": full_name,
                "storage_source": {"bucket": upload.storage_source.bucket, "object": upload.storage_source.object_,
                                   "generation": int(upload.storage_source.generation or 0)},
                "source_sha256": hashlib.sha256(data).hexdigest(), "bundle_version": bundle.version,
                "deploy_ms": deploy_ms, "operation": "update" if exists else "create"}
        release = self._release(result, meta)
        if release.status == "running" and options.get("public") and release.meta.get("service"):
            self._allow_all_users(release.meta["service"])
            release.meta["public"] = True
        if release.status == "running" and release.url:
            release.health_latency_ms, release.meta["health"] = probe_health(release.url)
            release.cold_start_ms = release.health_latency_ms   # first request to a fresh revision
        return release

    def _existing_key(self, client, full_name: str) -> str:
        function = self._call("read the function", client.get_function, name=full_name, not_found=None)
        key = function.service_config.environment_variables.get("POCKETOPS_API_KEY") if function else None
        if not key:
            raise DeployError("this release was deployed with an API key, which pocketops does not store and the "
                              "function no longer has; deploy the variant again with --api-key")
        return key

    def _allow_all_users(self, service_name: str) -> None:
        """Let anyone invoke the function (a public demo); without it Cloud Run asks for an identity token."""
        _, services = self._services()
        policy = self._call("read who may invoke the function", services.get_iam_policy,
                            request={"resource": service_name})
        binding = next((b for b in policy.bindings if b.role == "roles/run.invoker"), None)
        if binding is None:
            binding = policy.bindings.add(role="roles/run.invoker")
        if "allUsers" not in binding.members:
            binding.members.append("allUsers")
            self._call("allow public invocations", services.set_iam_policy,
                       request={"resource": service_name, "policy": policy})

    def _put(self, url: str, data: bytes) -> None:
        request = urllib.request.Request(url, data=data, method="PUT", headers={"Content-Type": "application/zip"})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise DeployError(f"uploading the function source failed (HTTP {exc.code}); retry the deploy") from None
        except (urllib.error.URLError, OSError) as exc:
            raise DeployError(f"uploading the function source failed ({getattr(exc, 'reason', exc)}); "
                              "check the network and retry") from None

    def _exists(self, client, full_name: str) -> bool:
        return self._call("read the function", client.get_function, name=full_name, not_found=None) is not None

    def _release(self, function, meta: dict) -> Release:
        state = function.state.name if function.state is not None else "STATE_UNSPECIFIED"
        status = STATES.get(state, "failed")
        service = function.service_config
        meta = {**meta, "state": state, "service": service.service or None,
                "revision": service.revision or None, "uri": service.uri or None}
        problems = [m.message for m in function.state_messages if m.message]
        if problems:
            meta["state_messages"] = problems[:3]
        return Release(status, function.url or service.uri or None, meta)

    def status(self, deployment: dict) -> Release:
        """The function's state (and, after a rollback, which revision serves); stopped if it is gone."""
        meta = dict(deployment.get("meta") or {})
        full_name = meta.get("function")
        if not full_name:
            raise DeployError(f"deployment {deployment.get('id')}: no function recorded; deploy again")
        _, client = self._functions()
        function = self._call(f"read function {meta.get('function_name')}", client.get_function,
                              name=full_name, not_found=None)
        if function is None:
            return Release("stopped", deployment.get("url"), {**meta, "state": "NOT_FOUND"})
        release = self._release(function, meta)
        if meta.get("traffic_pinned"):
            # After a rollback, the function reports its newest revision; the service says who serves.
            release.meta["revision"] = meta.get("revision")
            release.meta["serving"] = self._serving(meta)
        return release

    def _serving(self, meta: dict) -> list[dict]:
        _, services = self._services()
        service = self._call("read the Cloud Run service", services.get_service, name=meta["service"])
        return [{"revision": t.revision or "latest", "percent": t.percent} for t in service.traffic]

    def rollback(self, current: dict, previous: dict, previous_bundle: Bundle) -> Release:
        """Shift all traffic back to the previous revision, or redeploy the previous bundle if it is gone."""
        cur, prev = current.get("meta") or {}, previous.get("meta") or {}
        service_name, revision = cur.get("service") or prev.get("service"), prev.get("revision")
        if service_name and revision and self._revision_exists(service_name, revision):
            run_v2, services = self._services()
            service = self._call("read the Cloud Run service", services.get_service, name=service_name)
            service.traffic = [run_v2.TrafficTarget(
                type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                revision=revision, percent=100)]
            operation = self._call(f"shift traffic to {revision}", services.update_service, service=service)
            updated = self._wait(f"shift traffic to {revision}", operation)
            # Only our own keys: the previous row's meta also holds the store's bookkeeping (superseded_by...).
            meta = {k: prev[k] for k in OWN_META if k in prev}
            meta.update(revision=revision, traffic_pinned=True, restored_by="traffic",
                        rolled_back_revision=cur.get("revision"), state="ACTIVE")
            url = current.get("url") or previous.get("url") or (updated.uri or None)
            release = Release("running", url, meta)
            if url:
                release.health_latency_ms, release.meta["health"] = probe_health(url)
            return release
        # The previous release's recorded (secret-free) options, pinned to the same function.
        options = {**(prev.get("options") or {}),
                   **{k: prev.get(k) for k in ("project", "region", "function_name") if prev.get(k)}}
        release = self.deploy(previous_bundle, options, current)
        release.meta["restored_by"] = "redeploy"
        return release

    def _revision_exists(self, service_name: str, revision: str) -> bool:
        run_v2 = require("google.cloud.run_v2", "Rolling back on Google Cloud")
        client = run_v2.RevisionsClient(**self._client_kwargs(self.run_api_endpoint))
        found = self._call(f"read revision {revision}", client.get_revision,
                           name=f"{service_name}/revisions/{revision}", not_found=None)
        return found is not None

    def stop(self, deployment: dict) -> Release:
        """Delete the function (a later deploy creates it again)."""
        meta = dict(deployment.get("meta") or {})
        full_name = meta.get("function")
        if not full_name:
            raise DeployError(f"deployment {deployment.get('id')}: no function recorded; nothing to stop")
        _, client = self._functions()
        operation = self._call(f"delete function {meta.get('function_name')}", client.delete_function,
                               name=full_name, not_found=None)
        if operation is None:
            return Release("stopped", deployment.get("url"), {**meta, "state": "NOT_FOUND"})
        self._wait(f"delete function {meta.get('function_name')}", operation)
        return Release("stopped", deployment.get("url"), {**meta, "state": "DELETED"})
