"""Device load: CPU, RAM, battery, temperature — with the Termux fallbacks.

On Android ``/proc/stat`` is denied, so psutil's CPU calls raise ``PermissionError``; battery
and temperature come from ``termux-battery-status`` (Termux:API), which can hang and is always
called with a timeout. Nothing here raises: what the device does not tell is ``None``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from functools import lru_cache

BATTERY_TIMEOUT_S = 3.0
_BATTERY_CACHE_S = 30.0
_battery_cache: tuple[float, dict] | None = None


_cpu_primed = False
CPU_FIRST_INTERVAL_S = 0.2


def _cpu_percent() -> float | None:
    global _cpu_primed
    import psutil

    try:
        # psutil measures since the previous call; a process's first call has none and says 0.0,
        # so the first reading measures over a short interval instead.
        value = psutil.cpu_percent(interval=None if _cpu_primed else CPU_FIRST_INTERVAL_S)
        _cpu_primed = True
        return float(value)
    except (PermissionError, OSError, RuntimeError):
        pass
    try:  # Android fallback: load average is readable where /proc/stat is not
        load1 = os.getloadavg()[0]
        return round(min(100.0, 100.0 * load1 / (os.cpu_count() or 1)), 1)
    except (OSError, AttributeError):
        return None


def _memory() -> tuple[float | None, float | None]:
    import psutil

    try:
        vm = psutil.virtual_memory()
        return (vm.total - vm.available) / 2**20, vm.total / 2**20
    except (PermissionError, OSError, RuntimeError):
        return None, None


@lru_cache(maxsize=1)
def _termux_battery_cmd() -> str | None:
    return shutil.which("termux-battery-status")


def _termux_battery() -> dict:
    cmd = _termux_battery_cmd()
    if not cmd:
        return {}
    try:
        out = subprocess.run([cmd], capture_output=True, text=True, timeout=BATTERY_TIMEOUT_S, check=False).stdout
        data = json.loads(out)
    except (subprocess.TimeoutExpired, OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    plugged = str(data.get("plugged") or "").upper()
    status = str(data.get("status") or "").upper()
    if status in ("CHARGING", "FULL") or plugged.startswith("PLUGGED"):
        charging: int | None = 1
    elif status in ("DISCHARGING", "NOT_CHARGING") or plugged == "UNPLUGGED":
        charging = 0
    else:  # neither field says: unknown, so a low reading never pauses on a guess
        charging = None
    return {
        "battery_percent": _num(data.get("percentage")),
        "charging": charging,
        "temperature_c": _num(data.get("temperature")),
    }


def _psutil_battery() -> dict:
    import psutil

    found: dict = {}
    try:
        bat = psutil.sensors_battery()
    except (PermissionError, OSError, RuntimeError, AttributeError, NotImplementedError):
        bat = None
    if bat is not None:
        found["battery_percent"] = _num(bat.percent)
        found["charging"] = None if bat.power_plugged is None else int(bool(bat.power_plugged))
    try:
        temps = psutil.sensors_temperatures()
    except (PermissionError, OSError, RuntimeError, AttributeError, NotImplementedError):
        temps = {}
    readings = [t.current for entries in (temps or {}).values() for t in entries if t.current]
    if readings:
        found["temperature_c"] = round(max(readings), 1)
    return found


def _num(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def battery(max_age: float = _BATTERY_CACHE_S) -> dict:
    """``battery_percent``, ``charging`` (0/1) and ``temperature_c``; each None when unknown.

    A reading younger than ``max_age`` seconds is reused (the Termux call takes a while);
    a paused run asks for fresher ones, so plugging in the charger resumes it promptly.
    """
    global _battery_cache
    t = time.monotonic()
    if _battery_cache and t - _battery_cache[0] < max_age:
        return dict(_battery_cache[1])
    found = {"battery_percent": None, "charging": None, "temperature_c": None}
    found.update({k: v for k, v in _psutil_battery().items() if v is not None})
    found.update({k: v for k, v in _termux_battery().items() if v is not None})
    _battery_cache = (t, found)
    return dict(found)


def sample() -> dict:
    """One reading of the device's load; unknown values are None."""
    used, total = _memory()
    reading = {
        "cpu_percent": _cpu_percent(),
        "ram_used_mb": None if used is None else round(used, 1),
        "ram_total_mb": None if total is None else round(total, 1),
    }
    reading.update(battery())
    return reading


def wake_lock(acquire: bool = True) -> bool:
    """Take (or release) ``termux-wake-lock`` so Android keeps the CPU awake; False where absent."""
    cmd = shutil.which("termux-wake-lock" if acquire else "termux-wake-unlock")
    if not cmd:
        return False
    try:
        subprocess.run([cmd], timeout=BATTERY_TIMEOUT_S, check=False, capture_output=True)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return True
