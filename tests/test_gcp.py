"""Cloud Run function deployer with the real google-cloud clients (REST) against a loopback stand-in."""
from __future__ import annotations

import io
import json
import urllib.request
import zipfile

import pytest

pytest.importorskip("google.auth", reason="the gcp extra is not installed (the phone profile has none)")
from google.auth.credentials import AnonymousCredentials

from deployers.base import DeployError
from deployers.gcp import CloudRunFunctionDeployer, build_source_zip, safe_extract
from tests.standins.bundles import make_bundle
from tests.standins.gcp import GcpStandIn
from tests.standins.hf_hub import HubStandIn

PROJECT = "demo-project"


@pytest.fixture
def cloud():
    with GcpStandIn(project=PROJECT) as stand_in:
        yield stand_in


@pytest.fixture
def gcp(cloud):
    return CloudRunFunctionDeployer(api_endpoint=cloud.url, project=PROJECT,
                                    credentials=AnonymousCredentials(), poll_s=0.01, timeout_s=10)


@pytest.fixture
def bundles(tmp_path):
    return make_bundle(tmp_path / "b1", seed=0, version="r1-fp32-aaaa"), make_bundle(
        tmp_path / "b2", seed=1, version="r2-int8-bbbb")


def row(release, id_=1):
    return {"id": id_, "version": id_, "status": release.status, "url": release.url, "meta": release.meta}


def serving(url: str) -> str:
    with urllib.request.urlopen(url + "/health", timeout=5) as response:
        return json.loads(response.read())["revision"]


def test_deploy_uploads_the_zip_creates_the_function_and_waits_for_the_operation(cloud, gcp, bundles):
    cloud.polls_before_done = 2          # the client must poll the long-running operation
    release = gcp.deploy(bundles[0], {"function_name": "digits"}, None)
    assert release.status == "running" and release.meta["state"] == "ACTIVE"
    assert release.url == f"{cloud.url}/run/digits" and release.health_latency_ms is not None
    assert release.meta["revision"] == serving(release.url)
    name = f"projects/{PROJECT}/locations/us-central1/functions/digits"
    function = cloud.functions[name]
    assert function["buildConfig"]["runtime"] == "python312" and function["buildConfig"]["entryPoint"] == "handle"
    assert function["environment"] in ("GEN_2", 2)
    uploaded = cloud.uploads[function["buildConfig"]["source"]["storageSource"]["object"]]
    assert uploaded == build_source_zip(bundles[0])
    methods = [m for m, _ in cloud.requests]
    assert methods.count("PUT") == 1 and ("POST", f"/v2/{name.rsplit('/functions', 1)[0]}/functions") in cloud.requests
    # create answers "not done" (1 of 2), one poll answers "not done" (2 of 2), the next one "done"
    assert sum(1 for m, p in cloud.requests if "/operations/" in p) == 2


def test_redeploy_updates_and_status_reads_the_function(cloud, gcp, bundles):
    first = gcp.deploy(bundles[0], {}, None)
    second = gcp.deploy(bundles[1], {}, row(first))
    assert second.meta["operation"] == "update" and second.meta["revision"] != first.meta["revision"]
    assert any(m == "PATCH" and "/functions/" in p for m, p in cloud.requests)
    status = gcp.status(row(second, 2))
    assert status.status == "running" and status.meta["revision"] == second.meta["revision"]
    function = cloud.functions[second.meta["function"]]
    function["state"] = "DEPLOYING"
    assert gcp.status(row(second, 2)).status == "deploying"
    function["state"] = "FAILED"
    assert gcp.status(row(second, 2)).status == "failed"


def test_failed_build_is_reported_and_the_previous_revision_keeps_serving(cloud, gcp, bundles):
    first = gcp.deploy(bundles[0], {}, None)
    cloud.fail["build"] = "Build failed: pip could not install onnxruntime"
    with pytest.raises(DeployError, match="build and deploy function pocketops-predict failed.*pip could not install"):
        gcp.deploy(bundles[1], {}, row(first))
    assert serving(first.url) == first.meta["revision"]
    assert gcp.status(row(first)).status == "running"


def test_failed_first_deploy_leaves_a_failed_function(cloud, gcp, bundles):
    cloud.fail["build"] = "Build failed: syntax error"
    with pytest.raises(DeployError, match="syntax error"):
        gcp.deploy(bundles[0], {"function_name": "broken"}, None)
    meta = {"function": f"projects/{PROJECT}/locations/us-central1/functions/broken", "function_name": "broken"}
    status = gcp.status({"id": 1, "meta": meta})
    assert status.status == "failed" and "syntax error" in status.meta["state_messages"][0]


def test_rollback_shifts_traffic_to_the_previous_revision(cloud, gcp, bundles):
    first = gcp.deploy(bundles[0], {}, None)
    second = gcp.deploy(bundles[1], {}, row(first))
    assert serving(second.url) == second.meta["revision"]
    back = gcp.rollback(row(second, 2), row(first, 1), bundles[0])
    assert back.status == "running" and back.meta["restored_by"] == "traffic"
    assert serving(first.url) == first.meta["revision"] == back.meta["revision"]
    status = gcp.status(row(back, 3))
    assert status.meta["serving"] == [{"revision": first.meta["revision"], "percent": 100}]
    # The next deploy takes the traffic back to the newest revision.
    third = gcp.deploy(bundles[1], {}, row(back, 3))
    assert serving(third.url) == third.meta["revision"]


def test_rollback_redeploys_when_the_revision_is_gone(cloud, gcp, bundles):
    first = gcp.deploy(bundles[0], {}, None)
    second = gcp.deploy(bundles[1], {}, row(first))
    cloud.revisions.pop(f"{first.meta['service']}/revisions/{first.meta['revision']}")
    back = gcp.rollback(row(second, 2), row(first, 1), bundles[0])
    assert back.meta["restored_by"] == "redeploy" and back.meta["source_sha256"] == first.meta["source_sha256"]
    assert serving(back.url) == back.meta["revision"] not in (first.meta["revision"], second.meta["revision"])


def test_stop_deletes_the_function(cloud, gcp, bundles):
    release = gcp.deploy(bundles[0], {}, None)
    stopped = gcp.stop(row(release))
    assert stopped.status == "stopped" and not cloud.functions
    assert gcp.status(row(release)).status == "stopped"
    assert gcp.stop(row(release)).meta["state"] == "NOT_FOUND"      # stopping twice is harmless


def test_api_errors_are_one_line_and_secrets_stay_out_of_meta(cloud, gcp, bundles):
    release = gcp.deploy(bundles[0], {"api_key": "k-secret-42"}, None)
    assert cloud.functions[release.meta["function"]]["serviceConfig"]["environmentVariables"]["POCKETOPS_API_KEY"] == "k-secret-42"
    assert "k-secret-42" not in json.dumps(release.meta)
    cloud.fail["upload_url"] = 403
    with pytest.raises(DeployError, match="permission denied.*Cloud Functions Developer role"):
        gcp.deploy(bundles[0], {}, None)
    cloud.fail["upload_url"] = 401
    with pytest.raises(DeployError, match=r"rejected the credentials.*; run `gcloud auth application-default login`"):
        gcp.deploy(bundles[0], {}, None)
    cloud.fail.clear()
    cloud.fail["upload"] = 500
    with pytest.raises(DeployError, match=r"uploading the function source failed \(HTTP 500\)"):
        gcp.deploy(bundles[0], {}, None)
    with pytest.raises(DeployError, match="function name 'Bad_Name' is invalid"):
        gcp.deploy(bundles[0], {"function_name": "Bad_Name"}, None)


def test_missing_credentials_and_project_are_login_hints(cloud, bundles, monkeypatch, tmp_path):
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))   # no gcloud ADC file here
    monkeypatch.setenv("NO_GCE_CHECK", "True")                          # do not probe the metadata server
    with pytest.raises(DeployError, match=r"no Google credentials found: run `gcloud auth application-default login`"):
        CloudRunFunctionDeployer(api_endpoint=cloud.url).deploy(bundles[0], {}, None)
    # A GOOGLE_APPLICATION_CREDENTIALS that points nowhere is named, not reported as "none found".
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(DeployError, match=r"GOOGLE_APPLICATION_CREDENTIALS=.*missing\.json is not usable .*was not found"):
        CloudRunFunctionDeployer(api_endpoint=cloud.url).deploy(bundles[0], {}, None)
    no_project = CloudRunFunctionDeployer(api_endpoint=cloud.url, credentials=AnonymousCredentials())
    with pytest.raises(DeployError, match="no Google Cloud project: pass --project"):
        no_project.deploy(bundles[0], {}, None)


def test_plan_states_cost_assumptions_and_files(gcp, bundles, cloud):
    plan = gcp.plan(bundles[0], {})
    paths = {f["path"] for f in plan.files}
    assert {"main.py", "requirements.txt", "model.onnx", "predictor.py", "model.json"} <= paths
    assert plan.estimated_monthly_cost_usd == 0.0
    assert any("10,000 requests/month" in n for n in plan.notes)
    assert any("Application Default Credentials" in r for r in plan.requirements)
    busy = gcp.plan(bundles[0], {"requests_per_month": 5_000_000, "latency_ms": 200})
    assert busy.estimated_monthly_cost_usd > 0
    assert cloud.requests == []


def test_source_zip_is_deterministic_and_extraction_is_zip_slip_safe(bundles, tmp_path):
    first = build_source_zip(bundles[0])
    (bundles[0].path / "model.json").touch()           # a new mtime must not change the zip
    assert build_source_zip(bundles[0]) == first
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        requirements = zf.read("requirements.txt").decode()
    assert "functions-framework" in requirements and "onnxruntime==" in requirements
    assert "main.py" in safe_extract(first, tmp_path / "ok")

    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.py", "boom")
    with pytest.raises(DeployError, match="unsafe path '../escape.py'"):
        safe_extract(evil.getvalue(), tmp_path / "evil")
    assert not (tmp_path / "escape.py").exists()

    (bundles[1].path / "link.txt").symlink_to("/etc/hostname")
    with pytest.raises(DeployError, match="symlink"):
        build_source_zip(bundles[1])


def test_through_the_service_rollback_pins_the_old_revision(cloud, gcp, tmp_path, monkeypatch):
    """deployers.service drives the function: two releases, rollback to the first revision, stop."""
    import store
    from deployers import service
    from tests._deploy_helpers import make_variant

    monkeypatch.setenv("POCKETOPS_HOME", str(tmp_path / "home"))
    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    v1, v2 = make_variant(db, db_path, seed=0), make_variant(db, db_path, name="int8-static", seed=1)
    options = {"function_name": "digits", "api_key": "k-never-stored"}
    first = service.deploy(db, db_path, v1, "gcp", options, deployer=gcp)
    second = service.deploy(db, db_path, v2, "gcp", options, deployer=gcp)
    assert first["url"] == second["url"] == f"{cloud.url}/run/digits" and second["status"] == "running"
    assert second["health_latency_ms"] is not None
    back = service.rollback(db, second["id"], deployer=gcp)
    assert serving(back["url"]) == first["meta"]["revision"] == back["meta"]["revision"]
    assert "superseded_by" not in back["meta"]
    assert service.stop(db, back["id"], deployer=gcp)["status"] == "stopped"
    db.conn.close()
    assert b"k-never-stored" not in db_path.read_bytes()


def test_private_by_default_public_on_request(cloud, gcp, bundles):
    cloud.enforce_invoker = True
    private = gcp.deploy(bundles[0], {}, None)
    assert private.status == "running" and private.health_latency_ms is None
    assert private.meta["health"] == "HTTP 403" and not private.meta.get("public")
    public = gcp.deploy(bundles[1], {"public": True}, row(private))
    assert public.health_latency_ms is not None and public.meta["public"] is True
    assert cloud.is_public(public.meta["service"])
    assert any("identity-token" in note for note in gcp.plan(bundles[0], {}).notes)


def test_missing_google_client_is_a_clear_message_and_plan_still_works(bundles, monkeypatch):
    import sys

    from core.optional import MissingDependency

    monkeypatch.setitem(sys.modules, "google.cloud.functions_v2", None)
    deployer = CloudRunFunctionDeployer(project=PROJECT, credentials=AnonymousCredentials())
    with pytest.raises(MissingDependency, match="google-cloud-functions.*python-grpcio"):
        deployer.deploy(bundles[0], {}, None)
    assert deployer.plan(bundles[0], {}).target == "gcp"


def test_registry_builds_the_cloud_deployers_with_injected_endpoints(cloud, bundles):
    from deployers import registry

    gcp = registry.get("gcp", api_endpoint=cloud.url, project=PROJECT, credentials=AnonymousCredentials(),
                       transport="rest", poll_s=0.01)
    assert gcp.deploy(bundles[0], {}, None).status == "running"
    with HubStandIn() as hub:
        docker = registry.get("spaces-docker", endpoint=hub.url, token="hf_test_token")
        assert docker.deploy(bundles[0], {"repo_id": "tester/x"}, None).meta["sdk"] == "docker"
        assert registry.get("spaces-static", endpoint=hub.url).target == "spaces-static"


def test_cli_dry_run_and_missing_credentials_for_cloud_targets(tmp_path):
    """`pocketops deploy --dry-run --json` plans each cloud target; a real deploy without login is one line."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import store
    from tests._deploy_helpers import make_variant

    home = tmp_path / "home"
    db = store.connect(home / "pocketops.db")
    make_variant(db, home / "pocketops.db")
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS", "POCKETOPS_API_KEY")}
    env.update(POCKETOPS_HOME=str(home), HF_HOME=str(tmp_path / "hf"), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
               NO_GCE_CHECK="True")
    root = Path(__file__).resolve().parent.parent

    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "tui.cli", *argv], cwd=root, env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)

    plans = {}
    for target in ("spaces-static", "spaces-docker", "gcp"):
        proc = cli("deploy", "1", "--target", target, "--dry-run", "--json")
        assert proc.returncode == 0, proc.stderr
        plans[target] = json.loads(proc.stdout)["plan"]
    assert plans["spaces-static"]["estimated_monthly_cost_usd"] == 0
    assert "Docker Spaces need a paid plan (PRO for personal accounts)" in plans["spaces-docker"]["requirements"]
    assert {"main.py", "model.onnx"} <= {f["path"] for f in plans["gcp"]["files"]}
    assert store.connect(home / "pocketops.db").execute("SELECT COUNT(*) FROM deployments").fetchone()[0] == 0

    for target, hint in (("spaces-docker", "hf auth login"), ("gcp", "gcloud auth application-default login")):
        proc = cli("deploy", "1", "--target", target, "--space", "you/x", "--project", "p")
        assert proc.returncode != 0 and hint in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_redeploy_rollback_keeps_the_api_key_without_us_storing_it(cloud, gcp, bundles):
    first = gcp.deploy(bundles[0], {"api_key": "k-77-secret"}, None)
    second = gcp.deploy(bundles[1], {"api_key": "k-77-secret"}, row(first))
    cloud.revisions.pop(f"{first.meta['service']}/revisions/{first.meta['revision']}")
    recorded = {**row(first), "meta": {**first.meta, "options": {"api_key_set": True}}}   # as the service records it
    back = gcp.rollback(row(second, 2), recorded, bundles[0])
    env = cloud.functions[back.meta["function"]]["serviceConfig"]["environmentVariables"]
    assert back.meta["restored_by"] == "redeploy" and env["POCKETOPS_API_KEY"] == "k-77-secret"
    gcp.stop(row(back, 3))
    with pytest.raises(DeployError, match="deploy the variant again with --api-key"):
        gcp.rollback(row(back, 3), recorded, bundles[0])
