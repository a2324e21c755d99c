"""Agent operations on a device, taking its connection first: one look at the agent and its store (`probe`),
and the device CLI's changes (`verify_remote`, `activate`, `rollback_to`).

The device is read with one small shell command (`probe`: the agent's `status.json`, the store's `current` /
`previous` pointers, its refusals, free disk space and the device's clocks: wall, boot (`/proc/uptime`) and boot
id, so a status's boot-clock stamp is judged against the same device's boot clock), so health polling costs no Python
start-up on the device; changes go through the device CLI (`edgefleet-agent verify / install / activate`),
which verifies signatures and switches pointers atomically.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from typing import Any

from edgefleet.flows.fleet.connection import DeviceConnection
from edgefleet.flows.fleet.shell import remote_path
from edgefleet.kernel.contracts.layout import (
    CURRENT_POINTER,
    MANIFEST_FILE,
    PREVIOUS_POINTER,
    STATUS_FILE,
    device_pointer,
    device_refused_file,
    device_version_dir,
)
from edgefleet.kernel.contracts.refusal import Refusal, parse_refusals
from edgefleet.kernel.contracts.status import AgentStatus, parse_status

PROBE_MARK = "EDGEFLEET-PROBE"
UPTIME_FILE = "/proc/uptime"
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True)
class DeviceProbe:
    """One look at a device."""

    root: str
    """The agent root, absolute."""
    now_epoch: float
    status: AgentStatus | None
    current: str | None
    previous: str | None
    refused: tuple[Refusal, ...]
    """The model's refusal list (empty when there is none or it cannot be read)."""
    free_bytes: int
    installed_manifest_sha256: str | None
    """sha256 of models/<model>/<version>/manifest.json when that version is installed."""
    uptime_s: float | None = None
    """Seconds since boot (`/proc/uptime`, read after the status; None: not Linux). The kernel's boot clock: the
    agent's `time.monotonic()` stamps (`AgentStatus.boot`) on a device that never suspended, never stepped by NTP."""
    boot_id: str | None = None
    """This boot's id (`/proc/sys/kernel/random/boot_id`; None: not Linux): a status stamped in another boot is
    from an agent of that boot."""


def probe_script(root: str, model: str, version: str) -> str:
    """The shell command `probe` runs: every path from the on-device layout (`kernel/contracts/layout.py`)."""
    r = remote_path(root)
    q = shlex.quote
    # Each value on its own line after a marker; files may be missing (agent never ran, model absent).
    return (
        f'mkdir -p {r} && cd {r} && echo {PROBE_MARK}; pwd -P; date +%s.%N; '
        f'readlink {q(device_pointer(model, CURRENT_POINTER))} || echo; '
        f'readlink {q(device_pointer(model, PREVIOUS_POINTER))} || echo; '
        f'df -Pk . | awk \'NR==2 {{print $4 * 1024}}\'; '
        f'(sha256sum {q(f"{device_version_dir(model, version)}/{MANIFEST_FILE}")} 2>/dev/null || echo -) '
        f'| cut -d" " -f1; '
        f'cat {q(device_refused_file(model))} 2>/dev/null | tr -d "\\n"; echo; '
        f'cat {q(STATUS_FILE)} 2>/dev/null | tr -d "\\n"; echo; '
        f'(cut -d" " -f1 {UPTIME_FILE} 2>/dev/null || echo); (cat {BOOT_ID_FILE} 2>/dev/null || echo)'
    )


def parse_probe(output: str) -> DeviceProbe:
    """Reads the probe script's output (what follows its marker: login banners before it are skipped)."""
    lines = output.split(PROBE_MARK, 1)[-1].split("\n")[1:]
    lines += [""] * (11 - len(lines))
    root, now, current, previous, free, manifest_sha, refused, status, uptime, boot_id = lines[:10]
    try:
        refusals = parse_refusals(refused)
    except ValueError:  # unreadable: as the device's own store does, read as no refusals
        refusals = ()
    return DeviceProbe(root=root.strip(), now_epoch=float(now), status=parse_status(status),
                       current=current.strip() or None, previous=previous.strip() or None,
                       refused=refusals, free_bytes=int(float(free or 0)),
                       installed_manifest_sha256=None if manifest_sha.strip() in ("", "-") else manifest_sha.strip(),
                       uptime_s=_seconds(uptime), boot_id=boot_id.strip() or None)


def _seconds(text: str) -> float | None:
    """A number of seconds the probe printed; None for none (no /proc/uptime) or an unreadable one."""
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def probe(connection: DeviceConnection, model: str, version: str) -> DeviceProbe:
    """Reads the device's agent status, pointers, refusals, free space and clock in one command.

    Raises:
        DeviceUnreachable, RemoteCommandError.
    """
    return parse_probe(connection.run(probe_script(connection.device.agent_root, model, version)).stdout)


def verify_remote(connection: DeviceConnection, staging: str) -> dict[str, Any]:
    """`edgefleet-agent verify STAGING --json` on the device (signature and every file).

    Raises:
        RemoteCommandError: the device's verification failed (its message says which file or key).
    """
    return json.loads(connection.agent("verify", staging, "--json").stdout)


def activate(connection: DeviceConnection, model: str, version: str, staging: str | None) -> None:
    """Installs the staged version (when given) and makes it current; the staging directory is removed.

    Raises:
        RemoteCommandError: install or activate failed on the device (its store is unchanged).
    """
    if staging is not None:
        connection.agent("install", staging, "--activate", "--json")
        connection.run(f"rm -rf {shlex.quote(staging)}", check=False)  # best effort: the version is in
    else:
        connection.agent("activate", model, version, "--json")


def rollback_to(connection: DeviceConnection, model: str, version: str) -> None:
    """Makes `version` current again (the agent swaps back within its watch interval)."""
    connection.agent("activate", model, version, "--json")
