"""Health parsing on sample text from real devices, and reading from /proc and /sys laid out that way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgefleet.device.telemetry.health import (
    ThermalZone,
    parse_meminfo,
    parse_thermal_temp,
    parse_uptime,
    pick_cpu_temp,
    read_health,
    read_thermal_zones,
)

# /proc/meminfo as a Raspberry Pi 4 (4 GB) prints it (abridged).
MEMINFO_PI4 = """MemTotal:        3884428 kB
MemFree:         2905804 kB
MemAvailable:    3365924 kB
Buffers:           34108 kB
Cached:           552096 kB
SwapTotal:        102396 kB
"""


def test_parse_thermal_temp_millidegrees() -> None:
    assert parse_thermal_temp("45250\n") == pytest.approx(45.25)
    assert parse_thermal_temp("-5000") == pytest.approx(-5.0)
    assert parse_thermal_temp("garbage") is None
    assert parse_thermal_temp("") is None


def test_pick_cpu_temp_prefers_cpu_zones_then_the_hottest() -> None:
    zones = [
        ThermalZone("acpitz\n", "27800\n"),
        ThermalZone("x86_pkg_temp\n", "52000\n"),
        ThermalZone("iwlwifi_1\n", "61000\n"),
    ]
    assert pick_cpu_temp(zones) == pytest.approx(52.0)
    assert pick_cpu_temp([ThermalZone("cpu-thermal", "48312")]) == pytest.approx(48.312)  # Raspberry Pi
    assert pick_cpu_temp([ThermalZone("acpitz", "27800"), ThermalZone("pch", "33000")]) == pytest.approx(33.0)
    # Unreadable zones (EIO from a sleeping sensor) are skipped; none readable means unknown.
    assert pick_cpu_temp([ThermalZone("cpu-thermal", None), ThermalZone("acpitz", "30000")]) == pytest.approx(
        30.0
    )
    assert pick_cpu_temp([ThermalZone("cpu-thermal", None)]) is None
    assert pick_cpu_temp([]) is None


def test_parse_uptime_and_meminfo() -> None:
    assert parse_uptime("350735.47 234388.90\n") == pytest.approx(350735.47)
    with pytest.raises(ValueError):
        parse_uptime("")
    memory = parse_meminfo(MEMINFO_PI4)
    assert memory.total_mb == pytest.approx(3884428 / 1024)
    assert memory.available_mb == pytest.approx(3365924 / 1024)
    # Old kernels (< 3.14) have no MemAvailable.
    assert parse_meminfo("MemTotal: 1000 kB\nMemFree: 10 kB\n") == (pytest.approx(1000 / 1024), None)


def _fake_roots(tmp_path: Path, zones: dict[str, tuple[str, str]]) -> tuple[Path, Path]:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "uptime").write_text("1234.50 2000.00\n")
    (proc / "meminfo").write_text(MEMINFO_PI4)
    thermal = tmp_path / "thermal"
    thermal.mkdir()
    for name, (kind, temp) in zones.items():
        (thermal / name).mkdir()
        (thermal / name / "type").write_text(kind + "\n")
        (thermal / name / "temp").write_text(temp + "\n")
    return proc, thermal


def test_read_health_from_files(tmp_path: Path) -> None:
    proc, thermal = _fake_roots(
        tmp_path, {"thermal_zone0": ("cpu-thermal", "47750"), "thermal_zone1": ("gpu-thermal", "49000")}
    )
    health = read_health(
        tpu_present=True, spool_depth=7, spool_dropped=2, proc_root=proc, thermal_root=thermal
    )
    assert health.cpu_temp_c == pytest.approx(47.75)
    assert health.uptime_s == pytest.approx(1234.5)
    assert health.mem_total_mb == pytest.approx(3884428 / 1024)
    assert health.tpu_present is True
    assert (health.spool_depth, health.spool_dropped) == (7, 2)
    assert len(read_thermal_zones(thermal)) == 2


def test_read_health_without_thermal_or_proc_reports_none(tmp_path: Path) -> None:
    """A container or a non-Linux host: unknown values are None, not errors."""
    health = read_health(proc_root=tmp_path / "no-proc", thermal_root=tmp_path / "no-thermal")
    assert health.cpu_temp_c is None
    assert health.mem_total_mb is None and health.mem_available_mb is None
    assert health.uptime_s == 0.0


@pytest.mark.skipif(not Path("/proc/uptime").exists(), reason="needs Linux /proc")
def test_read_health_on_this_machine() -> None:
    health = read_health()
    assert health.uptime_s > 0
    assert health.mem_total_mb is not None and health.mem_total_mb > 0
    assert health.load_1m == pytest.approx(os.getloadavg()[0], abs=5.0)
