"""Costs end to end: collectors with the real clients against the loopback stand-ins, budgets,
the hard-budget refusal (exit 3) and stop/resume, warn levels once a month, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import store
from deployers import costs
from store import costs as store_costs
from store import deployments as store_deployments
from store import jobs
from tests.standins.hf_hub import HubStandIn, Repo

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "demo-project"
SERVICE = f"projects/{PROJECT}/locations/us-central1/services/digits"


@pytest.fixture
def db(tmp_path):
    return store.connect(tmp_path / "p.db")


@pytest.fixture
def hub():
    with HubStandIn() as stand_in:
        yield stand_in


def hub_api(hub):
    import huggingface_hub

    return huggingface_hub.HfApi(endpoint=hub.url, token="hf_test_token")


def make_row(db, target: str, name: str, meta: dict, *, created_at: float, status: str = "running") -> dict:
    row = store_deployments.create(db, variant_id=None, target=target, name=name, meta=meta)
    db.execute("UPDATE deployments SET created_at = ?, status = ? WHERE id = ?", (created_at, status, row["id"]))
    return store_deployments.get(db, row["id"])


def sample_total(db, key: str, field: str) -> float:
    return sum(s["usage"].get(field, 0) for s in store_costs.samples(db, 0, 1e12) if s["key"] == key)


# -- Google Cloud: Cloud Monitoring with the real client --------------------------------------

def test_gcp_usage_comes_from_cloud_monitoring_and_a_second_pull_never_counts_a_point_twice(db):
    pytest.importorskip("google.cloud.monitoring_v3")
    from tests.standins.gcp import MonitoringStandIn

    now = float(int(time.time()) // 60 * 60)
    row = make_row(db, "gcp", "digits", {"service": SERVICE, "project": PROJECT}, created_at=now - 3 * 3600)
    with MonitoringStandIn(PROJECT) as mon:
        for minute in range(1, 3 * 60 + 30):           # a point per minute up to 30 min after `now`
            end = now - 3 * 3600 + minute * 60
            mon.add(costs.REQUEST_METRIC, "digits", end - 60, end, 10)
            mon.add(costs.INSTANCE_METRIC, "digits", end - 60, end, 1.5)
        mon.add(costs.REQUEST_METRIC, "other-service", now - 600, now - 540, 1000)   # not ours
        clients = costs.Clients(monitoring=mon.client())
        first = costs.collect(db, now=now, clients=clients)
        assert first["errors"] == [] and first["written"]["gcp"] == 1
        # Points ending in (created, now - lag]: the lag's points wait for the next pull.
        counted = int((3 * 3600 - costs.MONITORING_LAG_S) // 60)
        assert sample_total(db, f"deployment:{row['id']}", "requests") == 10 * counted
        # The first pull's last point ends exactly on its period's end (now - 4 min); the stand-in
        # returns it again to the next pull (its interval includes both ends): counted once.
        costs.collect(db, now=now + 600, clients=clients)
        counted_after = int((3 * 3600 + 600 - costs.MONITORING_LAG_S) // 60)
        assert sample_total(db, f"deployment:{row['id']}", "requests") == 10 * counted_after
        assert sample_total(db, f"deployment:{row['id']}", "instance_s") == pytest.approx(1.5 * counted_after)
        again = costs.collect(db, now=now + 600, clients=clients)   # the same pull repeated
        assert again["written"]["gcp"] == 0
        assert sample_total(db, f"deployment:{row['id']}", "requests") == 10 * counted_after
        filters = {q["filter"] for q in mon.queries}
        assert any('service_name = "digits"' in f and "request_count" in f for f in filters)
        assert any("billable_instance_time" in f for f in filters)
        mon.fail = "PERMISSION_DENIED"
        failed = costs.collect(db, now=now + 1800, clients=clients)
        assert len(failed["errors"]) == 1 and "PermissionDenied" in failed["errors"][0]
    summary = costs.month_summary(db, now=now + 600)
    dep = summary["platforms"]["gcp"]["deployments"][0]
    assert dep["usage"]["requests"] == 10 * counted_after and dep["month_to_date_usd"] == 0.0   # free tier


# -- Spaces: runtime and pause/restart with huggingface_hub -------------------------------------

def test_space_hours_follow_its_runtime_stage_and_hardware(db, hub):
    now = time.time()
    hub.repos["tester/demo"] = Repo("tester/demo", "docker", stage="RUNNING", hardware="t4-small")
    row = make_row(db, "spaces-docker", "tester/demo", {"repo_id": "tester/demo"}, created_at=now - 7200)
    clients = costs.Clients(hub=hub_api(hub))
    costs.collect(db, now=now, clients=clients)
    assert sample_total(db, f"deployment:{row['id']}", "hours") == pytest.approx(2.0)
    hub.repos["tester/demo"].stage = "SLEEPING"
    costs.collect(db, now=now + 1800, clients=clients)
    assert sample_total(db, f"deployment:{row['id']}", "hours") == pytest.approx(2.0)   # asleep: not billed
    summary = costs.month_summary(db, now=now + 1800)
    dep = summary["platforms"]["spaces"]["deployments"][0]
    assert dep["usage"]["hours_by_hardware"] == {"t4-small": pytest.approx(2.0)}


# -- hard budgets: after --------------------------------------------------------------------------

def _health(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_measured_spend_past_a_hard_budget_stops_the_space_and_the_cloud_run_service_and_resume_restarts(
        db, hub, tmp_path):
    pytest.importorskip("google.auth")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import run_v2

    from deployers.gcp import CloudRunFunctionDeployer
    from tests.standins.bundles import make_bundle
    from tests.standins.gcp import GcpStandIn, MonitoringStandIn

    now = time.time()
    with GcpStandIn(project=PROJECT) as cloud, MonitoringStandIn(PROJECT) as mon:
        gcp = CloudRunFunctionDeployer(api_endpoint=cloud.url, project=PROJECT, credentials=AnonymousCredentials(),
                                       poll_s=0.01, timeout_s=10)
        release = gcp.deploy(make_bundle(tmp_path / "b", seed=0, version="r1"), {"function_name": "digits"}, None)
        assert _health(release.url) == 200
        fn = make_row(db, "gcp", "digits", {**release.meta, "project": PROJECT}, created_at=now - 7200)
        db.execute("UPDATE deployments SET url = ? WHERE id = ?", (release.url, fn["id"]))
        hub.repos["tester/demo"] = Repo("tester/demo", "docker", stage="RUNNING", hardware="t4-small")
        space = make_row(db, "spaces-docker", "tester/demo", {"repo_id": "tester/demo"}, created_at=now - 7200)
        # Measured so far: 20 h of t4-small (8.00) and 400,000 s of instance time, 3 M requests
        # (220,000 vCPU-s over the tier = 5.28, 1 M requests over = 0.40): 13.68 against 10.
        store_costs.add_sample(db, key=f"deployment:{space['id']}", platform="spaces", deployment_id=space["id"],
                               period_start=now - 7200, period_end=now - 3600,
                               usage={"hardware": "t4-small", "hours": 20.0})
        store_costs.add_sample(db, key=f"deployment:{fn['id']}", platform="gcp", deployment_id=fn["id"],
                               period_start=now - 7200, period_end=now - 3600,
                               usage={"requests": 3_000_000, "instance_s": 400_000, "vcpu": 1.0, "memory_gib": 0.5})
        costs.set_budget(db, "all", 10, hard=True, warn="50,90", who="cli")
        services = run_v2.ServicesClient(transport="rest", credentials=AnonymousCredentials(),
                                         client_options={"api_endpoint": cloud.url})
        clients = costs.Clients(hub=hub_api(hub), monitoring=mon.client(), services=services, timeout_s=10)
        result = costs.refresh(db, clients=clients, now=now)
        assert sorted(s["target"] for s in result["stopped"]) == ["gcp", "spaces-docker"]
        assert hub.repos["tester/demo"].stage == "PAUSED"
        assert cloud.services[SERVICE]["scaling"]["scalingMode"] == "MANUAL"
        assert _health(release.url) == 503
        for row in (fn, space):
            current = store_deployments.get(db, row["id"])
            assert current["status"] == "stopped"
            assert "hard all budget" in store_costs.paused_reason(db, row["id"])
        log = store_costs.audit_log(db)
        assert [e["action"] for e in log if e["action"] == "paused"] == ["paused", "paused"]
        assert all(e["who"] == "worker" and e["figures"]["spent_usd"] > 10 for e in log if e["action"] == "paused")
        assert {e["figures"]["level"] for e in log if e["action"] == "warning"} == {50.0, 90.0}
        # Another refresh: nothing more to stop, nothing raised twice.
        again = costs.refresh(db, clients=clients, now=now + 60)
        assert again["stopped"] == [] and again["warnings"] == []
        # `deployments` and the panel read the reason from the row.
        assert {r["id"] for r in store_costs.paused(db)} == {fn["id"], space["id"]}
        from tui.commands.deployments import line
        from tui.panels.deploy import detail_lines

        shown = store_deployments.get(db, space["id"])
        assert "paused by the hard all budget" in line(shown) and f"budget resume {space['id']}" in line(shown)
        assert any(text.startswith("stopped by budget: paused by the hard all budget") for text in detail_lines(shown, []))
        # A confirmed resume restarts both.
        costs.resume(db, fn["id"], clients, who="dashboard")
        costs.resume(db, space["id"], clients, who="cli")
        assert cloud.services[SERVICE]["scaling"]["scalingMode"] == "AUTOMATIC" and _health(release.url) == 200
        assert hub.repos["tester/demo"].stage == "BUILDING"
        assert store_costs.paused_reason(db, fn["id"]) is None
        assert store_deployments.get(db, fn["id"])["status"] == "running"
        resumed = [e for e in store_costs.audit_log(db) if e["action"] == "resumed"]
        assert sorted(e["who"] for e in resumed) == ["cli", "dashboard"]
        with pytest.raises(costs.DeployError, match="not paused by a budget"):
            costs.resume(db, fn["id"], clients)


# -- warn levels ----------------------------------------------------------------------------------

def test_warn_levels_alert_once_per_level_per_month(db):
    store_costs.set_budget(db, "spaces", 10, hard=False, warn=[50, 90], who="cli")

    def summary(spent: float, month: str = "2026-01") -> dict:
        return {"month": month, "budgets": [{"scope": "spaces", "amount_usd": 10.0, "hard": False,
                                             "warn": [50.0, 90.0], "spent_usd": spent}]}

    assert costs.warn(db, summary(6)) == [("spaces", 50.0)]
    assert costs.warn(db, summary(7)) == []
    assert costs.warn(db, summary(9.5)) == [("spaces", 90.0)]
    assert costs.warn(db, summary(12)) == []
    warnings = [e for e in store_costs.audit_log(db) if e["action"] == "warning"]
    assert len(warnings) == 2


# -- hard budgets: before ---------------------------------------------------------------------------

def cli(tmp_path, *argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "POCKETOPS_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    env.pop("POCKETOPS_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "tui.cli", "--db", str(tmp_path / "p.db"), *argv],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_deploy_a_hard_budget_would_exceed_is_refused_with_exit_3_and_leaves_no_row_and_no_bundle(db, tmp_path):
    from tests._deploy_helpers import make_variant

    variant = make_variant(db, tmp_path / "p.db")
    assert cli(tmp_path, "budget", "set", "gcp", "1", "--hard").returncode == 0
    before = {p for p in (tmp_path).rglob("*")}
    done = cli(tmp_path, "deploy", str(variant), "--target", "gcp", "--project", PROJECT,
               "--requests-per-month", "50000000")
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "hard gcp budget $1.00" in lines[0] and "> $1.00" in lines[0]
    assert "--requests-per-month" in lines[0]
    assert store_deployments.list_all(db) == []
    assert db.execute("SELECT COUNT(*) FROM artifacts WHERE kind = 'bundle'").fetchone()[0] == 0
    new_files = {p for p in tmp_path.rglob("*")} - before
    assert not [p for p in new_files if "deployments" in p.parts or "bundles" in p.parts]
    refusals = store_costs.audit_log(db, action="refused")
    assert len(refusals) == 1 and refusals[0]["who"] == "cli"
    assert refusals[0]["figures"]["requests_per_month"] == 50_000_000
    # The plan shows the assumption it is costed at.
    plan = cli(tmp_path, "deploy", str(variant), "--target", "gcp", "--project", PROJECT,
               "--requests-per-month", "50000000", "--dry-run")
    assert plan.returncode == 0 and "50,000,000 requests/month" in plan.stdout


def test_bad_budget_input_is_one_line_and_changes_nothing(db, tmp_path):
    for argv, expected in ((("set", "all", "-1"), "non-negative"), (("set", "moon", "3"), "expected one of"),
                           (("set", "all", "5", "--warn", "120"), "120 is not a percent"),
                           (("set", "all", "ten"), "expected dollars")):
        done = cli(tmp_path, "budget", *argv)
        assert done.returncode == 2 and expected in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert store_costs.budgets(db) == [] and store_costs.audit_log(db) == []
    shown = cli(tmp_path, "costs", "--json")
    data = json.loads(shown.stdout)
    assert set(data) >= {"month", "price_table_date", "platforms", "total_usd", "projected_usd", "budgets",
                         "local_compute"}
    assert set(data["platforms"]) == {"local", "spaces", "gcp"}
    assert set(data["platforms"]["gcp"]) >= {"month_to_date_usd", "projected_usd", "free_tier_left", "source",
                                             "deployments"}
    assert set(data["local_compute"]) >= {"cpu_s", "battery_pct"}


# -- the periodic job ------------------------------------------------------------------------------

def test_an_idle_worker_queues_one_costs_job_when_due_and_never_piles_them_up(db):
    assert store_costs.queue_if_due(db, 900, since=time.time() - 1000) is None   # nothing to collect
    store_costs.set_budget(db, "all", 5, hard=False, warn=[], who="cli")
    assert store_costs.queue_if_due(db, 900, since=time.time() - 10) is None     # not due yet
    first = store_costs.queue_if_due(db, 900, since=time.time() - 1000)
    assert first is not None
    assert store_costs.queue_if_due(db, 0.0, since=0) is None                     # 0: off
    assert store_costs.queue_if_due(db, 1e-9, since=0) is None                    # one queued already
    assert [j["kind"] for j in jobs.list_jobs(db)] == ["costs"]
    from core import jobkinds

    assert jobkinds.payload_of(jobs.get(db, first)).who == "worker"


def test_the_worker_records_its_cpu_seconds_per_job(db, tmp_path):
    from core.worker import Worker

    store_costs.set_budget(db, "all", 5, hard=False, warn=[], who="cli")
    job_id = jobs.enqueue(db, "costs", {"refresh": True, "who": "worker"})
    Worker(tmp_path / "p.db").run_one(job_id)
    assert jobs.get(db, job_id)["status"] == "done", jobs.get(db, job_id)["error"]
    cpu = [s for s in store_costs.samples(db, 0, 1e12) if s["key"] == f"job:{job_id}"]
    assert len(cpu) == 1 and cpu[0]["usage"]["cpu_s"] >= 0 and cpu[0]["usage"]["kind"] == "costs"


# -- kill -9 -----------------------------------------------------------------------------------------

def test_a_pull_repeated_after_kill_9_does_not_double_count(tmp_path, hub):
    from tests._pace import Pace
    from tests.test_kill9 import kill9, start_worker, wait_for

    db_path = tmp_path / "data" / "p.db"
    db_path.parent.mkdir()
    db = store.connect(db_path)
    created = time.time() - 3600
    hub.repos["tester/demo"] = Repo("tester/demo", "docker", stage="RUNNING", hardware="t4-small")
    row = make_row(db, "spaces-docker", "tester/demo", {"repo_id": "tester/demo"}, created_at=created)
    pace = Pace(tmp_path, hold=["costs:collected"])
    os.environ.pop("HF_HUB_OFFLINE", None)
    hub_env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test_token"}
    saved = {k: os.environ.get(k) for k in hub_env}
    os.environ.update(hub_env)
    try:
        job_id = jobs.enqueue(db, "costs", {"refresh": True, "who": "worker"})
        worker = start_worker(db_path, pace)
        pace.wait_held("costs:collected", proc=worker, timeout=180)
        key = f"deployment:{row['id']}"
        written = [s for s in store_costs.samples(db, 0, 1e12) if s["key"] == key]
        assert len(written) == 1 and written[0]["usage"]["hours"] == pytest.approx(1.0, abs=0.05)
        kill9(worker)
        pace.set()                           # no hold: the next worker runs the job to the end
        again = start_worker(db_path, pace)
        try:
            wait_for(lambda: jobs.get(db, job_id)["status"] in jobs.FINAL, 180, "the costs job to finish")
        finally:
            again.terminate()
            again.wait(timeout=60)
        assert jobs.get(db, job_id)["status"] == "done", jobs.get(db, job_id)["error"]
        chained = sorted((s for s in store_costs.samples(db, 0, 1e12) if s["key"] == key),
                         key=lambda s: s["period_start"])
        assert len(chained) == 2 and chained[1]["period_start"] == chained[0]["period_end"]
        elapsed_h = (chained[-1]["period_end"] - created) / 3600
        assert sum(s["usage"]["hours"] for s in chained) == pytest.approx(elapsed_h)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_the_dashboards_deploy_job_is_refused_the_same_way_and_audited_as_the_dashboards(db, tmp_path):
    from core import jobkinds
    from core.worker import Worker
    from tests._deploy_helpers import make_variant

    variant = make_variant(db, tmp_path / "p.db")
    costs.set_budget(db, "all", 0.5, hard=True, warn="", who="dashboard")
    job_id = jobkinds.queue(db, "deploy", variant_id=variant, target="spaces-docker",
                            options={"space_id": "tester/demo", "hardware": "t4-small"})
    Worker(tmp_path / "p.db").run_one(job_id)
    job = jobs.get(db, job_id)
    assert job["status"] == "failed" and "refused by the hard all budget $0.50" in job["error"]
    assert store_deployments.list_all(db) == []
    refusal = store_costs.audit_log(db, action="refused")
    assert len(refusal) == 1 and refusal[0]["who"] == "dashboard" and refusal[0]["figures"]["hardware"] == "t4-small"


def test_a_stop_that_fails_is_recorded_and_does_not_end_the_refresh(db):
    class Unreachable:
        def get_service(self, **kwargs):
            raise ConnectionError("no route to run.googleapis.com")

    now = time.time()
    fn = make_row(db, "gcp", "digits", {"service": SERVICE, "project": PROJECT}, created_at=now - 7200)
    store_costs.add_sample(db, key=f"deployment:{fn['id']}", platform="gcp", deployment_id=fn["id"],
                           period_start=now - 7200, period_end=now - 3600,
                           usage={"requests": 9_000_000, "instance_s": 10, "vcpu": 1.0, "memory_gib": 0.5})
    costs.set_budget(db, "gcp", 1, hard=True, warn="", who="cli")
    result = costs.enforce(db, costs.month_summary(db, now=now), costs.Clients(services=Unreachable()))
    assert result == []
    failed = store_costs.audit_log(db, action="pause-failed")
    assert len(failed) == 1 and "no route" in failed[0]["message"]
    assert store_costs.paused_reason(db, fn["id"]) is None and store_deployments.get(db, fn["id"])["status"] == "running"


def test_a_budget_mirrored_to_cloud_billing_with_the_real_client_only_sets_google_thresholds(db):
    pytest.importorskip("google.cloud.billing.budgets_v1")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.billing import budgets_v1

    from tests.standins.gcp import GcpStandIn

    with GcpStandIn(project=PROJECT) as cloud:
        client = budgets_v1.BudgetServiceClient(transport="rest", credentials=AnonymousCredentials(),
                                                client_options={"api_endpoint": cloud.url})
        costs.set_budget(db, "gcp", 7.5, hard=True, warn="50,90", who="cli")
        name = costs.mirror_to_google(db, "gcp", "0123-4567-89AB", project=PROJECT, client=client)
        google = cloud.budgets[name]
        assert google["amount"]["specifiedAmount"] == {"currencyCode": "USD", "units": "7", "nanos": 500000000}
        assert [r["thresholdPercent"] for r in google["thresholdRules"]] == [0.5, 0.9, 1.0]
        assert google["budgetFilter"]["projects"] == [f"projects/{PROJECT}"]
        costs.set_budget(db, "gcp", 9, hard=True, warn="80", who="cli")
        assert costs.mirror_to_google(db, "gcp", "0123-4567-89AB", client=client) == name   # updated, not a second
        assert len(cloud.budgets) == 1 and [r["thresholdPercent"] for r in cloud.budgets[name]["thresholdRules"]] == [0.8, 1.0]
        assert "does not cap" in store_costs.audit_log(db, action="budget-mirror")[0]["message"]


def test_the_phones_server_counters_and_battery_are_collected_once_each(db, tmp_path):
    from store import telemetry
    from tests._serve_helpers import call, running_server
    from tests.standins.bundles import make_bundle

    bundle = make_bundle(tmp_path / "bundle", seed=3)
    with running_server(bundle.path) as srv:
        url = f"http://127.0.0.1:{srv.port}"
        row = make_row(db, "local", "local", {}, created_at=time.time() - 60)
        db.execute("UPDATE deployments SET url = ? WHERE id = ?", (url, row["id"]))
        for _ in range(3):
            call(srv.port, "POST", "/v1/predict", b"{}", {"Content-Type": "application/json"})
        costs.collect(db, now=time.time())
        key = f"deployment:{row['id']}"
        assert sample_total(db, key, "requests") == 3
        for _ in range(2):
            call(srv.port, "POST", "/v1/predict", b"{}", {"Content-Type": "application/json"})
        costs.collect(db, now=time.time() + 1)
        assert sample_total(db, key, "requests") == 5          # the counter's growth, not its value again
    for pct, charging in ((80, 0), (78, 0), (90, 1), (85, 0)):  # 2 + (charging: not spent) + 5
        telemetry.record(db, "w", {"battery_percent": pct, "charging": charging})
    costs.collect(db, now=time.time() + 2)
    costs.collect(db, now=time.time() + 3)
    summary = costs.month_summary(db, now=time.time() + 3)
    assert summary["local_compute"]["battery_pct"] == pytest.approx(7.0)
    assert summary["local_compute"]["requests"] == 5
    assert summary["platforms"]["local"]["month_to_date_usd"] == 0.0
