"""Pricing facts for the deploy targets as data, and pure functions that estimate a month.

Figures are list prices as of 2026 (see ../shared/FACTS.md); they are estimates, never bills:
re-check the providers' pages before quoting. Budgets on Google Cloud only alert, they do not cap.
"""
from __future__ import annotations

from dataclasses import dataclass, field

HOURS_PER_MONTH = 730.0   # the providers' own convention (365 * 24 / 12)
GIB = 1024 ** 3


@dataclass(frozen=True)
class CloudRunPricing:
    """Cloud Run request-based billing, tier-1 regions: billed only while a request is served."""
    vcpu_second_usd: float = 0.000024
    gib_second_usd: float = 0.0000025
    per_million_requests_usd: float = 0.40
    free_vcpu_seconds: float = 180_000
    free_gib_seconds: float = 360_000
    free_requests: float = 2_000_000


@dataclass(frozen=True)
class SpacesPricing:
    """Hugging Face Spaces hardware per hour; static Spaces are free for everyone."""
    hourly_usd: dict[str, float] = field(default_factory=lambda: {
        "cpu-basic": 0.0,      # free hardware, but Docker/Gradio on it need a paid plan (PRO)
        "cpu-upgrade": 0.03,
        "t4-small": 0.40,
        "l4x1": 0.80,
        "a10g-small": 1.00,
        "a100-large": 2.50,
    })
    sleeps_after_hours_free: float = 48.0


CLOUD_RUN = CloudRunPricing()
SPACES = SpacesPricing()


@dataclass(frozen=True)
class Traffic:
    """Assumed monthly traffic for an estimate; the defaults are stated in every plan's notes."""
    requests_per_month: float = 10_000
    latency_ms: float = 100.0        # billed time per request (instance time while serving)
    vcpu: float = 1.0
    memory_gib: float = 0.5

    def describe(self) -> str:
        """The assumptions in words, for a plan's notes."""
        return (f"{self.requests_per_month:,.0f} requests/month at {self.latency_ms:g} ms each, "
                f"{self.vcpu:g} vCPU and {self.memory_gib:g} GiB per instance")


@dataclass(frozen=True)
class Estimate:
    """A monthly estimate with its parts, so the plan can show where the money goes."""
    monthly_usd: float
    parts: dict[str, float]
    assumptions: str

    def to_dict(self) -> dict:
        """The estimate as JSON-ready fields."""
        return {"monthly_usd": self.monthly_usd, "parts": dict(self.parts), "assumptions": self.assumptions}


def cloud_run_monthly(traffic: Traffic = Traffic(), prices: CloudRunPricing = CLOUD_RUN) -> Estimate:
    """Cloud Run request-based cost of ``traffic`` after the monthly free tier (never negative)."""
    if traffic.requests_per_month < 0 or traffic.latency_ms < 0 or traffic.vcpu <= 0 or traffic.memory_gib <= 0:
        raise ValueError(f"traffic must be non-negative with positive vCPU and memory, found {traffic}")
    seconds = traffic.requests_per_month * traffic.latency_ms / 1000.0
    vcpu_s = max(0.0, seconds * traffic.vcpu - prices.free_vcpu_seconds)
    gib_s = max(0.0, seconds * traffic.memory_gib - prices.free_gib_seconds)
    billable_requests = max(0.0, traffic.requests_per_month - prices.free_requests)
    parts = {
        "vcpu": vcpu_s * prices.vcpu_second_usd,
        "memory": gib_s * prices.gib_second_usd,
        "requests": billable_requests / 1e6 * prices.per_million_requests_usd,
    }
    return Estimate(round(sum(parts.values()), 4), parts, traffic.describe())


def spaces_monthly(hardware: str = "cpu-basic", hours: float = HOURS_PER_MONTH,
                   prices: SpacesPricing = SPACES) -> Estimate:
    """Hardware cost of a Space running ``hours`` a month (a paid plan itself is not included)."""
    if hardware not in prices.hourly_usd:
        known = ", ".join(sorted(prices.hourly_usd))
        raise ValueError(f"unknown Spaces hardware {hardware!r}; expected one of: {known}")
    if hours < 0:
        raise ValueError(f"hours must be >= 0, found {hours}")
    cost = prices.hourly_usd[hardware] * hours
    return Estimate(round(cost, 4), {"hardware": cost}, f"{hardware} for {hours:g} h/month")


def static_monthly() -> Estimate:
    """Static Spaces (and a page served from the phone) cost nothing."""
    return Estimate(0.0, {}, "static hosting is free")


def free_tier_requests(traffic: Traffic = Traffic(), prices: CloudRunPricing = CLOUD_RUN) -> float:
    """How many requests a month fit in the Cloud Run free tier at this latency and size."""
    per_request_s = traffic.latency_ms / 1000.0
    limits = [prices.free_requests]
    if per_request_s > 0:
        limits.append(prices.free_vcpu_seconds / (per_request_s * traffic.vcpu))
        limits.append(prices.free_gib_seconds / (per_request_s * traffic.memory_gib))
    return min(limits)


PRICE_TABLE_DATE = "2026-01-01"   # when the figures above were last checked against the providers' pages


@dataclass(frozen=True)
class PriceTable:
    """The dated price table the cost arithmetic (core/costs.py) reads."""
    date: str = PRICE_TABLE_DATE
    cloud_run: CloudRunPricing = CLOUD_RUN
    spaces: SpacesPricing = SPACES
    hours_per_month: float = HOURS_PER_MONTH
    default_requests_per_month: float = Traffic().requests_per_month


def price_table() -> PriceTable:
    """The current price table."""
    return PriceTable()
