"""What one device goes through in a rollout, as plain functions taking the device connection first.

preflight -> upload_missing -> verify_remote -> activate -> wait_healthy (up?) -> (done | rollback_to);
the wave's canary judgement then reads the agents' status (`probe`) when no fleet monitor is there.
`probe`, `verify_remote`, `activate` and `rollback_to` are agent operations (`edgefleet.flows.fleet.agent`);
here is the rollout's policy: what makes a device ready, what to send, when it counts as up.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edgefleet.device.doctor import DoctorReport, blocking_failures
from edgefleet.device.trust.version_bundle import sha256_file
from edgefleet.flows.fleet.agent import DeviceProbe, probe
from edgefleet.flows.fleet.connection import DeviceConnection, RemoteCommandError
from edgefleet.flows.rollout.freshness import DeviceClock, StatusAge, status_age
from edgefleet.flows.rollout.health import (
    LivenessVerdict,
    StatusBaseline,
    monitor_verdict,
    status_verdict,
)
from edgefleet.flows.rollout.params import HealthGate, LivenessCheck
from edgefleet.kernel.contracts.layout import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    device_incoming_dir,
    device_model_dir,
    is_version,
    version_sort_key,
)
from edgefleet.kernel.contracts.manifest import Manifest
from edgefleet.kernel.contracts.refusal import find_refusal
from edgefleet.kernel.contracts.status import AgentStatus
from edgefleet.kernel.errors import EdgefleetError

log = logging.getLogger(__name__)

class PreflightError(EdgefleetError):
    """A device is not ready for the rollout (agent not alive, disk full, version refused before...)."""


class DeviceRefused(EdgefleetError):
    """The device's agent refused the new version (failed smoke test) and rolled back by itself."""


class HealthTimeout(EdgefleetError):
    """The device did not become healthy on the new version in time, or became unhealthy."""


@dataclass(frozen=True)
class Preflight:
    probe: DeviceProbe
    before: str | None
    already_installed: bool
    doctor_notes: tuple[str, ...] = ()
    """The device's `doctor` failures that did not block this version (e.g. no TPU where the CPU may run)."""
    status_age: StatusAge | None = None
    """How old the agent's status was, and on which clock (its note says why not the boot clock)."""


@dataclass(frozen=True)
class UploadResult:
    staging: str
    """Where the version was assembled on the device (an installed version is never uploaded)."""
    bytes_transferred: int
    bytes_reused: int
    files_sent: tuple[str, ...]


@dataclass(frozen=True)
class HealthResult:
    verdict: LivenessVerdict
    healthy_after_s: float
    status: AgentStatus | None
    """The agent's status when it came up (None when it was never read)."""


def lower_version_refusal(device_id: str, model: str, *, current: str | None, version: str,
                          signed_downgrade: bool) -> PreflightError | None:
    """Why a device running `current` must not be moved to `version` (None: it may). Pure.

    A lower version than the device runs is sent only when a verified channel pointer marks it as a deliberate
    downgrade: over SSH the agent's own channel rules (its version floor) are not asked, so the rollout keeps
    them. A replayed old pointer, or a rollout naming an old version, moves nobody down.
    """
    if current is None or signed_downgrade or not is_version(current):
        return None
    if version_sort_key(version) >= version_sort_key(current):
        return None
    return PreflightError(
        f"device {device_id} runs {model} {current}; {version} is lower, and no signed pointer marks it as a "
        "deliberate downgrade",
        f"to move devices down on purpose, sign the downgrade (edgefleet registry promote {model} {version} "
        "--channel CHANNEL --downgrade), then roll out that channel (channel: CHANNEL, no version)",
    )


def preflight(connection: DeviceConnection, model: str, version: str, manifest_sha256: str, version_bytes: int,
              gate: HealthGate, disk_headroom: float, has_edgetpu_variant: bool = False, *,
              signed_downgrade: bool = False) -> Preflight:
    """Checks the device can take the version: reachable, agent alive, not moved down without a signed
    downgrade (`lower_version_refusal`), disk space, not refused before, and the host itself
    (`edgefleet-agent doctor`, see `doctor_preflight`).

    Raises:
        PreflightError: naming what is wrong and what to do.
        DeviceUnreachable, HostKeyError, RemoteCommandError.
    """
    device = connection.device
    seen = probe(connection, model, version)
    status = seen.status
    if status is None:
        raise PreflightError(f"device {device.id}: no agent status in {seen.root} (the agent never ran there)",
                             "install and start the agent (deploy-agent flow), or fix agent_root in fleet.yaml")
    age = status_age(status, DeviceClock.of(seen))
    if status.state != "running" or age.stale(gate.status_max_age_s):
        raise PreflightError(f"device {device.id}: the agent is not alive (state {status.state}, status "
                             f"{age.describe()})", "start the agent (deploy-agent flow restarts it), then re-run")
    lower = lower_version_refusal(device.id, model, current=seen.current, version=version,
                                  signed_downgrade=signed_downgrade)
    if lower is not None:
        raise lower
    refused = find_refusal(seen.refused, version, manifest_sha256)
    if refused is not None:
        raise PreflightError(
            f"device {device.id} refused {model} {version} before: {refused.reason}",
            "the version fails on this device: publish a fixed version; to retry this one anyway, clear the "
            f"refusal on the device (ModelStore.clear_refused('{model}'))")
    already = seen.installed_manifest_sha256 == manifest_sha256
    needed = 0 if already else int(version_bytes * disk_headroom)
    if seen.free_bytes < needed:
        raise PreflightError(f"device {device.id}: {seen.free_bytes / 1e6:.1f} MB free in {seen.root}, the version "
                             f"needs {needed / 1e6:.1f} MB ({disk_headroom:g}x its size)",
                             "free space on the device (remove old versions: edgefleet-agent models)")
    if seen.installed_manifest_sha256 is not None and not already:
        raise PreflightError(f"device {device.id} has {model} {version} installed with different content",
                             "versions are immutable: publish the change as a new version")
    notes = doctor_preflight(connection, has_edgetpu_variant)
    return Preflight(seen, seen.current, already, notes, age)


def doctor_preflight(connection: DeviceConnection, has_edgetpu_variant: bool) -> tuple[str, ...]:
    """Runs `edgefleet-agent doctor --json` on the device; raises on the failures that matter for the version.

    The Edge TPU's failures matter only when the version has an edgetpu variant and the device's agent requires
    the TPU (`inference.require_edgetpu`); otherwise the agent runs the CPU variant and they become notes.
    An agent without `doctor` (one from before it existed) is not held back: a note says so.

    Raises:
        PreflightError: listing every blocking failure with its fix.
    """
    device = connection.device
    result = connection.agent("doctor", "--json", check=False)
    try:
        report = DoctorReport.model_validate_json(result.stdout)
    except ValueError:
        log.warning("device %s: no doctor report (exit %s): %s", device.id, result.exit_code,
                    result.stderr.strip()[-300:])
        return (f"doctor unavailable (exit {result.exit_code}): update the agent (deploy-agent)",)
    blocking = blocking_failures(report, tpu_required=has_edgetpu_variant and report.tpu_required)
    if blocking:
        raise PreflightError(
            f"device {device.id}: doctor found " + "; ".join(f"{c.name}: {c.detail}" for c in blocking),
            " / ".join(f"{c.name}: {c.fix}" for c in blocking if c.fix) or "run `edgefleet-agent doctor` there")
    return tuple(f"{c.name}: {c.detail}" for c in report.failed)


def version_files(local_dir: Path, manifest: Manifest) -> dict[str, tuple[str, int]]:
    """name -> (sha256, size) of every file of a version, manifest.json and manifest.sig included."""
    files = {entry.name: (entry.sha256, entry.size) for entry in manifest.files}
    for name in (MANIFEST_FILE, SIGNATURE_FILE):
        files[name] = (sha256_file(local_dir / name), (local_dir / name).stat().st_size)
    return files


def upload_missing(connection: DeviceConnection, root: str, local_dir: Path, manifest: Manifest) -> UploadResult:
    """Assembles the version in `<root>/.incoming/<model>/<version>` sending only what the device lacks.

    A file whose sha256 is already on the device (in the staging directory, or in any installed version of
    the model) is not transferred: it is kept or copied there on the device.

    Raises:
        DeviceUnreachable, RemoteCommandError.
    """
    files = version_files(local_dir, manifest)
    staging = f"{root}/{device_incoming_dir(manifest.model, manifest.version)}"
    q_staging = shlex.quote(staging)
    sizes = sorted({size for _, size in files.values()})
    size_test = " -o ".join(f"-size {size}c" for size in sizes)
    keep = " ".join(f"! -name {shlex.quote(name)}" for name in files)
    listing = connection.run(
        f"mkdir -p {q_staging} && find {q_staging} -type f {keep} -delete && "
        f"find {shlex.quote(f'{root}/{device_model_dir(manifest.model)}')} {q_staging} -type f \\( {size_test} \\) "
        f"-exec sha256sum {{}} + 2>/dev/null; true").stdout
    on_device: dict[str, str] = {}
    for line in listing.splitlines():
        digest, _, path = line.partition("  ")
        if path:
            on_device.setdefault(digest, path)
            if path.startswith(staging + "/"):
                on_device[f"staged:{path[len(staging) + 1:]}"] = digest
    copies, sent, reused, transferred = [], [], 0, 0
    for name, (digest, size) in files.items():
        if on_device.get(f"staged:{name}") == digest:
            reused += size
        elif digest in on_device:
            copies.append(f"cp {shlex.quote(on_device[digest])} {shlex.quote(f'{staging}/{name}.part')} && "
                          f"mv {shlex.quote(f'{staging}/{name}.part')} {shlex.quote(f'{staging}/{name}')}")
            reused += size
        else:
            transferred += connection.put(local_dir / name, f"{staging}/{name}")
            sent.append(name)
    if copies:
        connection.run(" && ".join(copies))
    return UploadResult(staging, transferred, reused, tuple(sent))


MonitorQuery = Callable[[str, str, datetime], Any]
"""(device_id, version, since) -> DeviceVersionHealth from the fleet monitor, or None when there is none."""


def wait_healthy(connection: DeviceConnection, model: str, version: str, activated_at: datetime, gate: LivenessCheck,
                 monitor: MonitorQuery | None, clock: Callable[[], float] = time.monotonic) -> HealthResult:
    """Polls until the device is up on `version` (monitor first, the agent's status as fallback).

    Fails at once when the agent refuses the version (it rolls back by itself), when the device becomes
    unreachable, or when a source reports it down; fails at `gate.timeout_s` otherwise.

    Raises:
        DeviceRefused: the agent refused the version (smoke test); the device runs its previous version again.
        HealthTimeout: down, or not up in time (the last reason is given).
        DeviceUnreachable: the device went away.
    """
    device = connection.device
    started = clock()
    deadline = started + gate.timeout_s
    baseline: StatusBaseline | None = None
    ask_monitor = monitor if gate.source != "agent" else None
    verdict = LivenessVerdict("wait", "not checked yet", "agent")
    while True:
        seen = probe(connection, model, version)
        refused = find_refusal(seen.refused, version)
        if refused is not None:
            raise DeviceRefused(f"device {device.id} refused {model} {version} and rolled back to {seen.current}: "
                                f"{refused.reason}", "the version fails the device's smoke test: fix and re-release it")
        status, now = seen.status, DeviceClock.of(seen)
        if status is not None and clock() - started > gate.status_max_age_s:
            age = status_age(status, now)
            if age.stale(gate.status_max_age_s):
                raise HealthTimeout(f"device {device.id}: the agent stopped updating its status ({age.describe()}) "
                                    f"after {model} {version} was activated", "look at the agent's log on the device")
        if baseline is None and status is not None and status.version == version:
            baseline = StatusBaseline(status.swap_failures)
        health = ask_monitor(device.id, version, activated_at) if ask_monitor is not None else None
        if health is not None and health.known:
            verdict = monitor_verdict(health, gate)
        elif gate.source != "monitor":
            verdict = status_verdict(status, version, baseline, gate, now)
        else:
            verdict = LivenessVerdict("wait", "the fleet monitor has not heard from the device", "monitor")
        if verdict.state == "pass":
            return HealthResult(verdict, clock() - started, status)
        if verdict.state == "fail":
            raise HealthTimeout(f"device {device.id} is down on {model} {version} ({verdict.source}): "
                                f"{verdict.reason}", "look at the device's telemetry (edgefleet fleet device "
                                                      f"{device.id}); the rollout rolls it back per its policy")
        if clock() >= deadline:
            raise HealthTimeout(f"device {device.id} did not come up on {model} {version} within "
                                f"{gate.timeout_s:g} s ({verdict.source}: {verdict.reason})",
                                "check the device and its telemetry, or raise health.timeout_s")
        time.sleep(gate.poll_interval_s)


def is_remote_failure(error: BaseException) -> bool:
    return isinstance(error, RemoteCommandError)
