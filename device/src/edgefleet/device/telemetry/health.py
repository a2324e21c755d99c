"""Device health for telemetry: CPU temperature, uptime, memory, load, TPU present, spool counters.

Parsing (pure functions of the files' text) is kept apart from reading, so each format is tested with sample
text. Anything a platform does not have (no thermal zones in a container, no /proc on macOS) becomes None
rather than an error: health is reported as far as it is known.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from edgefleet.kernel.contracts.telemetry import Health

log = logging.getLogger(__name__)

PROC_ROOT = Path("/proc")
THERMAL_ROOT = Path("/sys/class/thermal")
_KIB_PER_MB = 1024.0
_MILLIDEGREES_PER_DEGREE = 1000.0
# Substrings of thermal zone types that measure the CPU/SoC on common boards: x86 package, Raspberry Pi
# (cpu-thermal), Coral Dev Board (cpu-thermal), Rockchip (soc-thermal). Other zones (battery, wifi, acpitz)
# are used only when none of these exists.
CPU_ZONE_HINTS = ("x86_pkg_temp", "cpu", "soc")


class ThermalZone(NamedTuple):
    """One /sys/class/thermal/thermal_zone*: its `type` and `temp` text (None when unreadable)."""

    type: str
    temp: str | None


class MemInfo(NamedTuple):
    """From /proc/meminfo, in megabytes (None when the field is missing)."""

    total_mb: float | None
    available_mb: float | None


# --- pure parsing -------------------------------------------------------------------------------------
def parse_thermal_temp(text: str) -> float | None:
    """Degrees Celsius from a thermal zone's `temp` (millidegrees, e.g. '45250\\n'); None when malformed."""
    try:
        return int(text.strip()) / _MILLIDEGREES_PER_DEGREE
    except ValueError:
        return None


def pick_cpu_temp(zones: Sequence[ThermalZone]) -> float | None:
    """The CPU temperature among thermal zones: a CPU-like zone first, else the hottest readable zone."""
    readings = [(zone.type.strip().lower(), parse_thermal_temp(zone.temp)) for zone in zones if zone.temp]
    readings = [(kind, temp) for kind, temp in readings if temp is not None]
    if not readings:
        return None
    cpu_like = [temp for kind, temp in readings if any(hint in kind for hint in CPU_ZONE_HINTS)]
    return max(cpu_like) if cpu_like else max(temp for _, temp in readings)


def parse_uptime(text: str) -> float:
    """Seconds since boot from /proc/uptime ('12345.67 45678.90\\n').

    Raises:
        ValueError: the text is not in that format.
    """
    fields = text.split()
    if not fields:
        raise ValueError("empty /proc/uptime")
    return float(fields[0])


def parse_meminfo(text: str) -> MemInfo:
    """MemTotal and MemAvailable (kB in the file) from /proc/meminfo, in MB."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if key in ("MemTotal", "MemAvailable") and fields:
            try:
                values[key] = float(fields[0]) / _KIB_PER_MB
            except ValueError:
                continue
    return MemInfo(values.get("MemTotal"), values.get("MemAvailable"))


# --- reading ------------------------------------------------------------------------------------------
def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def read_thermal_zones(thermal_root: Path = THERMAL_ROOT) -> list[ThermalZone]:
    """Every thermal_zone* under `thermal_root` (empty when the directory is absent)."""
    try:
        zone_dirs = sorted(thermal_root.glob("thermal_zone*"))
    except OSError:
        return []
    return [ThermalZone(_read_text(zone / "type") or "", _read_text(zone / "temp")) for zone in zone_dirs]


def read_health(
    tpu_present: bool = False,
    spool_depth: int = 0,
    spool_dropped: int = 0,
    *,
    proc_root: Path = PROC_ROOT,
    thermal_root: Path = THERMAL_ROOT,
) -> Health:
    """Reads the device's health now.

    Args:
        tpu_present: Whether an Edge TPU is attached (the runtime knows; health does not probe it).
        spool_depth: Messages waiting in the telemetry spool.
        spool_dropped: Messages the spool dropped because it was full.
        proc_root: Where /proc is (tests point it at sample files).
        thermal_root: Where /sys/class/thermal is.
    """
    uptime_text = _read_text(proc_root / "uptime")
    try:
        uptime_s = parse_uptime(uptime_text) if uptime_text is not None else 0.0
    except ValueError:
        log.debug("unreadable %s: %r", proc_root / "uptime", uptime_text)
        uptime_s = 0.0
    meminfo_text = _read_text(proc_root / "meminfo")
    memory = parse_meminfo(meminfo_text) if meminfo_text is not None else MemInfo(None, None)
    try:
        load_1m: float | None = os.getloadavg()[0]
    except OSError:
        load_1m = None
    return Health(
        cpu_temp_c=pick_cpu_temp(read_thermal_zones(thermal_root)),
        uptime_s=max(uptime_s, 0.0),
        mem_total_mb=memory.total_mb,
        mem_available_mb=memory.available_mb,
        load_1m=load_1m,
        tpu_present=tpu_present,
        spool_depth=spool_depth,
        spool_dropped=spool_dropped,
    )
