"""The rollout record: what happened to each device (before, after, steps, timings, errors).

Kept in the registry as `rollouts/<id>.json` (compare-and-swap writes) and shown as a Prefect table
artifact. Re-running a rollout reads it back and skips the devices already `done`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.flows.fleet.steps import StepRecord, utc_now
from edgefleet.flows.registry import RegistryWriter, rollout_key
from edgefleet.flows.rollout.verdict import Sample, Verdict
from edgefleet.kernel.errors import EdgefleetError

RECORD_SCHEMA = 4  # 2: canary verdicts per wave; 3: the wave plan seed; 4: `pull`, a staged pull rollout's progress
# (an older record reads as one without)
DeviceState = Literal["pending", "done", "failed", "rolled_back", "skipped"]
RolloutState = Literal["running", "halted", "completed"]


class DeviceError(BaseModel):
    """Why a device failed: the step and the message (and fix) the step raised."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step: str
    kind: str
    message: str
    fix: str | None = None


class DeviceResult(BaseModel):
    """Where one device stands after its pipeline: what a run's outcome says, and the record keeps."""

    model_config = ConfigDict(extra="forbid")

    device_id: str
    before: str | None = None
    after: str | None = None
    error: DeviceError | None = None
    refused_by_device: bool = False
    """The agent refused the version (smoke test) and put its previous version back by itself."""
    bytes_transferred: int = 0
    bytes_reused: int = 0
    activated_at: datetime | None = None
    healthy_after_s: float | None = None
    health_source: str | None = None


class DeviceOutcome(DeviceResult):
    """What one device's pipeline did in one run (a task result)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    steps: tuple[StepRecord, ...] = ()
    before_sample: Sample | None = None
    """What the agent reported for the version it ran before (the control when there is no monitor)."""


class DeviceRecord(DeviceResult):
    """A device in the rollout record (updated across runs)."""

    wave: int
    state: DeviceState = "pending"
    steps: list[StepRecord] = Field(default_factory=list)
    rolled_back_to: str | None = None
    attempts: int = 0

    def fail(self, step: str, kind: str, message: str, fix: str | None = None) -> None:
        """Marks the device failed after its own pipeline passed (e.g. the wave's canary verdict)."""
        self.state = "failed"
        self.error = DeviceError(step=step, kind=kind, message=message[:500], fix=fix)

    def apply(self, outcome: DeviceOutcome) -> None:
        """Takes in one run's outcome (the `before` of the first run is kept: it is what to roll back to)."""
        first_before = self.before  # the first known version is what "everything this rollout changed" restores
        for name in DeviceResult.model_fields:
            setattr(self, name, getattr(outcome, name))
        self.before = first_before if first_before is not None else outcome.before
        self.attempts += 1
        self.state = "done" if outcome.ok else "failed"
        self.steps = list(outcome.steps)
        self.rolled_back_to = None


class HaltInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    wave: int
    failed: tuple[str, ...]
    reason: str
    halted_by: tuple[str, ...] = ()
    """The canary metrics that failed, or ("failure_threshold",) for hard device failures."""


class WaveVerdict(BaseModel):
    """The canary judgement of one wave."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    wave: int
    devices: tuple[str, ...]
    source: str
    judged_at: datetime
    seconds_after_activation: float
    verdict: Verdict


class ShadowOutcome(BaseModel):
    """(record 4) A pull rollout's shadow wave (issue 25): the share that ran the version as a shadow, its
    devices (the first wave's), and the verdict on their pairs (`flows.rollout.shadow`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    share_bp: int
    devices: tuple[str, ...]
    result: Literal["pass", "fail"]
    reason: str
    judged_at: datetime
    table: tuple[dict[str, str], ...] = ()
    """The verdict's rows (metric, result, value, limit, devices), as the artifact shows them."""


class PullProgress(BaseModel):
    """(record 4) A staged rollout to pull-mode devices (`flows.rollout.pull_flow`): the shares signed so far."""

    model_config = ConfigDict(extra="forbid")

    replaces: str | None = None
    """The version the rollout replaces (what devices outside the share run)."""
    shares: list[int] = Field(default_factory=list)
    """The share (basis points) of each wave started, in order; a passed wave has a verdict."""
    passed: list[int] = Field(default_factory=list)
    """The shares whose wave passed."""
    rate: int | None = None
    """The current rate of an exponential schedule (devices per wave)."""
    sent_back: bool = False
    """A halt signed share 0: every device the rollout moved goes back to `replaces`."""
    shadow: ShadowOutcome | None = None
    """The shadow wave before the first wave, when the rollout had one."""

    def restart(self) -> None:
        """A re-run after a halt that sent the moved devices back: no passed wave holds any more, so the rollout
        starts again at its first wave (watched and judged like the first time; `shares` keeps the history)."""
        self.passed.clear()
        self.rate = None
        self.sent_back = False


class RolloutRecord(BaseModel):
    """The whole rollout."""

    model_config = ConfigDict(extra="forbid")

    record_schema: int = RECORD_SCHEMA
    rollout_id: str
    model: str
    version: str
    manifest_sha256: str
    channel: str | None = None
    state: RolloutState = "running"
    rollback_policy: str = "failed"
    waves: list[list[str]] = Field(default_factory=list)
    wave_seed: int | None = None
    """The seed of the random wave order (kept: a re-run plans the same waves)."""
    devices: dict[str, DeviceRecord] = Field(default_factory=dict)
    halted: HaltInfo | None = None
    verdicts: list[WaveVerdict] = Field(default_factory=list)
    channel_moved: bool = False
    pull: PullProgress | None = None
    """Set for a staged rollout to pull-mode devices (no SSH: the devices follow the signed share)."""
    runs: int = 0
    started_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)

    def begin_run(self, waves: list[list[str]], rollback_policy: str) -> None:
        """Starts a run (the first or a resumed one) over `waves`: devices already in the record keep their
        state and history (a done device is skipped), new ones are pending; a device moved to another wave
        says so."""
        self.runs += 1
        self.state, self.halted, self.rollback_policy, self.waves = "running", None, rollback_policy, waves
        for wave_number, wave in enumerate(waves, 1):
            for device_id in wave:
                self.devices.setdefault(device_id, DeviceRecord(device_id=device_id, wave=wave_number)).wave = \
                    wave_number

    def todo(self, wave: list[str]) -> list[str]:
        """The wave's devices this run works on: all but those done in an earlier run."""
        return [device_id for device_id in wave if self.devices[device_id].state != "done"]

    def split(self, device_ids: list[str]) -> tuple[list[str], list[str]]:
        """(failed, up) among `device_ids` after their run: those whose pipeline failed, those on the version."""
        return ([device_id for device_id in device_ids if self.devices[device_id].state == "failed"],
                [device_id for device_id in device_ids if self.devices[device_id].state == "done"])

    def count(self, state: DeviceState) -> int:
        return sum(1 for device in self.devices.values() if device.state == state)

    def verdict_tables(self) -> list[tuple[str, list[dict[str, str]]]]:
        """(title, rows) of each wave's canary verdict, for the artifact and `edgefleet rollout show`."""
        return [(f"wave {item.wave} canary ({item.source}, control {item.verdict.control}): "
                 f"{item.verdict.result.upper()} - {item.verdict.reason}", item.verdict.table())
                for item in self.verdicts]

    def table(self) -> list[dict[str, object]]:
        """One row per device, for the Prefect table artifact and `edgefleet rollout show`."""
        rows = []
        for device in self.devices.values():
            rows.append({
                "device": device.device_id, "wave": device.wave, "state": device.state,
                "before": device.before or "-", "after": device.after or "-",
                "steps": " ".join(f"{s.name}{'' if s.ok else '!'}:{s.seconds:.1f}s" for s in device.steps),
                "healthy_after_s": "-" if device.healthy_after_s is None else f"{device.healthy_after_s:.1f}",
                "bytes_sent": device.bytes_transferred,
                "error": "" if device.error is None else f"[{device.error.step}] {device.error.message}",
            })
        return rows


def first_activation(record: RolloutRecord, device_ids: list[str]) -> datetime:
    """The earliest activation among `device_ids` (now when none was activated)."""
    times = [record.devices[device_id].activated_at for device_id in device_ids]
    present = [moment for moment in times if moment is not None]
    return min(present) if present else utc_now()


def changed_devices(record: RolloutRecord, version: str) -> list[str]:
    """Every device this rollout changed: on the new version now, or refused it (and rolled back itself)."""
    return [device.device_id for device in record.devices.values()
            if device.state in ("done", "failed") and (device.after == version or device.refused_by_device)]


class RecordStore:
    """Reads and writes one rollout record in the registry, with compare-and-swap on each write."""

    def __init__(self, registry: RegistryWriter, rollout_id: str) -> None:
        self.registry = registry
        self.key = rollout_key(rollout_id)
        self._generation = 0

    def load(self) -> RolloutRecord | None:
        value, self._generation = self.registry.read_json(self.key)
        if value is None:
            return None
        try:
            return RolloutRecord.model_validate(value)
        except ValueError as error:
            raise EdgefleetError(f"rollout record {self.registry.describe(self.key)} is unreadable: {error}",
                                 "start a new rollout with another rollout_id, or delete the record") from None

    def save(self, record: RolloutRecord) -> None:
        """Writes the record; a concurrent writer (another run of the same rollout) makes this fail."""
        record.updated_at = utc_now()
        self._generation = self.registry.put_json(self.key, record, expected_generation=self._generation)

    @property
    def uri(self) -> str:
        return self.registry.describe(self.key)
