"""Prefect tasks of the rollout: one small task per device step, and the per-device pipeline that runs them."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from edgefleet.device.trust.version_bundle import verify_version_dir
from edgefleet.flows.fleet import agent as agent_ops
from edgefleet.flows.fleet.connection import DeviceConnection
from edgefleet.flows.fleet.inventory import DeviceSpec, Inventory
from edgefleet.flows.fleet.steps import StepFailed, StepNote, StepRecord, record_step, utc_now
from edgefleet.flows.registry import RegistryWriter
from edgefleet.flows.rollout import device as steps
from edgefleet.flows.rollout.freshness import DeviceClock
from edgefleet.flows.rollout.judgement import (
    Judged,
    MonitorCollector,
    StatusCollector,
    StatusRead,
    StatusReader,
    WaveSubject,
    await_verdict,
    status_sample,
)
from edgefleet.flows.rollout.params import CanaryGate, HealthGate, LivenessCheck
from edgefleet.flows.rollout.record import DeviceError, DeviceOutcome
from edgefleet.flows.rollout.verdict import Sample
from edgefleet.flows.trust.signing_params import SigningParams
from edgefleet.kernel.contracts.manifest import Manifest
from edgefleet.kernel.errors import EdgefleetError, VerificationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedVersion:
    """A version downloaded from the registry and checked, ready to send to devices."""

    model: str
    version: str
    local_dir: Path
    manifest: Manifest
    manifest_sha256: str
    total_bytes: int
    signed_downgrade: bool = False
    """A verified channel pointer marks this version as a deliberate downgrade (devices may be moved down)."""


class MonitorAccess:
    """Reads the fleet monitor's state for the health gate (a connection per call: tasks run in threads)."""

    def __init__(self, config_path: str, model: str) -> None:
        from edgefleet.monitor import load_monitor_config

        self.config = load_monitor_config(Path(config_path))
        self.model = model

    def __call__(self, device_id: str, version: str, since: datetime) -> Any:
        from edgefleet.monitor import FleetStateError, open_fleet_store, version_health

        try:
            store = open_fleet_store(self.config, create=False)
        except FleetStateError:
            return None  # the monitor has not written anything yet: the agent's status is the fallback
        with store:
            return version_health(store, [device_id], self.model, version, since).devices[0]


@task(name="prepare-version", cache_policy=NO_CACHE)
def prepare_version(registry: RegistryWriter, model: str, version: str, work_dir: Path,
                    public_key: str, signed_downgrade: bool = False,
                    pointer_manifest_sha256: str | None = None) -> PreparedVersion:
    """Downloads the version (once: reused when already downloaded and intact) and verifies it against the
    release public key; when a signed pointer named it, its manifest must be the one the pointer names.

    Raises:
        VerificationError: the version does not verify, or is not the manifest the pointer names.
    """
    from edgefleet.device.trust.version_bundle import check_version_files, read_signed_manifest

    local_dir = work_dir / "versions" / model / version
    signed = registry.read_manifest(model, version)
    if pointer_manifest_sha256 is not None and signed.manifest_sha256 != pointer_manifest_sha256:
        raise VerificationError(
            f"the manifest of {model} {version} in {registry.uri} has sha256 {signed.manifest_sha256[:16]}..., the "
            f"signed channel pointer names {pointer_manifest_sha256[:16]}...: the manifest was replaced",
            "find out who replaced it (versions are immutable); promote a good version again",
        )
    usable = False
    if (local_dir / "manifest.json").is_file():
        try:
            check_version_files(local_dir, signed.manifest)
            usable = read_signed_manifest(local_dir).raw == signed.raw
        except EdgefleetError:
            usable = False
    if not usable:
        import shutil
        import tempfile

        local_dir.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=local_dir.parent))
        registry.download_version(model, version, temp)
        shutil.rmtree(local_dir, ignore_errors=True)
        temp.rename(local_dir)
    manifest = verify_version_dir(local_dir, public_key, model=model, version=version)
    if read_signed_manifest(local_dir).raw != signed.raw:  # what the judge and the record use is what verified
        raise VerificationError(
            f"the manifest of {model} {version} in {registry.uri} changed while the rollout read it (sha256 "
            f"{signed.manifest_sha256[:16]}... first, another for the download)",
            "find out who replaced it (versions are immutable); start the rollout again",
        )
    total = sum(size for _, size in steps.version_files(local_dir, manifest).values())
    return PreparedVersion(model, version, local_dir, manifest, signed.manifest_sha256, total, signed_downgrade)


@task(name="preflight", cache_policy=NO_CACHE)
def preflight_task(connection: DeviceConnection, prepared: PreparedVersion, gate: HealthGate,
                   disk_headroom: float) -> steps.Preflight:
    return steps.preflight(connection, prepared.model, prepared.version, prepared.manifest_sha256,
                           prepared.total_bytes, gate, disk_headroom, "edgetpu" in prepared.manifest.variants,
                           signed_downgrade=prepared.signed_downgrade)


@task(name="upload", cache_policy=NO_CACHE)
def upload_task(connection: DeviceConnection, root: str, prepared: PreparedVersion) -> steps.UploadResult:
    return steps.upload_missing(connection, root, prepared.local_dir, prepared.manifest)


@task(name="verify", cache_policy=NO_CACHE)
def verify_task(connection: DeviceConnection, staging: str) -> dict[str, Any]:
    return agent_ops.verify_remote(connection, staging)


@task(name="activate", cache_policy=NO_CACHE)
def activate_task(connection: DeviceConnection, prepared: PreparedVersion, staging: str | None) -> None:
    agent_ops.activate(connection, prepared.model, prepared.version, staging)


@task(name="wait-up", cache_policy=NO_CACHE)
def health_task(connection: DeviceConnection, prepared: PreparedVersion, activated_at: datetime,
                gate: LivenessCheck, monitor: MonitorAccess | None) -> steps.HealthResult:
    return steps.wait_healthy(connection, prepared.model, prepared.version, activated_at, gate, monitor)


def ssh_status_reader(inventory: Inventory, model: str, version: str) -> StatusReader:
    """Reads devices' agent status over SSH with the device's clocks (an unreachable device reads as None: its
    numbers are missing)."""
    def read(device_ids: Sequence[str]) -> dict[str, StatusRead | None]:
        statuses: dict[str, StatusRead | None] = {}
        for device_id in device_ids:
            try:
                with DeviceConnection(inventory.device(device_id), inventory.known_hosts) as connection:
                    seen = agent_ops.probe(connection, model, version)
                    statuses[device_id] = StatusRead(seen.status, DeviceClock.of(seen))
            except EdgefleetError as error:
                log.warning("canary: cannot read the status of %s: %s", device_id, error.message)
                statuses[device_id] = None
        return statuses
    return read


@task(name="move-channel", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def move_channel_task(registry: RegistryWriter, model: str, version: str, channel: str, signing: SigningParams,
                      by: str) -> None:
    """Points `channel` at `version` with a signed pointer (compare-and-swap in the registry; idempotent, so
    retried). The rollout put this version on the devices on purpose: a lower version is a signed downgrade."""
    from edgefleet.flows.rollout.promote import promote_signed

    promote_signed(registry, model, version, channel, signing, by=by, downgrade=True)


@task(name="canary-judgement", cache_policy=NO_CACHE, task_run_name="canary-judgement wave {wave}")
def judge_wave_task(wave: int, subject: WaveSubject, canary: CanaryGate, health: HealthGate, inventory: Inventory,
                    monitor_config: str | None, before: dict[str, Sample | None]) -> Judged:
    """Waits for the wave's canary verdict (see `judgement.py`): the monitor's numbers when there is a monitor
    and `health.source` allows it, else the agents' own status over SSH."""
    if monitor_config is not None and health.source != "agent":
        return await_verdict(subject, canary, MonitorCollector(monitor_config), "monitor",
                             poll_interval_s=health.poll_interval_s)
    collector = StatusCollector(ssh_status_reader(inventory, subject.model, subject.version), before,
                                max_age_s=health.status_max_age_s)
    return await_verdict(subject, canary, collector, "agent", poll_interval_s=health.poll_interval_s)


@dataclass
class DeviceRun:
    """One device's way through the rollout steps: what each step did, and what is known so far."""

    device_id: str
    steps: list[StepRecord] = field(default_factory=list)
    before: str | None = None
    transferred: int = 0
    reused: int = 0
    activated_at: datetime | None = None

    def step(self, name: str) -> AbstractContextManager[StepNote]:
        """Times one step and records it; a failure is re-raised as `StepFailed(name, cause)`."""
        return record_step(self.steps, name)

    def failed(self, failure: StepFailed, version: str) -> DeviceOutcome:
        """The outcome of a run that stopped at `failure` (the device ran `version` from the activation on,
        unless it refused it)."""
        cause = failure.cause
        refused = isinstance(cause, steps.DeviceRefused)
        if isinstance(cause, EdgefleetError):
            detail = DeviceError(step=failure.step, kind=type(cause).__name__, message=cause.message, fix=cause.fix)
        else:
            log.error("unexpected error on device %s at %s", self.device_id, failure.step, exc_info=cause)
            detail = DeviceError(step=failure.step, kind=f"unexpected {type(cause).__name__}", message=str(cause))
        after = self.before if refused or self.activated_at is None else version
        return DeviceOutcome(device_id=self.device_id, ok=False, before=self.before, after=after,
                             steps=tuple(self.steps), error=detail, refused_by_device=refused,
                             bytes_transferred=self.transferred, bytes_reused=self.reused,
                             activated_at=self.activated_at)


def _clock_note(checked: steps.Preflight) -> str:
    """The record's word on a status age judged on the device's wall clock (an agent without the boot clock)."""
    age = checked.status_age
    return f"; agent status {age.describe()}" if age is not None and age.note else ""


@dataclass(frozen=True)
class RollJob:
    """One device's rollout (`roll_device`): the version to it, through the liveness gate."""

    inventory: Inventory
    device: DeviceSpec
    prepared: PreparedVersion
    gate: LivenessCheck
    disk_headroom: float
    monitor: MonitorAccess | None


@task(name="roll-device", cache_policy=NO_CACHE, task_run_name="roll-device {job.device.id}")
def roll_device(job: RollJob) -> DeviceOutcome:
    """One device through preflight, upload, verify, activate and the liveness gate.

    Never raises for a device's own failure: the outcome says which step failed and why (a device that
    cannot be reached is a failed `connect` step after the connect timeout).
    """
    inventory, device, prepared, gate = job.inventory, job.device, job.prepared, job.gate
    disk_headroom, monitor = job.disk_headroom, job.monitor
    run = DeviceRun(device.id)
    connection = DeviceConnection(device, inventory.known_hosts)
    try:
        with run.step("connect"):
            connection.open()
        with run.step("preflight") as note:
            checked = preflight_task(connection, prepared, gate, disk_headroom)
            run.before = checked.before
            note.detail = f"current {checked.before}, {checked.probe.free_bytes / 1e6:.0f} MB free" + "".join(
                f"; doctor: {line}" for line in checked.doctor_notes) + _clock_note(checked)
        staging = None
        if not checked.already_installed:
            with run.step("upload") as note:
                uploaded = upload_task(connection, checked.probe.root, prepared)
                run.transferred, run.reused = uploaded.bytes_transferred, uploaded.bytes_reused
                staging = uploaded.staging
                note.detail = f"sent {uploaded.bytes_transferred} B ({', '.join(uploaded.files_sent) or 'nothing'})"
            with run.step("verify"):
                verify_task(connection, uploaded.staging)
        with run.step("activate") as note:
            # Noted before the attempt: an activation that timed out may still have switched `current`,
            # and rolling back to `before` is safe either way.
            run.activated_at = utc_now()
            activate_task(connection, prepared, staging)
            note.detail = f"{checked.before} -> {prepared.version}"
        with run.step("health") as note:
            health = health_task(connection, prepared, run.activated_at, gate, monitor)
            note.detail = f"{health.verdict.source}: {health.verdict.reason}"
        return DeviceOutcome(device_id=device.id, ok=True, before=checked.before, after=prepared.version,
                             steps=tuple(run.steps), bytes_transferred=run.transferred, bytes_reused=run.reused,
                             activated_at=run.activated_at, healthy_after_s=health.healthy_after_s,
                             health_source=health.verdict.source,
                             before_sample=status_sample(checked.probe.status, checked.before))
    except StepFailed as failure:  # any failure of this device is recorded; the rollout goes on
        return run.failed(failure, prepared.version)
    finally:
        connection.close()


@dataclass(frozen=True)
class RollbackJob:
    """One device switched back (`rollback_device`) to `version` of `model`."""

    inventory: Inventory
    device: DeviceSpec
    model: str
    version: str


@task(name="rollback-device", cache_policy=NO_CACHE, task_run_name="rollback-device {job.device.id}")
def rollback_device(job: RollbackJob) -> StepRecord:
    """Makes `job.version` current again on the device; the step record says whether it worked."""
    model, version = job.model, job.version
    started_at, started = utc_now(), time.perf_counter()
    try:
        with DeviceConnection(job.device, job.inventory.known_hosts) as connection:
            agent_ops.rollback_to(connection, model, version)
    except EdgefleetError as error:
        return StepRecord(name="rollback", ok=False, started_at=started_at, seconds=time.perf_counter() - started,
                          detail=f"rollback to {version} failed: {error.message}"[:500])
    return StepRecord(name="rollback", ok=True, started_at=started_at, seconds=time.perf_counter() - started,
                      detail=f"rolled back to {version}")
