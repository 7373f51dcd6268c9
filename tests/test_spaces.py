"""Spaces deployers with the real huggingface_hub client against a loopback stand-in of the Hub."""
from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from deployers.base import DeployError
from deployers.spaces import PAID_PLAN, DockerSpaceDeployer, StaticSpaceDeployer, map_stage
from tests.standins.bundles import make_bundle, reference_predict
from tests.standins.hf_hub import HubStandIn

TOKEN = "hf_test_token_do_not_print"
REPO = "tester/pocketops-api"


@pytest.fixture
def hub():
    with HubStandIn(token=TOKEN) as stand_in:
        yield stand_in


@pytest.fixture
def docker(hub):
    return DockerSpaceDeployer(endpoint=hub.url, token=TOKEN, poll_s=0.01)


@pytest.fixture
def bundles(tmp_path):
    return make_bundle(tmp_path / "b1", seed=0, version="r1-fp32-aaaa"), make_bundle(
        tmp_path / "b2", seed=1, version="r2-int8-bbbb")


def row(release, version=1):
    """A deployment row as the store hands it to a deployer (meta decoded)."""
    return {"id": version, "version": version, "status": release.status, "url": release.url, "meta": release.meta}


def test_docker_deploy_pushes_bundle_dockerfile_and_front_matter(hub, docker, bundles):
    release = docker.deploy(bundles[0], {"repo_id": REPO}, None)
    files = hub.files(REPO)
    assert hub.repos[REPO].sdk == "docker"
    assert {"model.onnx", "model.json", "predictor.py", "server.py", "reference.npz",
            "Dockerfile", "requirements.txt", "README.md"} <= set(files)
    assert files["model.onnx"] == (bundles[0].path / "model.onnx").read_bytes()
    front = files["README.md"].decode().split("---")[1]
    assert "sdk: docker" in front and "app_port: 7860" in front
    dockerfile = files["Dockerfile"].decode()
    assert "--uid 1000" in dockerfile and "USER user" in dockerfile and "7860" in dockerfile
    assert "onnxruntime==" in files["requirements.txt"].decode()
    assert release.status == "deploying" and release.meta["stage"] == "BUILDING"
    assert release.meta["repo_id"] == REPO and release.meta["commit"] == hub.repos[REPO].head.id
    assert release.url.endswith(f"/spaces/{REPO}")
    assert TOKEN not in json.dumps(release.meta)


def test_status_follows_the_space_runtime_including_sleeping(hub, docker, bundles):
    release = docker.deploy(bundles[0], {"repo_id": REPO}, None)
    seen = {}
    for stage in ("BUILDING", "RUNNING", "SLEEPING", "BUILD_ERROR", "PAUSED", "RUNNING_BUILDING"):
        hub.repos[REPO].stage = stage
        status = docker.status(row(release))
        seen[stage] = status.status
        assert status.meta["stage"] == stage and status.meta["commit"] == release.meta["commit"]
    assert seen == {"BUILDING": "deploying", "RUNNING": "running", "SLEEPING": "sleeping",
                    "BUILD_ERROR": "failed", "PAUSED": "stopped", "RUNNING_BUILDING": "running"}
    assert map_stage("SOMETHING_ERROR") == "failed" and map_stage(None) == "deploying"


def test_deploy_waits_for_running_and_records_cold_start(hub, bundles):
    hub.stage_after_commit = "RUNNING"
    deployer = DockerSpaceDeployer(endpoint=hub.url, token=TOKEN, poll_s=0.01)
    release = deployer.deploy(bundles[0], {"repo_id": REPO, "wait_s": 5}, None)
    assert release.status == "running" and release.cold_start_ms is not None and release.cold_start_ms < 5000


def test_failed_commit_keeps_the_previous_release_in_place(hub, docker, bundles):
    first = docker.deploy(bundles[0], {"repo_id": REPO}, None)
    # A rejection the client does not retry (it retries 5xx for ~23 s with backoff).
    hub.fail["commit"] = 422
    with pytest.raises(DeployError, match=r"upload to Space tester/pocketops-api failed \(HTTP 422\)"):
        docker.deploy(bundles[1], {"repo_id": REPO}, row(first))
    assert hub.repos[REPO].head.id == first.meta["commit"]
    assert hub.files(REPO)["model.onnx"] == (bundles[0].path / "model.onnx").read_bytes()


def test_rollback_copies_the_previous_files_back(hub, docker, bundles):
    first = docker.deploy(bundles[0], {"repo_id": REPO}, None)
    v1_files = hub.files(REPO)
    # v2 has a file v1 did not: rollback must delete it, not just overwrite.
    (bundles[1].path / "extra.txt").write_text("only in v2")
    second = docker.deploy(bundles[1], {"repo_id": REPO}, row(first))
    assert "extra.txt" in hub.files(REPO) and hub.files(REPO)["model.onnx"] != v1_files["model.onnx"]
    back = docker.rollback(row(second, 2), row(first, 1), bundles[0])
    assert hub.files(REPO) == v1_files
    assert back.meta["restored_commit"] == first.meta["commit"] and back.meta["restored_by"] == "copy"
    assert back.meta["commit"] == hub.repos[REPO].head.id != second.meta["commit"]
    assert "rollback to r1-fp32-aaaa" in hub.repos[REPO].head.title
    # history kept: rollback is a new commit (after the Hub's own initial .gitattributes commit)
    assert len(hub.repos[REPO].commits) == 1 + 3


def test_rollback_reuploads_when_the_previous_commit_is_gone(hub, docker, bundles):
    first = docker.deploy(bundles[0], {"repo_id": REPO}, None)
    second = docker.deploy(bundles[1], {"repo_id": REPO}, row(first))
    hub.repos[REPO].commits = hub.repos[REPO].commits[-1:]   # e.g. history squashed on the Hub
    back = docker.rollback(row(second, 2), row(first, 1), bundles[0])
    assert back.meta["restored_by"] == "re-upload"
    assert hub.files(REPO)["model.onnx"] == (bundles[0].path / "model.onnx").read_bytes()


def test_stop_pauses_the_space(hub, docker, bundles):
    release = docker.deploy(bundles[0], {"repo_id": REPO}, None)
    stopped = docker.stop(row(release))
    assert stopped.status == "stopped" and hub.repos[REPO].stage == "PAUSED"
    assert ("POST", f"/api/spaces/{REPO}/pause") in hub.requests


def test_docker_without_paid_plan_says_so(hub, docker, bundles):
    hub.paid_plan = False
    with pytest.raises(DeployError, match="Docker Spaces need a paid plan.*spaces-static"):
        docker.deploy(bundles[0], {"repo_id": REPO}, None)


def test_bad_or_missing_token_is_a_login_hint_without_the_token(hub, bundles, monkeypatch, tmp_path):
    wrong = DockerSpaceDeployer(endpoint=hub.url, token="hf_wrong_secret")
    with pytest.raises(DeployError) as err:
        wrong.deploy(bundles[0], {"repo_id": REPO}, None)
    assert "hf auth login" in str(err.value) and "hf_wrong_secret" not in str(err.value)

    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(DeployError, match=r"no Hugging Face token found: run `hf auth login`"):
        DockerSpaceDeployer(endpoint=hub.url).deploy(bundles[0], {"repo_id": REPO}, None)

    monkeypatch.setenv("HF_TOKEN", TOKEN)   # huggingface_hub's own lookup, nothing stored by us
    release = DockerSpaceDeployer(endpoint=hub.url).deploy(bundles[0], {"repo_id": "pocketops-api"}, None)
    assert release.meta["repo_id"] == "tester/pocketops-api"   # namespace from whoami


def test_api_key_becomes_a_space_secret_not_meta(hub, docker, bundles):
    release = docker.deploy(bundles[0], {"repo_id": REPO, "api_key": "k-123-secret"}, None)
    assert hub.repos[REPO].secrets == {"POCKETOPS_API_KEY": "k-123-secret"}
    assert "k-123-secret" not in json.dumps(release.meta)
    assert not any("k-123-secret" in content.decode(errors="ignore") for content in hub.files(REPO).values())


def test_plans_name_cost_and_requirements(hub, docker, bundles):
    plan = docker.plan(bundles[0], {"repo_id": REPO})
    assert plan.target == "spaces-docker" and PAID_PLAN in plan.requirements
    assert {"Dockerfile", "README.md", "model.onnx"} <= {f["path"] for f in plan.files}
    assert plan.estimated_monthly_cost_usd == 0.0
    upgraded = docker.plan(bundles[0], {"repo_id": REPO, "hardware": "cpu-upgrade"})
    assert upgraded.estimated_monthly_cost_usd == pytest.approx(0.03 * 730)
    assert hub.requests == []          # a plan changes nothing and calls nothing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uploaded_docker_space_serves_when_started_like_its_cmd(hub, docker, bundles, tmp_path):
    """The files in the Space run the way the Dockerfile's CMD starts them and answer predictions."""
    docker.deploy(bundles[0], {"repo_id": REPO}, None)
    app = tmp_path / "space"
    for name, content in hub.files(REPO).items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_bytes(content)
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", (app / "Dockerfile").read_text(), re.M).group(1))
    port = _free_port()
    script = cmd[2].replace("0.0.0.0", "127.0.0.1").replace("7860", str(port)).replace("python ", f"{shlex.quote(sys.executable)} ")
    env = {k: v for k, v in os.environ.items() if k != "POCKETOPS_API_KEY"}
    proc = subprocess.Popen([cmd[0], cmd[1], script], cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        x = np.random.default_rng(5).normal(size=(3, 4))
        deadline = time.monotonic() + 20
        while True:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", method="POST",
                                             data=json.dumps({"inputs": x.tolist()}).encode(),
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=5) as resp:
                    answer = json.loads(resp.read())
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "the Space's server did not come up"
                time.sleep(0.1)
        np.testing.assert_allclose(answer["probabilities"], reference_predict(bundles[0], x), atol=1e-5)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_static_space_uploads_the_page(hub, bundles):
    static = StaticSpaceDeployer(endpoint=hub.url, token=TOKEN)
    plan = static.plan(bundles[0], {"repo_id": "tester/demo"})
    assert plan.estimated_monthly_cost_usd == 0.0 and not any("paid" in r for r in plan.requirements)
    release = static.deploy(bundles[0], {"repo_id": "tester/demo"}, None)
    files = hub.files("tester/demo")
    assert hub.repos["tester/demo"].sdk == "static"
    assert "index.html" in files and "sdk: static" in files["README.md"].decode()
    assert {f["path"] for f in plan.files} == set(files) - {".gitattributes"}   # that one is the Hub's
    assert files["model.onnx"] == (bundles[0].path / "model.onnx").read_bytes()
    assert release.meta["sdk"] == "static" and "app.js" in release.meta["files"]


def test_static_space_can_vendor_onnxruntime_web(hub, bundles, tmp_path):
    from deployers.static import ORT_FILES

    ort = tmp_path / "ort-dist"
    ort.mkdir()
    for name in ORT_FILES:
        (ort / name).write_bytes(b"// " + name.encode())
    StaticSpaceDeployer(endpoint=hub.url, token=TOKEN).deploy(
        bundles[0], {"repo_id": "tester/demo", "vendor_ort": str(ort)}, None)
    files = hub.files("tester/demo")
    assert {f"ort/{name}" for name in ORT_FILES} <= set(files)
    assert b"ort/ort.wasm.min.js" in files["index.html"]


def test_through_the_service_failure_keeps_serving_and_rollback_restores(hub, tmp_path, monkeypatch):
    """deployers.service drives the Docker Space: rows, a recorded failure, rollback, sleeping, stop."""
    import store
    from deployers import service
    from tests._deploy_helpers import make_variant

    monkeypatch.setenv("POCKETOPS_HOME", str(tmp_path / "home"))
    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    v1, v2 = make_variant(db, db_path, seed=0), make_variant(db, db_path, name="int8-static", seed=1)
    hub.stage_after_commit = "RUNNING"
    deployer = DockerSpaceDeployer(endpoint=hub.url, token=TOKEN, poll_s=0.01)
    options = {"repo_id": REPO}
    first = service.deploy(db, db_path, v1, "spaces-docker", options, deployer=deployer)
    v1_files = hub.files(REPO)
    second = service.deploy(db, db_path, v2, "spaces-docker", options, deployer=deployer)
    assert (first["status"], second["status"]) == ("running", "running")
    assert service.status(db, first["id"])["status"] == "superseded"

    hub.fail["commit"] = 422
    with pytest.raises(DeployError, match="keeps serving"):
        service.deploy(db, db_path, v1, "spaces-docker", options, deployer=deployer)
    hub.fail.clear()
    failed = db.execute("SELECT status, error FROM deployments ORDER BY id DESC LIMIT 1").fetchone()
    assert failed[0] == "failed" and "HTTP 422" in failed[1]
    assert service.status(db, second["id"], deployer=deployer)["status"] == "running"

    back = service.rollback(db, second["id"], deployer=deployer)
    assert back["meta"]["rolled_back_from"] == second["id"] and back["version"] > second["version"]
    assert hub.files(REPO)["model.onnx"] == v1_files["model.onnx"]

    hub.repos[REPO].stage = "SLEEPING"
    assert service.status(db, back["id"], deployer=deployer)["status"] == "sleeping"
    assert service.stop(db, back["id"], deployer=deployer)["status"] == "stopped"
    db.conn.close()
    assert TOKEN.encode() not in db_path.read_bytes()


def test_missing_client_package_is_a_clear_message(bundles, monkeypatch):
    from core.optional import MissingDependency

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)     # as if not installed
    with pytest.raises(MissingDependency, match="huggingface_hub.*On Termux"):
        DockerSpaceDeployer(token=TOKEN).deploy(bundles[0], {"repo_id": REPO}, None)
    plan = DockerSpaceDeployer().plan(bundles[0], {"repo_id": REPO})     # a plan still works offline
    assert PAID_PLAN in plan.requirements


def test_a_status_read_failing_after_the_commit_is_not_a_failed_deploy(hub, docker, bundles):
    hub.fail["runtime"] = 403
    release = docker.deploy(bundles[0], {"repo_id": REPO}, None)
    assert release.status == "deploying" and release.meta["commit"] == hub.repos[REPO].head.id
    assert "read the status" in release.meta["status_error"]


def test_rollback_finds_the_previous_commit_by_its_title_when_none_was_recorded(hub, docker, bundles):
    first = docker.deploy(bundles[0], {"repo_id": REPO}, None)
    v1_files = hub.files(REPO)
    second = docker.deploy(bundles[1], {"repo_id": REPO}, row(first))
    unrecorded = {**row(first), "meta": {"repo_id": REPO, "bundle_version": "r1-fp32-aaaa"}}
    back = docker.rollback(row(second, 2), unrecorded, bundles[0])
    assert back.meta["restored_by"] == "copy" and back.meta["restored_commit"] == first.meta["commit"]
    assert hub.files(REPO) == v1_files
    assert ("GET", f"/api/spaces/{REPO}/commits/main") in hub.requests


def test_releases_still_building_are_superseded_and_rolled_back_to(hub, tmp_path, monkeypatch):
    """Without --wait a Space answers BUILDING after the push: the row is "deploying". The next
    release must still supersede it, and rollback must find it (it did serve, once built)."""
    import store
    from deployers import service
    from store import deployments as store_deployments
    from tests._deploy_helpers import make_variant

    monkeypatch.setenv("POCKETOPS_HOME", str(tmp_path / "home"))
    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    v1, v2 = make_variant(db, db_path, seed=0), make_variant(db, db_path, name="int8-static", seed=1)
    hub.stage_after_commit = "BUILDING"
    deployer = StaticSpaceDeployer(endpoint=hub.url, token=TOKEN, poll_s=0.01)
    options = {"repo_id": "tester/digits"}
    first = service.deploy(db, db_path, v1, "spaces-static", options, deployer=deployer)
    v1_model = hub.files("tester/digits")["model.onnx"]
    second = service.deploy(db, db_path, v2, "spaces-static", options, deployer=deployer)
    assert (first["status"], second["status"]) == ("deploying", "deploying")
    assert store_deployments.get(db, first["id"])["status"] == "superseded"
    back = service.rollback(db, second["id"], deployer=deployer)
    assert back["meta"]["restores"] == first["id"] and back["variant_id"] == v1
    assert hub.files("tester/digits")["model.onnx"] == v1_model != hub.repos["tester/digits"].commits[-2].files["model.onnx"]
    assert store_deployments.get(db, second["id"])["status"] == "rolled-back"


def test_onnx_goes_through_git_lfs_as_on_a_real_space(hub, docker, bundles):
    """A new Space's .gitattributes makes *.onnx LFS: preupload says so, the bytes go through the
    LFS batch API and a presigned PUT (not inline, not Xet), and the commit names them by sha256."""
    import hashlib

    from tests.standins.hf_hub import lfs_tracked

    release = docker.deploy(bundles[0], {"repo_id": REPO}, None)
    repo = hub.repos[REPO]
    assert lfs_tracked(hub.files(REPO)[".gitattributes"].decode(), "model.onnx")
    assert hub.upload_modes["model.onnx"] == "lfs" and hub.upload_modes["reference.npz"] == "lfs"
    assert hub.upload_modes["server.py"] == hub.upload_modes["Dockerfile"] == "regular"
    onnx = (bundles[0].path / "model.onnx").read_bytes()
    sha = hashlib.sha256(onnx).hexdigest()
    assert (REPO, sha, len(onnx)) in hub.lfs_puts
    assert ("PUT", f"/lfs-storage/{REPO}/{sha}") in hub.requests
    assert ("POST", f"/spaces/{REPO}.git/info/lfs/objects/verify") in hub.requests
    assert repo.head.lfs == {"model.onnx", "reference.npz"}
    assert hashlib.sha256(hub.files(REPO)["model.onnx"]).hexdigest() == sha
    assert release.meta["commit"] == repo.head.id

    # A second release PUTs only its own objects; the rollback PUTs none.
    puts = len(hub.lfs_puts)
    second = docker.deploy(bundles[1], {"repo_id": REPO}, row(release))
    assert len(hub.lfs_puts) == puts + 2    # v2's own model.onnx and reference.npz
    # Rollback copies LFS files by their sha256 (an lfsFile line), which the stand-in only takes
    # for objects it stored: v1's model comes back byte for byte.
    docker.rollback(row(second, 2), row(release, 1), bundles[0])
    assert hub.files(REPO)["model.onnx"] == onnx and hub.repos[REPO].head.lfs == {"model.onnx", "reference.npz"}
    assert len(hub.lfs_puts) == puts + 2


def test_the_stand_in_refuses_binary_files_sent_inline(hub):
    """The Hub rejects a binary file outside LFS; so must the stand-in, or the LFS test proves nothing."""
    import base64

    hub_client = pytest.importorskip("huggingface_hub")
    api = hub_client.HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(REPO, repo_type="space", space_sdk="docker")
    line = {"key": "file", "value": {"path": "model.onnx", "encoding": "base64",
                                     "content": base64.b64encode(b"\x08\x00onnx").decode()}}
    body = "\n".join(json.dumps(x) for x in ({"key": "header", "value": {"summary": "inline"}}, line)).encode()
    request = urllib.request.Request(f"{hub.url}/api/spaces/{REPO}/commit/main", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400 and "binary" in info.value.read().decode()
    assert "model.onnx" not in hub.files(REPO)


def test_the_app_address_is_the_host_the_hub_reports_not_a_guess(hub, bundles):
    """app_url is space_info().host; a running Docker Space is probed there; a host the Hub does
    not report stays unknown instead of being made up from the repo id."""
    hub.stage_after_commit = "RUNNING"
    deployer = DockerSpaceDeployer(endpoint=hub.url, token=TOKEN, poll_s=0.01)
    release = deployer.deploy(bundles[0], {"repo_id": REPO, "wait_s": 5}, None)
    host = hub.repos[REPO].host
    assert host.startswith(hub.url) and "hf.space" not in host
    assert release.meta["app_url"] == release.url == host
    assert release.health_latency_ms is not None and release.meta["health"] == "HTTP 200"
    assert ("GET", f"/api/spaces/{REPO}") in hub.requests

    hub.repos[REPO].host = None
    status = deployer.status(row(release))
    assert status.meta["app_url"] is None and status.url.endswith(f"/spaces/{REPO}")

    static = StaticSpaceDeployer(endpoint=hub.url, token=TOKEN, poll_s=0.01)
    page = static.deploy(bundles[0], {"repo_id": "tester/demo", "wait_s": 5}, None)
    assert page.meta["app_url"] == hub.repos["tester/demo"].host and page.url.endswith("/spaces/tester/demo")


def test_readme_front_matter_is_yaml_even_for_odd_titles(hub, tmp_path):
    """The title is quoted by SpaceCardData, not filtered: a colon, quotes or '#' survive as text."""
    import yaml

    bundle = make_bundle(tmp_path / "b", seed=0, version="r1-fp32-aaaa")
    bundle.model_json["dataset"] = 'digits: "v2" #1'
    for deployer, repo in ((DockerSpaceDeployer, REPO), (StaticSpaceDeployer, "tester/demo")):
        deployer(endpoint=hub.url, token=TOKEN).deploy(bundle, {"repo_id": repo}, None)
        text = hub.files(repo)["README.md"].decode()
        front = yaml.safe_load(text.split("---")[1])
        assert front["title"].startswith('pocketops digits: "v2" #1'), front
        assert front["sdk"] == deployer.sdk and front["emoji"] == "📱"
        assert f"# {front['title']}" in text and "r1-fp32-aaaa" in text
