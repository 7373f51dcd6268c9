"""Secrets end to end: train -> export -> deploy (Spaces and GCP on the loopback stand-ins) ->
status / rollback / stop, with fake secrets set the ways a user sets them, then every byte we
wrote or printed is scanned for them: 0 occurrences.

The Hugging Face token comes from HF_TOKEN, from huggingface_hub's token file (HF_HOME/token)
and from HF_TOKEN_PATH; the API key from POCKETOPS_API_KEY; the webhook URL from
POCKETOPS_WEBHOOK_URL. A stand-in that echoes the Authorization header in an error (as a
careless proxy does) checks the error paths as well as the happy ones.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import store
from tests.standins.gcp import GcpStandIn
from tests.standins.hf_hub import HubStandIn

ROOT = Path(__file__).resolve().parent.parent

HF_ENV = "hf_E2EenvTOKENq81PLxvZr"           # HF_TOKEN
HF_FILE = "hf_E2EfileTOKENk93WmQaYt"         # HF_HOME/token
HF_PATH = "hf_E2EpathTOKENr55YtBnVc"         # the file HF_TOKEN_PATH names
HF_BAD = "hf_E2ErejectedTOKENu7Hd2Ks"        # a token the Hub refuses (401)
API_KEY = "pk-E2E-apikey-7f3c9d1b2a"
WEBHOOK = "https://hooks.example.invalid/services/T0E2E/B0E2E/whsecretE2E9a8b7c6"
# Each secret, and a fragment of it, so a partial or re-formatted leak is caught too.
NEEDLES = [HF_ENV, HF_FILE, HF_PATH, HF_BAD, API_KEY, WEBHOOK, "E2EenvTOKEN", "E2EfileTOKEN", "E2EpathTOKEN",
           "E2ErejectedTOKEN", "apikey-7f3c9d1b", "whsecretE2E9a8b7c6"]
UNSET = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "POCKETOPS_API_KEY", "POCKETOPS_WEBHOOK_URL",
         "GOOGLE_APPLICATION_CREDENTIALS", "HF_OIDC_RESOURCE")


def leaks(data: bytes | str) -> list[str]:
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    return [n for n in NEEDLES if n.encode() in raw]


class Cli:
    """`pocketops ...` in subprocesses; keeps every stdout/stderr for the final scan."""

    def __init__(self, env: dict):
        self.env = env
        self.outputs: list[tuple[str, str]] = []

    def __call__(self, *argv: str, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
        full = {**self.env, **(env or {})}
        full = {k: v for k, v in full.items() if v is not None}
        proc = subprocess.run([sys.executable, "-m", "tui.cli", *argv], cwd=ROOT, env=full, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        self.outputs.append((" ".join(argv), proc.stdout + proc.stderr))
        if ok:
            assert proc.returncode == 0, f"{argv}: {proc.stderr}"
        return proc

    def json(self, *argv: str, **kw) -> dict:
        return json.loads(self(*argv, "--json", **kw).stdout.strip().splitlines()[-1])


@pytest.fixture
def stand_ins():
    with HubStandIn(token=HF_ENV) as hub, GcpStandIn(project="e2e-project") as cloud:
        hub.tokens |= {HF_FILE, HF_PATH}
        yield hub, cloud


def test_no_secret_reaches_the_store_logs_bundles_screens_or_output(stand_ins, tmp_path, monkeypatch, capsys):
    hub, cloud = stand_ins
    home, hf_home = tmp_path / "home", tmp_path / "hf"
    hf_home.mkdir()
    token_path = tmp_path / "elsewhere" / "hf-token"
    token_path.parent.mkdir()
    token_path.write_text(HF_PATH)
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(POCKETOPS_HOME=str(home), HF_HOME=str(hf_home), HF_ENDPOINT=hub.url, HF_HUB_DISABLE_TELEMETRY="1",
               POCKETOPS_API_KEY=API_KEY, POCKETOPS_WEBHOOK_URL=WEBHOOK, HF_TOKEN=HF_ENV,
               CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), NO_GCE_CHECK="True")
    cli = Cli(env)
    db_path = home / "pocketops.db"

    # -- train (tiny, 1 epoch) and export fp32 through the CLI -----------------------------------------
    cli("train", "--dataset", "digits", "--model", "mlp", "--preset", "tiny", "--epochs", "1",
        "--batch-size", "64", "--wait")
    db = store.connect(db_path)
    run_id = db.execute("SELECT MAX(id) FROM runs").fetchone()[0]
    cli("export", str(run_id), "--variants", "fp32", "--wait")
    variant = db.execute("SELECT id, path FROM variants WHERE run_id = ? AND name = 'fp32'", (run_id,)).fetchone()
    variant_id, onnx_path = variant[0], Path(variant[1])

    # -- a Docker Space: token from HF_TOKEN, then from huggingface_hub's token file ---------------------
    first = cli.json("deploy", str(variant_id), "--target", "spaces-docker", "--space", "tester/e2e-api")
    assert hub.repos["tester/e2e-api"].secrets == {"POCKETOPS_API_KEY": API_KEY}   # the Hub keeps it, we don't
    (hf_home / "token").write_text(HF_FILE)
    file_token = {"HF_TOKEN": None}
    second = cli.json("deploy", str(variant_id), "--target", "spaces-docker", "--space", "tester/e2e-api",
                      env=file_token)
    assert second["version"] == first["version"] + 1
    assert cli.json("deployments", "status", str(second["deployment_id"]), env=file_token)["status"] == "deploying"
    back = cli.json("deployments", "rollback", str(second["deployment_id"]), "--yes", env=file_token)
    cli("deployments", "stop", str(back["deployment_id"]), "--yes", env=file_token)
    assert hub.repos["tester/e2e-api"].stage == "PAUSED"
    # The .onnx went up through LFS, byte for byte (the Space's .gitattributes tracks *.onnx).
    assert "model.onnx" in hub.repos["tester/e2e-api"].head.lfs
    assert hub.files("tester/e2e-api")["model.onnx"] == onnx_path.read_bytes()

    # -- error paths: a refused token, and a failing create whose error quotes the Authorization header
    refused = cli("deploy", str(variant_id), "--target", "spaces-docker", "--space", "tester/e2e-api",
                  env={"HF_TOKEN": HF_BAD}, ok=False)
    assert refused.returncode == 1 and "rejected the token" in refused.stderr
    hub.fail["create"] = 500
    hub.fail_message["create"] = "upstream said: Authorization: {authorization}"
    failed = cli("deploy", str(variant_id), "--target", "spaces-docker", "--space", "tester/e2e-api",
                 env=file_token, ok=False)
    assert failed.returncode == 1 and "HTTP 500" in failed.stderr and len(failed.stderr.splitlines()) == 1
    hub.fail.clear()

    # -- a static Space through the worker's deploy job, token from HF_TOKEN_PATH --------------------
    from core import jobkinds
    from store import jobs

    job_id = jobkinds.queue(db, "deploy", {"variant_id": variant_id, "target": "spaces-static",
                                           "options": {"repo_id": "tester/e2e-demo"}})
    from core import paths

    log = paths.files_dir(db_path) / "worker.log"       # where the dashboard's background worker logs
    log.parent.mkdir(parents=True, exist_ok=True)
    hub.tokens.discard(HF_FILE)       # so the deploy below can only succeed with HF_TOKEN_PATH's token
    worker_env = {k: v for k, v in {**env, "HF_TOKEN": None, "HF_TOKEN_PATH": str(token_path)}.items() if v}
    with open(log, "ab") as out:
        subprocess.run([sys.executable, "-m", "core.worker", "--db", str(db_path), "--once"], cwd=ROOT,
                       env=worker_env, stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=300, check=True)
    job = jobs.get(db, job_id)
    assert job["status"] == "done", job
    assert "model.onnx" in hub.repos["tester/e2e-demo"].head.lfs

    # -- GCP through the CLI in this process (the Cloud clients take the stand-in's endpoint) ----------
    from google.auth.credentials import AnonymousCredentials

    from deployers import registry
    from tui import cli as tui_cli

    real_get = registry.get

    def get(target, **options):
        if target == "gcp":
            options.update(api_endpoint=cloud.url, project="e2e-project", credentials=AnonymousCredentials(),
                           poll_s=0.01, timeout_s=60)
        return real_get(target, **options)

    monkeypatch.setattr(registry, "get", get)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in UNSET:
        if key not in env:
            monkeypatch.delenv(key, raising=False)

    def in_process(*argv: str) -> int:
        code = tui_cli.main(list(argv))
        captured = capsys.readouterr()
        cli.outputs.append((" ".join(argv), captured.out + captured.err))
        return code

    assert in_process("deploy", str(variant_id), "--target", "gcp", "--function", "e2e") == 0
    assert in_process("deploy", str(variant_id), "--target", "gcp", "--function", "e2e", "--api-key", API_KEY,
                      "--json") == 0
    gcp_id = json.loads(cli.outputs[-1][1].strip().splitlines()[-1])["deployment_id"]
    assert in_process("deployments", "status", str(gcp_id)) == 0
    assert in_process("deployments", "rollback", str(gcp_id), "--yes", "--json") == 0
    gcp_back = json.loads(cli.outputs[-1][1].strip().splitlines()[-1])["deployment_id"]
    cloud.fail["get"] = 500
    cloud.fail_message["get"] = "backend echo: {authorization} " + WEBHOOK
    assert in_process("deployments", "status", str(gcp_back)) == 1
    assert "***" in cli.outputs[-1][1]
    cloud.fail.clear()
    assert in_process("deployments", "stop", str(gcp_back), "--yes") == 0
    function = next(iter(cloud.functions.values()), None)
    assert function is None or function.get("state") != "ACTIVE"

    # -- the Deploy panel, photographed -----------------------------------------------------------------
    from tui.app import make_app

    async def shoot() -> str:
        app = make_app(db_path, poll_interval=0.2, sample_device=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("p")
            panel = app.query_one("#panel-deploy")
            deadline = time.monotonic() + 60
            while len(panel.rows) < 3 and time.monotonic() < deadline:
                await pilot.pause(0.05)
            assert len(panel.rows) >= 3, panel.rows
            await pilot.pause()
            return app.export_screenshot()

    screenshot = asyncio.run(shoot())
    (tmp_path / "deploy.svg").write_text(screenshot)
    assert "e2e" in screenshot

    # -- scrub itself, in fresh processes (huggingface_hub reads HF_HOME / HF_TOKEN_PATH at import) ----
    code = ("import sys; from deployers.service import scrub; "
            "print(scrub(' | '.join(sys.argv[1:])))")
    quoted = [HF_FILE, HF_PATH, API_KEY, WEBHOOK, "/services/T0E2E/B0E2E/whsecretE2E9a8b7c6"]
    for extra in ({}, {"HF_TOKEN_PATH": str(token_path)}):   # the token file, then HF_TOKEN_PATH's file
        scrub_env = {k: v for k, v in {**env, "HF_TOKEN": None, **extra}.items() if v}
        proc = subprocess.run([sys.executable, "-c", code, *quoted], cwd=ROOT, env=scrub_env, capture_output=True,
                              text=True, timeout=120, check=True)
        masked = proc.stdout.strip().split(" | ")
        from_file = 0 if not extra else 1
        assert masked[from_file] == "***" and masked[2:] == ["***"] * 3, masked

    # -- the scan --------------------------------------------------------------------------------------
    found = {}
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
    rows = {table: db.execute(f'SELECT * FROM "{table}"').fetchall() for table in tables}
    for table, values in rows.items():
        if hit := leaks(json.dumps(values, default=str)):
            found[f"table {table}"] = hit
    assert any("deploy" in r for r in rows["jobs"]) and rows["events"] and len(rows["deployments"]) >= 7
    scanned = [p for p in home.rglob("*") if p.is_file()]
    names = {p.name for p in scanned}
    assert {"pocketops.db", "pocketops.db-wal", "worker.log"} <= names, names
    assert any(p.name == "model.onnx" and "bundle" in str(p) for p in scanned), "no bundle on disk to scan"
    for path in scanned + [tmp_path / "deploy.svg"]:
        if hit := leaks(path.read_bytes()):
            found[str(path)] = hit
    for argv, output in cli.outputs:
        if hit := leaks(output):
            found[f"output of `{argv}`"] = hit
    for repo_id, repo in hub.repos.items():          # what we pushed to the Spaces: no secret baked in
        for commit in repo.commits:
            for name, data in commit.files.items():
                if hit := leaks(data):
                    found[f"{repo_id}@{commit.id[:8]}:{name}"] = hit
    for name, data in cloud.uploads.items():
        if hit := leaks(data):
            found[f"gcp upload {name}"] = hit
    assert not found, found
    assert len(cli.outputs) >= 15 and len(scanned) >= 10
    # No huggingface_hub progress bars on the phone's screen or in worker.log either.
    assert not [argv for argv, output in cli.outputs if "LFS files" in output]
    assert "LFS files" not in log.read_text()


def test_scrub_imports_huggingface_hub_only_when_it_runs():
    """deployers.service must stay cheap to import: huggingface_hub loads only inside scrub."""
    code = ("import sys; import deployers.service as s; before = 'huggingface_hub' in sys.modules; "
            "s.scrub('x'); print(before, 'huggingface_hub' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    assert proc.stdout.split() == ["False", "True"]
