"""`doctor`'s checks of the host itself: the Python and TensorFlow Lite runtime the agent runs on, the store and
spool it writes, the disk they fill and the clock its signed pointers are judged by."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from edgefleet.device.doctor.report import DoctorLimits, ok
from edgefleet.device.runtime.probe import runtime_version
from edgefleet.kernel.findings import Finding, Status


def check_python(version: tuple[int, int, int] = sys.version_info[:3]) -> Finding:
    text = ".".join(map(str, version))
    if version[:2] < (3, 9):
        return Finding(name="python", status=Status.FAIL, detail=f"Python {text}",
                       fix="the agent needs Python 3.9-3.13: on Mendel Linux (3.7) use a Coral USB Accelerator on "
                           "a supported host instead")
    if version[:2] > (3, 13):
        return Finding(name="python", status=Status.WARN, detail=f"Python {text}: newer than the tested 3.13",
                       fix="use Python 3.9-3.13 if LiteRT has no wheel or misbehaves")
    return ok("python", f"Python {text} ({sys.executable})")


def check_runtime() -> Finding:
    runtime = runtime_version()
    if runtime.startswith("an unknown"):
        return Finding(name="runtime", status=Status.FAIL, detail="no TensorFlow Lite runtime is installed",
                       fix="pip install 'edgefleet[device]' (brings ai-edge-litert)")
    return ok("runtime", runtime)


def _writable_dir(path: Path) -> bool:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def check_writable(name: str, path: Path) -> Finding:
    target = path if path.suffix == "" else path.parent
    if path.exists() and path.is_file() and not os.access(path, os.W_OK):
        return Finding(name=name, status=Status.FAIL, detail=f"{path} is not writable",
                       fix=f"chown it to the agent's user (sudo chown edgefleet {path})")
    if not _writable_dir(target):
        return Finding(name=name, status=Status.FAIL, detail=f"{target} is not writable by this user",
                       fix=f"create it for the agent's user: sudo install -d -o edgefleet {target}")
    return ok(name, f"{path} writable")


def check_disk(root: Path, limits: DoctorLimits) -> Finding:
    existing = root
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    detail = f"{free / 1e6:.0f} MB free at {existing}"
    fix = "free space (edgefleet-agent models; remove old versions) or move the agent root"
    if free < limits.disk_fail_bytes:
        return Finding(name="disk", status=Status.FAIL, detail=detail, fix=fix)
    if free < limits.disk_warn_bytes:
        return Finding(name="disk", status=Status.WARN, detail=detail, fix=fix)
    return ok("disk", detail)


def check_clock(now: datetime, limits: DoctorLimits, synchronized: bool | None) -> Finding:
    if now < limits.clock_floor:
        return Finding(name="clock", status=Status.FAIL, detail=f"the clock says {now:%Y-%m-%d %H:%M} UTC",
                       fix="set the time and keep it synchronized: sudo timedatectl set-ntp true")
    if synchronized is False:
        return Finding(name="clock", status=Status.WARN, detail=f"{now:%Y-%m-%d %H:%M} UTC, not NTP-synchronized",
                       fix="sudo timedatectl set-ntp true (signed channel pointers expire)")
    return ok("clock", f"{now:%Y-%m-%d %H:%M} UTC")


def ntp_synchronized() -> bool | None:
    try:
        shown = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True,
                               text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    value = shown.stdout.strip()
    return {"yes": True, "no": False}.get(value) if shown.returncode == 0 else None
