"""How long does one costs refresh take against its 15-minute interval? Prints medians and ``ratio: X``.

A store with a month of synthetic hourly usage for 50 deployments (25 Cloud Run functions, 25
Docker Spaces; 2026-11-01 to 11-30 12:00 UTC, ~35,000 samples) and two budgets. Each repeat
moves the clock 15 minutes on and runs, in this one process:

* "arithmetic": ``deployers.costs.month_summary`` alone (store read + core/costs.py bill and
  projection) - the baseline part;
* "refresh": the whole job, ``deployers.costs.refresh``: the collectors with the real clients
  (google-cloud-monitoring over gRPC, huggingface_hub over HTTP) against the loopback
  stand-ins of tests/standins (one new period per deployment, 15 points per metric), then the
  summary, warn levels and the hard-budget check.

The benchmark code is single-threaded; the stand-ins answer from their own server threads
(gRPC: 2 worker threads; HTTP: a thread per connection). The last line is the median refresh
time over the 900 s interval (target < 1 %).

    python benchmarks/costs.py [--repeats 7] [--deployments 50] [--short]
"""
from __future__ import annotations

import argparse
import calendar
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import store  # noqa: E402
from deployers import costs  # noqa: E402
from store import costs as store_costs  # noqa: E402
from store import deployments as store_deployments  # noqa: E402
from store.db import dumps, transaction  # noqa: E402

PROJECT = "demo-project"
INTERVAL_S = 900.0


def seed(db, n: int, start: float, now: float, hub) -> None:
    """``n`` deployments (half gcp, half spaces-docker) with hourly samples from ``start`` to ``now``."""
    from tests.standins.hf_hub import Repo

    rows = []
    for i in range(n):
        if i % 2 == 0:
            name = f"fn-{i}"
            row = store_deployments.create(db, variant_id=None, target="gcp", name=name, meta={
                "project": PROJECT, "service": f"projects/{PROJECT}/locations/us-central1/services/{name}",
                "options": {"requests_per_month": 200_000}})
            usage = {"requests": 300, "instance_s": 40.0, "vcpu": 1.0, "memory_gib": 0.5}
            platform = "gcp"
        else:
            repo = f"tester/space-{i}"
            hub.repos[repo] = Repo(repo, "docker", stage="RUNNING", hardware="cpu-upgrade")
            row = store_deployments.create(db, variant_id=None, target="spaces-docker", name=repo,
                                           meta={"repo_id": repo, "options": {"hardware": "cpu-upgrade"}})
            usage = {"hardware": "cpu-upgrade", "stage": "RUNNING", "hours": 1.0}
            platform = "spaces"
        db.execute("UPDATE deployments SET status = 'running', created_at = ? WHERE id = ?", (start, row["id"]))
        t = start
        while t + 3600 <= now:
            rows.append((f"deployment:{row['id']}", platform, row["id"], t, t + 3600, dumps(usage), "measured", t))
            t += 3600
        if t < now:
            rows.append((f"deployment:{row['id']}", platform, row["id"], t, now, dumps(
                {**usage, **({"hours": (now - t) / 3600} if platform == "spaces" else {})}), "measured", t))
    with transaction(db):
        db.conn.executemany("""INSERT INTO usage_samples (key, platform, deployment_id, period_start, period_end,
                               usage, source, collected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""", rows)
    store_costs.set_budget(db, "all", 5000.0, hard=True, warn=[50, 90], who="cli")
    store_costs.set_budget(db, "spaces", 400.0, hard=False, warn=[50, 90], who="cli")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--deployments", type=int, default=50)
    parser.add_argument("--short", action="store_true", help="a quick check: 6 deployments, 3 days, 3 repeats")
    args = parser.parse_args(argv)
    n, repeats, days = (6, 3, 3) if args.short else (args.deployments, args.repeats, 29.5)

    import huggingface_hub

    from tests.standins.gcp import MonitoringStandIn
    from tests.standins.hf_hub import HubStandIn

    now = float(calendar.timegm((2026, 11, 30, 12, 0, 0)))
    start = now - days * 86_400
    with tempfile.TemporaryDirectory() as tmp, HubStandIn() as hub, MonitoringStandIn(PROJECT) as mon:
        db = store.connect(Path(tmp) / "bench.db")
        seed(db, n, start, now, hub)
        clients = costs.Clients(hub=huggingface_hub.HfApi(endpoint=hub.url, token="hf_test_token"),
                                monitoring=mon.client())
        samples = db.execute("SELECT COUNT(*) FROM usage_samples").fetchone()[0]
        print(f"{n} deployments, {samples:,} usage samples over {days:g} days; single-threaded; "
              f"stand-ins on loopback threads")
        arithmetic, refresh = [], []
        for r in range(repeats + 1):              # the first round warms the clients up; not counted
            window0 = now - costs.MONITORING_LAG_S
            now += INTERVAL_S
            for i in range(0, n, 2):
                for minute in range(15):
                    end = window0 + (minute + 1) * 60
                    mon.add(costs.REQUEST_METRIC, f"fn-{i}", end - 60, end, 5)
                    mon.add(costs.INSTANCE_METRIC, f"fn-{i}", end - 60, end, 0.7)
            t0 = time.perf_counter()
            summary = costs.month_summary(db, now=now)
            t1 = time.perf_counter()
            result = costs.refresh(db, clients=clients, now=now)
            t2 = time.perf_counter()
            if result["collected"]["errors"]:
                raise SystemExit(f"collector errors: {result['collected']['errors'][:3]}")
            if r:
                arithmetic.append(t1 - t0)
                refresh.append(t2 - t1)
        written = sum(result["collected"]["written"].values())
        print(f"last refresh: {written} new samples, month-to-date ${summary['total_usd']:.2f}, "
              f"projected ${result['projected_usd']:.2f}")
    a, f = statistics.median(arithmetic), statistics.median(refresh)
    print(f"arithmetic (summary only): median {a * 1000:.1f} ms over {repeats} repeats")
    print(f"refresh (collect + summary + warn + enforce): median {f * 1000:.1f} ms")
    print(f"refresh / arithmetic: {f / a:.2f}")
    print(f"ratio: {f / INTERVAL_S:.5f} of the {INTERVAL_S:.0f} s refresh interval ({f / INTERVAL_S * 100:.3f} %; "
          f"target < 1 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
