"""Prefect tasks of the rollout: one small task per device step, and the per-device pipeline that runs them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from edgefleet.device.bundle import verify_version_dir
from edgefleet.device.contracts.manifest import Manifest
from edgefleet.device.errors import EdgefleetError
from edgefleet.device.registry import Registry
from edgefleet.flows.rollout import device as steps
from edgefleet.flows.rollout.inventory import DeviceSpec, Inventory
from edgefleet.flows.rollout.params import HealthGate
from edgefleet.flows.rollout.record import DeviceError, DeviceOutcome, StepRecord, utc_now
from edgefleet.flows.rollout.ssh import DeviceConnection

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
def prepare_version(registry: Registry, model: str, version: str, work_dir: Path,
                    public_key: str | None) -> PreparedVersion:
    """Downloads the version (once: reused when already downloaded and intact) and checks it."""
    from edgefleet.device.bundle import check_version_files, read_signed_manifest

    local_dir = work_dir / "versions" / model / version
    signed = registry.read_manifest(model, version)
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
    if public_key is not None:
        verify_version_dir(local_dir, public_key, model=model, version=version)
    total = sum(size for _, size in steps.version_files(local_dir, signed.manifest).values())
    return PreparedVersion(model, version, local_dir, signed.manifest, signed.manifest_sha256, total)


@task(name="preflight", cache_policy=NO_CACHE)
def preflight_task(connection: DeviceConnection, prepared: PreparedVersion, gate: HealthGate,
                   disk_headroom: float) -> steps.Preflight:
    return steps.preflight(connection, prepared.model, prepared.version, prepared.manifest_sha256,
                           prepared.total_bytes, gate, disk_headroom, "edgetpu" in prepared.manifest.variants)


@task(name="upload", cache_policy=NO_CACHE)
def upload_task(connection: DeviceConnection, root: str, prepared: PreparedVersion) -> steps.UploadResult:
    return steps.upload_missing(connection, root, prepared.local_dir, prepared.manifest)


@task(name="verify", cache_policy=NO_CACHE)
def verify_task(connection: DeviceConnection, staging: str) -> dict[str, Any]:
    return steps.verify_remote(connection, staging)


@task(name="activate", cache_policy=NO_CACHE)
def activate_task(connection: DeviceConnection, prepared: PreparedVersion, staging: str | None) -> None:
    steps.activate(connection, prepared.model, prepared.version, staging)


@task(name="wait-healthy", cache_policy=NO_CACHE)
def health_task(connection: DeviceConnection, prepared: PreparedVersion, before: str | None, activated_at: datetime,
                gate: HealthGate, monitor: MonitorAccess | None, previous_p95: float | None) -> steps.HealthResult:
    return steps.wait_healthy(connection, prepared.model, prepared.version, before, activated_at, gate, monitor,
                              previous_p95)


class _Steps:
    """Runs steps, recording each one's timing and outcome."""

    def __init__(self) -> None:
        self.records: list[StepRecord] = []

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, str]]:
        started_at, started = utc_now(), time.perf_counter()
        note = {"detail": ""}
        try:
            yield note
        except BaseException as error:
            message = error.message if isinstance(error, EdgefleetError) else f"{type(error).__name__}: {error}"
            self.records.append(StepRecord(name=name, ok=False, started_at=started_at,
                                           seconds=time.perf_counter() - started, detail=message[:500]))
            error.step = name  # type: ignore[attr-defined]  # which step failed, for the record
            raise
        self.records.append(StepRecord(name=name, ok=True, started_at=started_at,
                                       seconds=time.perf_counter() - started, detail=note["detail"]))


@task(name="roll-device", cache_policy=NO_CACHE, task_run_name="roll-device {device.id}")
def roll_device(inventory: Inventory, device: DeviceSpec, prepared: PreparedVersion, gate: HealthGate,
                disk_headroom: float, monitor: MonitorAccess | None) -> DeviceOutcome:
    """One device through preflight, upload, verify, activate and the health gate.

    Never raises for a device's own failure: the outcome says which step failed and why (a device that
    cannot be reached is a failed `connect` step after the connect timeout).
    """
    recorder = _Steps()
    state: dict[str, Any] = {"before": None, "transferred": 0, "reused": 0, "activated_at": None}
    connection = DeviceConnection(device, inventory.known_hosts)
    try:
        with recorder.step("connect"):
            connection.open()
        with recorder.step("preflight") as note:
            checked = preflight_task(connection, prepared, gate, disk_headroom)
            state["before"] = checked.before
            note["detail"] = f"current {checked.before}, {checked.probe.free_bytes / 1e6:.0f} MB free" + "".join(
                f"; doctor: {line}" for line in checked.doctor_notes)
        staging = None
        if not checked.already_installed:
            with recorder.step("upload") as note:
                uploaded = upload_task(connection, checked.probe.root, prepared)
                state["transferred"], state["reused"] = uploaded.bytes_transferred, uploaded.bytes_reused
                staging = uploaded.staging
                note["detail"] = f"sent {uploaded.bytes_transferred} B ({', '.join(uploaded.files_sent) or 'nothing'})"
            with recorder.step("verify"):
                verify_task(connection, staging)
        with recorder.step("activate") as note:
            # Noted before the attempt: an activation that timed out may still have switched `current`,
            # and rolling back to `before` is safe either way.
            state["activated_at"] = utc_now()
            activate_task(connection, prepared, staging)
            note["detail"] = f"{checked.before} -> {prepared.version}"
        previous_p95 = (checked.probe.status or {}).get("latency_ms_p95")
        with recorder.step("health") as note:
            health = health_task(connection, prepared, checked.before, state["activated_at"], gate, monitor,
                                 previous_p95)
            note["detail"] = f"{health.verdict.source}: {health.verdict.reason}"
        return DeviceOutcome(device_id=device.id, ok=True, before=checked.before, after=prepared.version,
                             steps=tuple(recorder.records), bytes_transferred=state["transferred"],
                             bytes_reused=state["reused"], activated_at=state["activated_at"],
                             healthy_after_s=health.healthy_after_s, health_source=health.verdict.source)
    except Exception as error:  # noqa: BLE001 - any failure of this device is recorded, the rollout goes on
        refused = isinstance(error, steps.DeviceRefused)
        if isinstance(error, EdgefleetError):
            detail = DeviceError(step=getattr(error, "step", "?"), kind=type(error).__name__,
                                 message=error.message, fix=error.fix)
        else:
            log.exception("unexpected error on device %s", device.id)
            detail = DeviceError(step=getattr(error, "step", "?"), kind=f"unexpected {type(error).__name__}",
                                 message=str(error))
        after = state["before"] if refused or state["activated_at"] is None else prepared.version
        return DeviceOutcome(device_id=device.id, ok=False, before=state["before"], after=after,
                             steps=tuple(recorder.records), error=detail, refused_by_device=refused,
                             bytes_transferred=state["transferred"], bytes_reused=state["reused"],
                             activated_at=state["activated_at"])
    finally:
        connection.close()


@task(name="rollback-device", cache_policy=NO_CACHE, task_run_name="rollback-device {device.id}")
def rollback_device(inventory: Inventory, device: DeviceSpec, model: str, version: str) -> StepRecord:
    """Makes `version` current again on the device; the step record says whether it worked."""
    started_at, started = utc_now(), time.perf_counter()
    try:
        with DeviceConnection(device, inventory.known_hosts) as connection:
            steps.rollback_to(connection, model, version)
    except EdgefleetError as error:
        return StepRecord(name="rollback", ok=False, started_at=started_at, seconds=time.perf_counter() - started,
                          detail=f"rollback to {version} failed: {error.message}"[:500])
    return StepRecord(name="rollback", ok=True, started_at=started_at, seconds=time.perf_counter() - started,
                      detail=f"rolled back to {version}")
