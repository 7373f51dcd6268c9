"""A loopback stand-in for the Cloud Functions v2 and Cloud Run v2 REST APIs (and the upload bucket).

Routes are the ones the real clients call with ``transport="rest"`` (read from
google/cloud/functions_v2 and run_v2 ``transports/rest_base.py``):

- ``POST /v2/{parent}/functions:generateUploadUrl``; the signed URL is ``PUT /upload/{object}``
- ``POST /v2/{parent}/functions?functionId=F``, ``PATCH|GET|DELETE /v2/{parent}/functions/F``
- ``GET /v2/{parent}/operations/OP`` (shared by both APIs)
- ``GET|PATCH /v2/{parent}/services/S``, ``GET /v2/{parent}/services/S/revisions/R``
- Cloud Billing Budgets: ``POST /v1/billingAccounts/A/budgets``, ``PATCH /v1/billingAccounts/A/budgets/B``
- the deployed function itself answers ``GET /run/F/health`` with the revision that serves
  (503 while the service's scaling is MANUAL with 0 instances).

``MonitoringStandIn`` serves Cloud Monitoring's ``MetricService.ListTimeSeries`` over gRPC on
127.0.0.1: google-cloud-monitoring ships no REST transport, so the real client talks gRPC to it.

A "build" checks the uploaded zip has ``main.py`` defining the entry point and a
``requirements.txt``; a new revision ``F-0000N-abc`` then takes the traffic. Tests make it fail
with ``fail["build"] = "message"`` or make any route answer an HTTP error with ``fail[route]``.
"""
from __future__ import annotations

import io
import json
import re
import time
import zipfile

from tests.standins import JsonHandler, StandIn

FUNCTION_TYPE = "type.googleapis.com/google.cloud.functions.v2.Function"
SERVICE_TYPE = "type.googleapis.com/google.cloud.run.v2.Service"
EMPTY_TYPE = "type.googleapis.com/google.protobuf.Empty"
LATEST = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
BY_REVISION = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
SCALING_MODES = ["SCALING_MODE_UNSPECIFIED", "AUTOMATIC", "MANUAL"]

PARENT = r"/v2/(?P<parent>projects/[^/]+/locations/[^/]+)"
ROUTES = [
    ("upload_url", "POST", re.compile(PARENT + r"/functions:generateUploadUrl$")),
    ("create", "POST", re.compile(PARENT + r"/functions$")),
    ("get", "GET", re.compile(PARENT + r"/functions/(?P<fn>[^/:]+)$")),
    ("update", "PATCH", re.compile(PARENT + r"/functions/(?P<fn>[^/:]+)$")),
    ("delete", "DELETE", re.compile(PARENT + r"/functions/(?P<fn>[^/:]+)$")),
    ("operation", "GET", re.compile(PARENT + r"/operations/(?P<op>[^/:]+)$")),
    ("get_service", "GET", re.compile(PARENT + r"/services/(?P<svc>[^/:]+)$")),
    ("update_service", "PATCH", re.compile(PARENT + r"/services/(?P<svc>[^/:]+)$")),
    ("get_iam", "GET", re.compile(PARENT + r"/services/(?P<svc>[^/:]+):getIamPolicy$")),
    ("set_iam", "POST", re.compile(PARENT + r"/services/(?P<svc>[^/:]+):setIamPolicy$")),
    ("get_revision", "GET", re.compile(PARENT + r"/services/(?P<svc>[^/:]+)/revisions/(?P<rev>[^/:]+)$")),
    # Cloud Billing Budgets v1 (billingbudgets.googleapis.com): create and patch a budget.
    ("create_budget", "POST", re.compile(r"/v1/(?P<account>billingAccounts/[^/]+)/budgets$")),
    ("update_budget", "PATCH", re.compile(r"/v1/(?P<name>billingAccounts/[^/]+/budgets/[^/]+)$")),
]


def _enum(value, names: list[str]) -> str:
    """REST clients may send enums as numbers (enum-encoding=int) or names."""
    return names[value] if isinstance(value, int) else value


class CloudHandler(JsonHandler):
    def _dispatch(self, method: str) -> None:
        path, query = self.split()
        self.standin.requests.append((method, path))
        body = self.body()
        gcp = self.standin
        with gcp.lock:
            if method == "PUT" and path.startswith("/upload/"):
                if not self.failing("upload"):
                    gcp.uploads[path.removeprefix("/upload/")] = body
                    self.send(200, {})
                return
            if method == "GET" and (m := re.match(r"^/run/(?P<fn>[^/]+)/health$", path)):
                service = gcp.services.get(f"{gcp.parent}/services/{m['fn']}")
                if service is None:
                    self.send(404, {"error": "no such function"})
                elif gcp.enforce_invoker and not gcp.is_public(service["name"]):
                    self.send(403, {"error": "Your client does not have permission to get URL"})
                elif gcp.scaled_to_zero(service):
                    self.send(503, {"error": "Service Unavailable: no instances (manual scaling, 0 instances)"})
                else:
                    self.send(200, {"status": "ok", "revision": gcp.serving_revision(service)})
                return
            if gcp.require_auth and "Authorization" not in self.headers:
                self.send(401, {"error": {"code": 401, "message": "Request is missing required authentication credential.", "status": "UNAUTHENTICATED"}})
                return
            for route, verb, pattern in ROUTES:
                if verb == method and (m := pattern.match(path)):
                    if self.failing(route):
                        return
                    payload = json.loads(body) if body else {}
                    status, answer = getattr(gcp, f"_{route}")(m.groupdict(), payload, query)
                    self.send(status, answer)
                    return
        self.send(404, {"error": {"code": 404, "message": f"no route {method} {path}", "status": "NOT_FOUND"}})

    def failing(self, route: str) -> bool:
        status = self.standin.fail.get(route)
        if not isinstance(status, int):
            return False
        message = self.standin.fail_message.get(route, f"stand-in told to fail {route}")
        message = message.replace("{authorization}", self.headers.get("Authorization") or "")
        self.send(status, {"error": {"code": status, "message": message, "status": "INTERNAL"}})
        return True

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")


def not_found(what: str) -> tuple[int, dict]:
    return 404, {"error": {"code": 404, "message": f"{what} not found", "status": "NOT_FOUND"}}


class GcpStandIn(StandIn):
    """Cloud Functions + Cloud Run at ``.url``; use it as ``api_endpoint`` with AnonymousCredentials."""

    handler_class = CloudHandler

    def __init__(self, project: str = "demo-project", region: str = "us-central1") -> None:
        super().__init__()
        self.parent = f"projects/{project}/locations/{region}"
        self.uploads: dict[str, bytes] = {}
        self.functions: dict[str, dict] = {}
        self.services: dict[str, dict] = {}
        self.revisions: dict[str, dict] = {}       # full revision name -> revision (with the zip it runs)
        self.operations: dict[str, dict] = {}
        self.polls_before_done = 0                 # >0: operations answer done=false that many times
        self.require_auth = False
        self.enforce_invoker = False               # True: the function answers 403 unless allUsers may invoke it
        self.policies: dict[str, dict] = {}        # service name -> IAM policy
        self.budgets: dict[str, dict] = {}         # Cloud Billing budget name -> budget
        self._counter = 0

    # -- helpers ---------------------------------------------------------------------------
    def _next(self) -> int:
        self._counter += 1
        return self._counter

    def _new_op(self, parent: str, *, response: dict | None = None, error: dict | None = None) -> dict:
        name = f"{parent}/operations/op-{self._next()}"
        op = {"name": name, "done": False}
        if error is not None:
            op["error"] = error
        else:
            op["response"] = response or {"@type": EMPTY_TYPE}
        self.operations[name] = {"op": op, "polls_left": self.polls_before_done}
        return self._operation_view(name)

    def _operation_view(self, name: str) -> dict:
        entry = self.operations[name]
        if entry["polls_left"] > 0:
            entry["polls_left"] -= 1
            return {"name": name, "done": False}
        return {**entry["op"], "done": True}

    def serving_revision(self, service: dict) -> str | None:
        for target in service["traffic"]:
            if target.get("percent") == 100:
                if _enum(target.get("type"), ["", LATEST, BY_REVISION]) == LATEST:
                    return service["latestReadyRevision"].rsplit("/", 1)[-1]
                return target.get("revision")
        return None

    def _build(self, function: dict) -> str | None:
        """A build failure message, or None when the uploaded source would run."""
        if isinstance(self.fail.get("build"), str):
            return self.fail["build"]
        source = function.get("buildConfig", {}).get("source", {}).get("storageSource", {})
        data = self.uploads.get(source.get("object", ""))
        if data is None:
            return f"source object {source.get('object')!r} was never uploaded"
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = set(zf.namelist())
                main = zf.read("main.py").decode() if "main.py" in names else ""
        except zipfile.BadZipFile:
            return "source is not a zip archive"
        entry = function.get("buildConfig", {}).get("entryPoint", "")
        if f"def {entry}(" not in main:
            return f"Build failed: function {entry!r} is not defined in main.py"
        if "requirements.txt" not in names:
            return "Build failed: requirements.txt missing"
        return None

    def _deploy_revision(self, parent: str, fn_id: str, function: dict) -> dict:
        service_name = f"{parent}/services/{fn_id}"
        revision = f"{fn_id}-{self._next():05d}-abc"
        full_revision = f"{service_name}/revisions/{revision}"
        source = function["buildConfig"]["source"]["storageSource"]
        self.revisions[full_revision] = {"name": full_revision, "service": service_name,
                                         "source": source.get("object"),
                                         "createTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        uri = f"{self.url}/run/{fn_id}"
        service = self.services.setdefault(service_name, {"name": service_name, "uri": uri, "traffic": []})
        service["latestReadyRevision"] = full_revision
        service["latestCreatedRevision"] = full_revision
        if function.get("serviceConfig", {}).get("allTrafficOnLatestRevision", True) or not service["traffic"]:
            service["traffic"] = [{"type": LATEST, "percent": 100}]
        config = dict(function.get("serviceConfig") or {})
        config.update(service=service_name, uri=uri, revision=revision)
        return {**function, "name": f"{parent}/functions/{fn_id}", "serviceConfig": config,
                "state": "ACTIVE", "url": uri, "environment": "GEN_2",
                "updateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    # -- routes (params, body, query) -> (status, json) --------------------------------------
    def _upload_url(self, p, body, q):
        obj = f"{p['parent'].replace('/', '-')}-{self._next()}.zip"
        return 200, {"uploadUrl": f"{self.url}/upload/{obj}",
                     "storageSource": {"bucket": "gcf-v2-uploads-stand-in", "object": obj, "generation": "1"}}

    def _create(self, p, body, q):
        fn_id = (q.get("functionId") or [""])[0]
        name = f"{p['parent']}/functions/{fn_id}"
        if name in self.functions:
            return 409, {"error": {"code": 409, "message": f"Function {fn_id} already exists", "status": "ALREADY_EXISTS"}}
        problem = self._build(body)
        if problem:
            self.functions[name] = {**body, "name": name, "state": "FAILED",
                                    "stateMessages": [{"severity": "ERROR", "type": "BuildFailed", "message": problem}]}
            return 200, self._new_op(p["parent"], error={"code": 3, "message": problem})
        self.functions[name] = self._deploy_revision(p["parent"], fn_id, body)
        return 200, self._new_op(p["parent"], response={"@type": FUNCTION_TYPE, **self.functions[name]})

    def _get(self, p, body, q):
        found = self.functions.get(f"{p['parent']}/functions/{p['fn']}")
        return (200, found) if found else not_found(f"Function {p['fn']}")

    def _update(self, p, body, q):
        name = f"{p['parent']}/functions/{p['fn']}"
        if name not in self.functions:
            return not_found(f"Function {p['fn']}")
        problem = self._build(body)
        if problem:
            # The previous revision keeps serving; the function reports the failed attempt.
            self.functions[name]["stateMessages"] = [{"severity": "WARNING", "type": "BuildFailed", "message": problem}]
            return 200, self._new_op(p["parent"], error={"code": 3, "message": problem})
        self.functions[name] = self._deploy_revision(p["parent"], p["fn"], body)
        return 200, self._new_op(p["parent"], response={"@type": FUNCTION_TYPE, **self.functions[name]})

    def _delete(self, p, body, q):
        name = f"{p['parent']}/functions/{p['fn']}"
        if self.functions.pop(name, None) is None:
            return not_found(f"Function {p['fn']}")
        service = self.services.pop(f"{p['parent']}/services/{p['fn']}", None)
        for rev in [r for r in self.revisions if service and r.startswith(service["name"] + "/")]:
            del self.revisions[rev]
        return 200, self._new_op(p["parent"])

    def _operation(self, p, body, q):
        name = f"{p['parent']}/operations/{p['op']}"
        return (200, self._operation_view(name)) if name in self.operations else not_found(f"Operation {p['op']}")

    def _get_service(self, p, body, q):
        found = self.services.get(f"{p['parent']}/services/{p['svc']}")
        return (200, found) if found else not_found(f"Service {p['svc']}")

    def _update_service(self, p, body, q):
        name = f"{p['parent']}/services/{p['svc']}"
        service = self.services.get(name)
        if service is None:
            return not_found(f"Service {p['svc']}")
        for target in body.get("traffic", []):
            kind = _enum(target.get("type"), ["", LATEST, BY_REVISION])
            if kind == BY_REVISION and f"{name}/revisions/{target.get('revision')}" not in self.revisions:
                return 400, {"error": {"code": 400, "message": f"Revision {target.get('revision')} not found",
                                       "status": "INVALID_ARGUMENT"}}
        service["traffic"] = [{**t, "type": _enum(t.get("type"), ["", LATEST, BY_REVISION])}
                              for t in body.get("traffic", [])]
        if "scaling" in body:
            scaling = dict(body["scaling"])
            scaling["scalingMode"] = _enum(scaling.get("scalingMode", 0), SCALING_MODES)
            service["scaling"] = scaling
        return 200, self._new_op(p["parent"], response={"@type": SERVICE_TYPE, **service})

    def scaled_to_zero(self, service: dict) -> bool:
        """Manual scaling with 0 instances: the documented way to stop a service serving (and billing)."""
        scaling = service.get("scaling") or {}
        return scaling.get("scalingMode") == "MANUAL" and int(scaling.get("manualInstanceCount") or 0) == 0

    def is_public(self, service_name: str) -> bool:
        bindings = self.policies.get(service_name, {}).get("bindings", [])
        return any(b.get("role") == "roles/run.invoker" and "allUsers" in b.get("members", []) for b in bindings)

    def _get_iam(self, p, body, q):
        name = f"{p['parent']}/services/{p['svc']}"
        if name not in self.services:
            return not_found(f"Service {p['svc']}")
        return 200, self.policies.get(name, {"etag": "BwYA"})

    def _set_iam(self, p, body, q):
        name = f"{p['parent']}/services/{p['svc']}"
        if name not in self.services:
            return not_found(f"Service {p['svc']}")
        self.policies[name] = {**body.get("policy", {}), "etag": "BwYB"}
        return 200, self.policies[name]

    def _create_budget(self, p, body, q):
        name = f"{p['account']}/budgets/b-{self._next()}"
        self.budgets[name] = {**body, "name": name, "etag": "1"}
        return 200, self.budgets[name]

    def _update_budget(self, p, body, q):
        if p["name"] not in self.budgets:
            return not_found(f"Budget {p['name']}")
        self.budgets[p["name"]] = {**body, "name": p["name"], "etag": "2"}
        return 200, self.budgets[p["name"]]

    def _get_revision(self, p, body, q):
        found = self.revisions.get(f"{p['parent']}/services/{p['svc']}/revisions/{p['rev']}")
        return (200, found) if found else not_found(f"Revision {p['rev']}")


# -- Cloud Monitoring ------------------------------------------------------------------------

class MonitoringStandIn:
    """``google.monitoring.v3.MetricService/ListTimeSeries`` on 127.0.0.1 over gRPC, from in-memory points.

    ``add(metric_type, service_name, start, end, value)`` records one DELTA point. A query
    answers, as the API documents for ``projects.timeSeries.list``, one TimeSeries per
    (metric, resource) matching ``metric.type = "..."`` and ``resource.labels.service_name =
    "..."`` with the points whose interval end lies in ``[interval.startTime,
    interval.endTime]`` (both ends included, so a client must not count a point twice),
    newest first, ``metricKind`` DELTA and ``valueType`` INT64 (request_count) or DOUBLE.
    """

    SERVICE = "google.monitoring.v3.MetricService"

    def __init__(self, project: str = "demo-project") -> None:
        import threading

        self.project = project
        self.lock = threading.Lock()
        self.points: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        self.queries: list[dict] = []
        self.fail: str | None = None        # a gRPC status name (e.g. "PERMISSION_DENIED") to answer instead
        self.server = None
        self.port = 0

    def add(self, metric_type: str, service_name: str, start: float, end: float, value: float) -> None:
        with self.lock:
            self.points.setdefault((metric_type, service_name), []).append((start, end, value))

    def __enter__(self):
        from concurrent.futures import ThreadPoolExecutor

        import grpc
        from google.cloud import monitoring_v3

        handler = grpc.method_handlers_generic_handler(self.SERVICE, {
            "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
                self._list, request_deserializer=monitoring_v3.ListTimeSeriesRequest.deserialize,
                response_serializer=monitoring_v3.ListTimeSeriesResponse.serialize)})
        self.server = grpc.server(ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(grace=None)

    def client(self):
        """The real ``MetricServiceClient`` on its real gRPC transport, over a channel to this stand-in."""
        import grpc
        from google.cloud import monitoring_v3
        from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        return monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))

    def _list(self, request, context):
        import grpc
        from google.cloud import monitoring_v3

        if self.fail:
            context.abort(getattr(grpc.StatusCode, self.fail), f"stand-in told to fail: {self.fail}")
        metric = re.search(r'metric\.type\s*=\s*"([^"]+)"', request.filter)
        service = re.search(r'resource\.labels\.service_name\s*=\s*"([^"]+)"', request.filter)
        if request.name != f"projects/{self.project}" or metric is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad name {request.name!r} or filter {request.filter!r}")
        start = request.interval.start_time.timestamp()
        end = request.interval.end_time.timestamp()
        with self.lock:
            self.queries.append({"filter": request.filter, "start": start, "end": end})
            found = {k: v for k, v in self.points.items()
                     if k[0] == metric[1] and (service is None or k[1] == service[1])}
        answer = monitoring_v3.ListTimeSeriesResponse()
        for (metric_type, service_name), points in sorted(found.items()):
            chosen = sorted((p for p in points if start <= p[1] <= end), key=lambda p: -p[1])
            if not chosen:
                continue
            is_int = metric_type.endswith("request_count")
            series = monitoring_v3.TimeSeries(
                metric={"type": metric_type, "labels": {"response_code_class": "2xx"} if is_int else {}},
                resource={"type": "cloud_run_revision", "labels": {"project_id": self.project,
                                                                   "service_name": service_name}},
                metric_kind="DELTA", value_type="INT64" if is_int else "DOUBLE")
            for p0, p1, value in chosen:
                series.points.append(monitoring_v3.Point(
                    interval={"start_time": _stamp(p0), "end_time": _stamp(p1)},
                    value={"int64_value": int(value)} if is_int else {"double_value": float(value)}))
            answer.time_series.append(series)
        return answer


def _stamp(ts: float) -> dict:
    return {"seconds": int(ts), "nanos": int(round(ts % 1 * 1e9))}
