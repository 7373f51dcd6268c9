"""The device-load strip: CPU, RAM, battery, temperature. What the device does not tell shows as unknown."""
from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from core.fmt import fmt_bytes, fmt_used_of

UNKNOWN = "unknown"


def _pct(value) -> str:
    return UNKNOWN if value is None else f"{value:.0f}%"


def device_parts(sample: dict | None) -> list[tuple[str, str]]:
    """(label, value) pairs for a telemetry sample; None values read ``unknown``."""
    sample = sample or {}
    used, total = sample.get("ram_used_mb"), sample.get("ram_total_mb")
    if used is None:
        ram = UNKNOWN
    elif total:
        ram = fmt_used_of(used * 2**20, total * 2**20)
    else:
        ram = fmt_bytes(used * 2**20)
    battery = _pct(sample.get("battery_percent"))
    if battery != UNKNOWN and sample.get("charging"):
        battery += " charging"
    temp = sample.get("temperature_c")
    return [
        ("CPU", _pct(sample.get("cpu_percent"))),
        ("RAM", ram),
        ("Battery", battery),
        ("Temp", UNKNOWN if temp is None else f"{temp:.0f}°C"),
    ]


def device_line(sample: dict | None) -> str:
    return "  ".join(f"{label} {value}" for label, value in device_parts(sample))


class DeviceStrip(Widget):
    """One or two lines of device load; call :meth:`set_sample` with a telemetry row or sample."""

    DEFAULT_CSS = """
    DeviceStrip { height: auto; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.sample: dict | None = None
        self.source = ""

    def set_sample(self, sample: dict | None, source: str = "") -> None:
        self.sample, self.source = sample, source
        self.refresh(layout=True)

    @property
    def text(self) -> str:
        return device_line(self.sample)

    def get_content_height(self, container, viewport, width: int) -> int:
        return 1 if len(self.text) <= width else 2

    def render(self) -> Content:
        pieces: list = []
        for label, value in device_parts(self.sample):
            if pieces:
                pieces.append("  ")
            style = "$text-muted" if value == UNKNOWN else "$text"
            pieces += [(label + " ", "bold"), (value, style)]
        return Content.assemble(*pieces)
