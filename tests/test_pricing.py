"""Cost estimates from the pricing facts: free tiers, paid hardware, bad input."""
import pytest

from deployers import pricing
from deployers.pricing import Traffic

pytestmark = pytest.mark.phone  # none of these need torch or onnx (make test-phone)


def test_default_traffic_fits_the_cloud_run_free_tier():
    est = pricing.cloud_run_monthly(Traffic(requests_per_month=10_000, latency_ms=50))
    assert est.monthly_usd == 0.0
    assert "10,000 requests/month" in est.assumptions


def test_cloud_run_bills_only_beyond_the_free_tier():
    # 3 M requests x 200 ms x 1 vCPU = 600,000 vCPU-s -> 420,000 billable x $0.000024 = $10.08
    # memory 0.5 GiB -> 300,000 GiB-s, inside the 360,000 free; requests: 1 M billable -> $0.40
    est = pricing.cloud_run_monthly(Traffic(requests_per_month=3_000_000, latency_ms=200, vcpu=1, memory_gib=0.5))
    assert est.parts["vcpu"] == pytest.approx(10.08)
    assert est.parts["memory"] == 0.0
    assert est.parts["requests"] == pytest.approx(0.40)
    assert est.monthly_usd == pytest.approx(10.48)


def test_cost_grows_with_latency():
    slow = pricing.cloud_run_monthly(Traffic(requests_per_month=5_000_000, latency_ms=400))
    fast = pricing.cloud_run_monthly(Traffic(requests_per_month=5_000_000, latency_ms=40))
    assert slow.monthly_usd > fast.monthly_usd > 0


def test_free_tier_requests_is_the_tightest_limit():
    # 100 ms, 1 vCPU: 180,000 vCPU-s / 0.1 s = 1.8 M requests < 2 M free requests
    assert pricing.free_tier_requests(Traffic(latency_ms=100)) == pytest.approx(1_800_000)
    assert pricing.free_tier_requests(Traffic(latency_ms=1)) == 2_000_000


def test_spaces_hardware_per_hour():
    assert pricing.spaces_monthly("cpu-basic").monthly_usd == 0.0
    assert pricing.spaces_monthly("cpu-upgrade", hours=730).monthly_usd == pytest.approx(21.90)
    assert pricing.spaces_monthly("t4-small", hours=10).monthly_usd == pytest.approx(4.0)
    assert pricing.static_monthly().monthly_usd == 0.0


def test_unknown_hardware_and_bad_traffic_are_named():
    with pytest.raises(ValueError, match="unknown Spaces hardware 'h100'.*cpu-basic"):
        pricing.spaces_monthly("h100")
    with pytest.raises(ValueError, match="traffic"):
        pricing.cloud_run_monthly(Traffic(requests_per_month=-1))
