"""The `rollout` Prefect flow: a released version to devices over SSH, in health-gated waves.

    from edgefleet.flows.rollout.flow import rollout
    from edgefleet.flows.rollout.params import RolloutParams

    result = rollout(RolloutParams(inventory="fleet.yaml", registry="gs://b/edgefleet", model="birds",
                                   version="1.2.0", channel="stable", waves=[1, "10%", "100%"]))

Waves run one after the other; the devices of a wave run in parallel (at most `max_parallel` at once),
each through preflight, upload (only what is missing), verify, activate and the health gate. A failed
device is rolled back to the version it ran before. A wave whose failures exceed `failure_threshold`
halts the rollout: with `rollback_policy="all"` every device this rollout changed is rolled back too; the
devices of later waves are never touched. The record (`rollouts/<id>.json` in the registry, and a table
artifact) says which devices, which step and why; re-running the same rollout resumes it, skipping the
devices already done. When the last wave passes, `channel` is moved to the version (compare-and-swap).
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.flow_runs import pause_flow_run
from pydantic import BaseModel, ConfigDict

from edgefleet.flows.fleet.inventory import Inventory, load_inventory
from edgefleet.flows.fleet.parallel import run_each
from edgefleet.flows.registry import RegistryWriter, open_registry_writer
from edgefleet.flows.registry.staged import partly_staged
from edgefleet.flows.rollout.judgement import Judged, WaveSubject, most_common
from edgefleet.flows.rollout.params import RolloutParams
from edgefleet.flows.rollout.record import (
    DeviceOutcome,
    HaltInfo,
    RecordStore,
    RolloutRecord,
    WaveVerdict,
    changed_devices,
    first_activation,
    utc_now,
)
from edgefleet.flows.rollout.shadow_flow import run_shadow_wave
from edgefleet.flows.rollout.tasks import (
    MonitorAccess,
    PreparedVersion,
    RollbackJob,
    RollJob,
    judge_wave_task,
    move_channel_task,
    prepare_version,
    roll_device,
    rollback_device,
)
from edgefleet.flows.rollout.waves import (
    RollbackPlan,
    WaveDecision,
    decide_wave,
    halt_info,
    needs_judgement,
    plan_rollback,
    plan_waves,
    wave_order,
)
from edgefleet.flows.trust.pointer_readback import require_followable
from edgefleet.flows.trust.release_key import channel_signing_key
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.rollout import SHARE_BP_FULL
from edgefleet.kernel.errors import ConfigError, EdgefleetError

log = logging.getLogger(__name__)

FLOW_NAME = "rollout"


class RolloutResult(BaseModel):
    """What a rollout run did (also in the record)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rollout_id: str
    model: str
    version: str
    state: str
    record_uri: str
    done: int
    failed: int
    rolled_back: int
    pending: int
    channel: str | None
    channel_moved: bool
    bytes_transferred: int
    halted_reason: str | None
    halted_by: tuple[str, ...] = ()


class RolloutHalted(EdgefleetError):
    """A wave went over its failure threshold; the rollout stopped and rolled back per its policy."""

    def __init__(self, message: str, fix: str, result: RolloutResult) -> None:
        super().__init__(message, fix)
        self.result = result


@dataclass(frozen=True)
class ChosenVersion:
    """The version a rollout sends, and whether a signed pointer marks it as a deliberate downgrade."""

    version: str
    downgrade: bool = False
    """True only when the version comes from a verified channel pointer with `downgrade` set: then a device
    running a higher version may be moved down; otherwise preflight refuses that (`lower_version_refusal`)."""
    manifest_sha256: str | None = None
    """The manifest the signed pointer names (None for a rollout by version): the version sent must be it."""


def resolve_version(registry: RegistryWriter, params: RolloutParams, now: datetime | None = None) -> ChosenVersion:
    """The version to roll out: `params.version`, else the one `params.channel`'s pointer names, when that pointer
    verifies against `params.public_key` and has not expired.

    Raises:
        RegistryError: the channel does not exist.
        VerificationError: the channel's pointer is unsigned, forged, invalid or expired.
    """
    if params.version is not None:
        return ChosenVersion(params.version)
    checked = registry.read_channel_checked(params.model, params.channel, params.public_key)  # type: ignore[arg-type]
    return channel_version(require_followable(checked, now or datetime.now(UTC)))


def channel_version(pointer: ChannelPointer) -> ChosenVersion:
    """The one version a verified channel pointer names for every device (pure): its version; for a staged
    rollout (schema 3) at 100 % the new version, halted at 0 % the version it replaces.

    Raises:
        ConfigError: a staged rollout is partly applied: the channel names two versions, each device its side of
            the share (`edgefleet.device.staged`). Pushing either to every device would bypass the pull rollout's
            judged waves, and each pull-capable device's agent would move it back to its side.
    """
    stage = pointer.rollout
    staged = partly_staged(pointer)
    if stage is None or stage.share_bp >= SHARE_BP_FULL:
        return ChosenVersion(pointer.version, pointer.downgrade, pointer.manifest_sha256)
    if staged is None:  # halted at 0 %: every device runs (or goes back to) what it replaces
        return ChosenVersion(stage.replaces, False, stage.replaces_manifest_sha256)
    raise ConfigError(
        f"{staged}: an SSH rollout by channel would push one version to every device, past the staged rollout's "
        "judged waves",
        f"finish or halt the staged rollout (edgefleet rollout pull -c PULL.yaml with rollout_id {stage.id}; see "
        f"edgefleet rollout show {stage.id}), or give the whole channel one version (edgefleet registry promote "
        f"{pointer.model} VERSION --channel {pointer.channel}), or roll out a version on purpose (edgefleet "
        "rollout run --version VERSION)")


def _artifact_key(rollout_id: str) -> str:
    return "rollout-" + re.sub(r"[^a-z0-9-]+", "-", rollout_id.lower()).strip("-")


def _result(record: RolloutRecord, store: RecordStore) -> RolloutResult:
    return RolloutResult(
        rollout_id=record.rollout_id, model=record.model, version=record.version, state=record.state,
        record_uri=store.uri, done=record.count("done"), failed=record.count("failed"),
        rolled_back=record.count("rolled_back"), pending=record.count("pending"), channel=record.channel,
        channel_moved=record.channel_moved,
        bytes_transferred=sum(device.bytes_transferred for device in record.devices.values()),
        halted_reason=record.halted.reason if record.halted else None,
        halted_by=record.halted.halted_by if record.halted else ())


def _publish(record: RolloutRecord, store: RecordStore) -> None:
    store.save(record)
    summary = (f"Rollout **{record.rollout_id}**: {record.model} {record.version} — {record.state}; "
               f"{record.count('done')} done, {record.count('failed')} failed, "
               f"{record.count('rolled_back')} rolled back, {record.count('pending')} not reached. "
               f"Record: `{store.uri}`"
               + (f"\n\nHalted in wave {record.halted.wave}: {record.halted.reason}" if record.halted else ""))
    create_table_artifact(table=record.table(), key=_artifact_key(record.rollout_id), description=summary)
    if record.verdicts:
        rows = [{"wave": str(item.wave), **row} for item in record.verdicts for row in item.verdict.table()]
        titles = "\n".join(f"- {title}" for title, _ in record.verdict_tables())
        create_table_artifact(table=rows, key=_artifact_key(record.rollout_id) + "-canary",
                              description=f"Canary verdicts of rollout **{record.rollout_id}**:\n{titles}")


def _wave_subject(record: RolloutRecord, inventory: Inventory, prepared: PreparedVersion, wave_number: int,
                  up: list[str]) -> WaveSubject:
    reached = {device_id for wave in record.waves[:wave_number] for device_id in wave}
    return WaveSubject(
        model=record.model, version=record.version, devices=tuple(up),
        before=most_common([record.devices[device_id].before for device_id in up]),
        activated_at=first_activation(record, up),
        others=tuple(device.id for device in inventory.devices if device.id not in reached),
        reference=prepared.manifest.reference.distributions if prepared.manifest.reference else None,
        detector=prepared.manifest.task == "detection", label_count=prepared.manifest.label_count)


def _roll_back(inventory: Inventory, record: RolloutRecord, plan: RollbackPlan, max_parallel: int) -> None:
    """Carries out `plan`: switches devices back (one typed task each, `max_parallel` at once) and records where
    each one is."""
    for device_id in plan.already:
        device = record.devices[device_id]
        device.state, device.rolled_back_to = "rolled_back", device.before
    jobs = [RollbackJob(inventory, inventory.device(device_id), record.model, before)
            for device_id, before in plan.roll]
    for job, step in zip(jobs, run_each(rollback_device, jobs, max_workers=max_parallel), strict=True):
        device = record.devices[job.device.id]
        device.steps.append(step)
        if step.ok:
            device.state, device.rolled_back_to, device.after = "rolled_back", device.before, device.before


def _roll_wave(inventory: Inventory, params: RolloutParams, prepared: PreparedVersion, monitor: MonitorAccess | None,
               todo: list[str]) -> dict[str, DeviceOutcome]:
    """Rolls the wave's devices in parallel (one `roll-device` task each, given its `RollJob`); a device's failure
    is its outcome."""
    jobs = [RollJob(inventory, inventory.device(device_id), prepared, params.liveness, params.disk_headroom, monitor)
            for device_id in todo]
    return dict(zip(todo, run_each(roll_device, jobs, max_workers=params.max_parallel), strict=True))


def _judge(record: RolloutRecord, inventory: Inventory, params: RolloutParams, prepared: PreparedVersion,
           wave_number: int, up: list[str], outcomes: dict[str, DeviceOutcome]) -> Judged:
    """Waits for the wave's canary verdict and adds it to the record."""
    judged = judge_wave_task(wave_number, _wave_subject(record, inventory, prepared, wave_number, up),
                             params.canary, params.health, inventory, params.monitor_config,
                             {device_id: outcomes[device_id].before_sample for device_id in up})
    record.verdicts.append(WaveVerdict(
        wave=wave_number, devices=tuple(up), source=judged.source, judged_at=utc_now(),
        seconds_after_activation=(utc_now() - first_activation(record, up)).total_seconds(),
        verdict=judged.verdict))
    return judged


def _open_record(store: RecordStore, params: RolloutParams, prepared: PreparedVersion, rollout_id: str,
                 channel: str | None) -> RolloutRecord:
    record = store.load()
    if record is None:
        return RolloutRecord(rollout_id=rollout_id, model=prepared.model, version=prepared.version,
                             manifest_sha256=prepared.manifest_sha256, channel=channel,
                             rollback_policy=params.rollback_policy)
    if (record.model, record.version, record.manifest_sha256) != (prepared.model, prepared.version,
                                                                   prepared.manifest_sha256):
        raise ConfigError(f"rollout {rollout_id} in the registry is for {record.model} {record.version}, not "
                          f"{prepared.model} {prepared.version}",
                          "give this rollout another rollout_id (rollout ids name one version)")
    return record


def _run_wave(record: RolloutRecord, inventory: Inventory, params: RolloutParams,
              prepared: PreparedVersion, monitor: MonitorAccess | None, wave_number: int,
              todo: list[str]) -> tuple[list[str], WaveDecision]:
    """One wave: its devices rolled in parallel, the canary verdict over those that came up, the decision
    (`decide_wave`) and the rollbacks it asks for, all recorded. Returns (the hard failures, the decision)."""
    logger = get_run_logger()
    outcomes = _roll_wave(inventory, params, prepared, monitor, todo)
    for device_id, outcome in outcomes.items():
        record.devices[device_id].apply(outcome)
    hard_failed, up = record.split(todo)
    for device_id in hard_failed:
        error = record.devices[device_id].error
        logger.warning("wave %d: %s failed at %s: %s", wave_number, device_id,
                       error.step if error else "?", error.message if error else "?")
    verdict = None
    if needs_judgement(todo, hard_failed, up, params.failure_threshold):
        judged = _judge(record, inventory, params, prepared, wave_number, up, outcomes)
        verdict = judged.verdict
        logger.info("wave %d canary verdict (%s): %s - %s", wave_number, judged.source, verdict.result,
                    verdict.reason)
    decision = decide_wave(todo, hard_failed, up, verdict, params.failure_threshold, params.rollback_policy,
                           changed_devices(record, record.version))
    for device_id in decision.canary_failed:
        record.devices[device_id].fail("canary", "CanaryFailed", decision.reason,
                                       "see the verdict table (edgefleet rollout show); fix the model and release "
                                       "a new version")
    _roll_back(inventory, record,
               plan_rollback([record.devices[device_id] for device_id in decision.roll_back], record.version),
               params.max_parallel)
    return hard_failed, decision


def _plan(record: RolloutRecord, params: RolloutParams, device_ids: list[str]) -> list[list[str]]:
    """The waves: in random order by default, with the seed kept in the record (a re-run plans the same)."""
    selection = params.wave_selection
    if record.wave_seed is None:
        record.wave_seed = selection.seed if selection.seed is not None else secrets.randbits(32)
    return plan_waves(wave_order(device_ids, selection.order, record.wave_seed), params.waves,
                      first_wave_min=selection.first_wave_min, holdback=selection.holdback,
                      keep_outside=params.canary.min_control_devices)


def _shadow_wave_or_halt(record: RolloutRecord, store: RecordStore, inventory: Inventory, params: RolloutParams,
                         prepared: PreparedVersion) -> None:
    """The shadow wave on the first wave's devices (`shadow_flow`); a verdict other than pass halts the rollout
    before any device activated the version."""
    verdict, _ = run_shadow_wave(inventory, prepared, params.canary, params.shadow, params.health,
                                 params.disk_headroom, record.waves[0], max_parallel=params.max_parallel)
    get_run_logger().info("shadow wave on %s: %s - %s", record.waves[0], verdict.result, verdict.reason)
    if verdict.metrics:
        create_table_artifact(table=verdict.table(), key=_artifact_key(record.rollout_id) + "-shadow",
                              description=f"Shadow wave of rollout **{record.rollout_id}**: "
                                          f"{verdict.result.upper()} - {verdict.reason}")
    if verdict.result == "pass":
        return
    record.state = "halted"
    record.halted = HaltInfo(wave=1, failed=tuple(record.waves[0]), reason=f"shadow wave: {verdict.reason}",
                             halted_by=tuple(f"shadow_{name}" for name in verdict.failed_metrics) or ("shadow",))
    _publish(record, store)
    raise RolloutHalted(f"rollout {record.rollout_id} halted by its shadow wave, before any device activated "
                        f"{record.version}: {verdict.reason}",
                        "fix the model and release a new version; the shadow verdict is in the rollout's artifacts",
                        _result(record, store))


@flow(name=FLOW_NAME)
def rollout(params: RolloutParams) -> RolloutResult:
    """Rolls a released model version out to devices in health-gated waves (see the module docstring)."""
    logger = get_run_logger()
    inventory = load_inventory(params.inventory)
    devices = inventory.select(params.target.ids, params.target.tags)
    registry = open_registry_writer(params.registry)
    chosen = resolve_version(registry, params)
    version = chosen.version
    channel = params.channel if params.version is not None else None
    if channel is not None:  # the channel move at the end signs: a missing or refused key fails now, not then
        channel_signing_key(params.signing, registry.uri)
    prepared = prepare_version(registry, params.model, version, Path(params.work_dir).expanduser(),
                               params.public_key, chosen.downgrade, chosen.manifest_sha256)
    rollout_id = params.rollout_id or f"{params.model}-{version}"
    store = RecordStore(registry, rollout_id)
    record = _open_record(store, params, prepared, rollout_id, channel)
    record.begin_run(_plan(record, params, [device.id for device in devices]), params.rollback_policy)
    store.save(record)
    monitor = MonitorAccess(params.monitor_config, params.model) if params.monitor_config else None
    logger.info("rollout %s: %s %s to %d devices in waves %s (run %d)", rollout_id, params.model, version,
                len(devices), [len(w) for w in record.waves], record.runs)

    if params.shadow.enabled and record.waves and not changed_devices(record, version):
        _shadow_wave_or_halt(record, store, inventory, params, prepared)
    for wave_number, wave in enumerate(record.waves, 1):
        todo = record.todo(wave)
        if not todo:
            logger.info("wave %d: all %d devices done in an earlier run", wave_number, len(wave))
            continue
        hard_failed, decision = _run_wave(record, inventory, params, prepared, monitor, wave_number, todo)
        if decision.halt:
            record.state, record.halted = "halted", halt_info(record, wave_number, hard_failed, decision)
            _publish(record, store)
            raise RolloutHalted(
                f"rollout {rollout_id} halted in wave {wave_number}: {record.halted.reason}",
                f"fix the cause, then re-run the same rollout (rollout_id {rollout_id}) to resume; "
                f"record: {store.uri}", _result(record, store))
        store.save(record)
        logger.info("wave %d passed: %d devices (%d failed, within the threshold)", wave_number, len(todo),
                    len(hard_failed))
        if wave_number == 1 and params.approve_after_canary and len(record.waves) > 1:
            logger.info("canary wave passed: waiting for approval (resume the flow run to continue)")
            pause_flow_run(timeout=params.approval_timeout_s, key=f"approve-{_artifact_key(rollout_id)}")

    record.state = "completed"
    if channel is not None and not record.channel_moved:
        move_channel_task(registry, params.model, version, channel, params.signing, f"rollout {rollout_id}")
        record.channel_moved = True
        logger.info("channel %s of %s now names %s", channel, params.model, version)
    _publish(record, store)
    return _result(record, store)
