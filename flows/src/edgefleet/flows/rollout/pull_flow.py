"""The `pull-rollout` Prefect flow: a released version to pull-mode devices, by signed shares of the channel.

    from edgefleet.flows.rollout.pull_flow import pull_rollout
    from edgefleet.flows.rollout.pull_params import PullRolloutParams

    result = pull_rollout(PullRolloutParams(registry="gs://b/edgefleet", model="birds", version="1.2.0",
                                            channel="stable", monitor_config="monitor.yaml",
                                            public_key="release.pub"))

Each wave signs the channel pointer at a larger share (`flows.registry.staged`); the devices in the share
take the version at their next poll (inside their maintenance window), the others stay on the version it
replaces. The wave is watched in the fleet monitor's state (which devices report it, which refused it; a device
whose maintenance window is closed waits for it, its report timeout counted inside its window: `pull_windows.py`)
and judged by the canary judge: the moved devices against the devices not moved yet, the same fleet at the same
time. A failed wave signs share 0: every moved device goes back to the version it replaced (a signed
send-back, which their floor allows). Same record (`rollouts/<id>.json`, `pull` progress), verdict
artifact and `edgefleet rollout show` as the SSH rollout; re-running the same rollout resumes after the last
passed wave. With `shadow.enabled`, a shadow wave on the first wave's devices comes first (`pull_shadow.py`):
they run the version beside the old one, never acting on it, and a failed verdict halts the rollout there. After
the last wave, the devices still waiting for their maintenance window are watched until each had its report
timeout inside its window (at most `stragglers_max_wait_s`: those left stay pending for a re-run), and judged as a
wave (`pull_stragglers.py`): the rollout is complete only then; a straggler halt signs share 0 only while the channel
still names this rollout.
The decisions are `pull_waves.py`'s, `pull_windows.py`'s, `pull_stragglers.py`'s and `pull_shadow.py`'s; this body
only orchestrates.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from edgefleet.device.trust.version_bundle import verify_manifest_bytes
from edgefleet.flows.registry import RegistryWriter, open_registry_writer
from edgefleet.flows.rollout.flow import RolloutHalted, RolloutResult, _artifact_key, _publish, _result
from edgefleet.flows.rollout.judgement import WaveSubject
from edgefleet.flows.rollout.pull_params import ExponentialRate, PullRolloutParams
from edgefleet.flows.rollout.pull_record import (
    activations_of,
    add_wave,
    apply_observation,
    note_silent,
    note_window_waiting,
    restart_after_send_back,
)
from edgefleet.flows.rollout.pull_shadow import judge_shadow_wave_task, outcome_of, shadow_wave_due
from edgefleet.flows.rollout.pull_stragglers import (
    StragglerWatch,
    capped,
    decide_stragglers,
    halt_blocker,
    straggler_steps,
    stragglers,
    unwatched,
    unwatched_steps,
    unwatched_warning,
    without,
)
from edgefleet.flows.rollout.pull_tasks import (
    MonitorView,
    WatchRule,
    channel_pointer_task,
    fleet_task,
    judge_pull_wave_task,
    stage_share_task,
    watch_stragglers_task,
    watch_wave_task,
)
from edgefleet.flows.rollout.pull_waves import (
    NextWave,
    PullDecision,
    WaveObservation,
    decide_pull_wave,
    moved,
    needs_verdict,
    next_rate_wave,
    next_share_wave,
)
from edgefleet.flows.rollout.pull_windows import (
    latest_due,
    left_waiting,
    plan_wave,
    quorum,
)
from edgefleet.flows.rollout.record import (
    HaltInfo,
    PullProgress,
    RecordStore,
    RolloutRecord,
    WaveVerdict,
    utc_now,
)
from edgefleet.flows.rollout.verdict import Verdict
from edgefleet.flows.trust.release_key import channel_signing_key
from edgefleet.kernel.contracts.manifest import Manifest
from edgefleet.kernel.errors import ConfigError

FLOW_NAME = "pull-rollout"


def _manifest(registry: RegistryWriter, params: PullRolloutParams) -> tuple[Manifest, str]:
    """The version's manifest and its sha256, verified against the release public key."""
    signed = registry.read_manifest(params.model, params.version)
    verify_manifest_bytes(signed.raw, signed.signature, params.public_key,
                          source=f"{registry.uri} {params.model} {params.version}")
    return signed.manifest, signed.manifest_sha256


def _open_record(store: RecordStore, params: PullRolloutParams, rollout_id: str, sha: str) -> RolloutRecord:
    record = store.load()
    if record is None:
        return RolloutRecord(rollout_id=rollout_id, model=params.model, version=params.version, manifest_sha256=sha,
                             channel=params.channel, rollback_policy="all", pull=PullProgress())
    if (record.model, record.version, record.manifest_sha256, record.pull is None) != (
            params.model, params.version, sha, False):
        raise ConfigError(f"rollout {rollout_id} in the registry is not a pull rollout of {params.model} "
                          f"{params.version}", "give this rollout another rollout_id (rollout ids name one version)")
    if record.state == "halted" and record.pull is not None and record.pull.sent_back:
        restart_after_send_back(record, utc_now())  # else re-staging a passed share moves its devices again, unwatched
    return record


def _next_wave(params: PullRolloutParams, record: RolloutRecord, fleet: list[str]) -> NextWave | None:
    progress = record.pull
    assert progress is not None
    if isinstance(params.schedule, ExponentialRate):
        last = record.waves[-1] if record.waves and progress.passed else []
        up = [d for d in last if record.devices[d].state == "done"]
        return next_rate_wave(params.schedule, record.rollout_id, fleet, progress.passed, progress.rate,
                              len(last), len(up), params.first_wave_min)
    return next_share_wave(params.schedule, record.rollout_id, fleet, progress.passed, params.first_wave_min)


def _watch_rule(params: PullRolloutParams, monitor: MonitorView, devices: tuple[str, ...], since: datetime, *,
                minimum: int, threshold: float | None) -> WatchRule:
    """How the watch of `devices` from `since` ends: each one's window (its group's, by its monitor tags) and
    report deadline (`pull_windows.plan_wave`)."""
    tags = monitor.tags(devices) if params.windows else {}
    plan = plan_wave(params.windows, devices, tags, since, timedelta(seconds=params.report_timeout_s))
    return WatchRule(plan, quorum(minimum, len(devices)), threshold)


def _verdict(params: PullRolloutParams, record: RolloutRecord, manifest: Manifest, fleet: dict[str, str | None],
             wave: int, observation: WaveObservation, since: datetime, *, note: str = "") -> Verdict | None:
    """The canary verdict on the devices that reported, recorded (`note` before its reason), where a wave has one
    (`needs_verdict`); None where it has not."""
    if not needs_verdict(observation, params.failure_threshold):
        return None
    progress = record.pull
    assert progress is not None
    moved_now = set(moved(record.rollout_id, sorted(fleet), progress.shares[-1]))
    activations = activations_of(record, observation.up, since)
    subject = WaveSubject(
        model=record.model, version=record.version, devices=observation.up, before=progress.replaces,
        activated_at=min(activations.values(), default=since), activations=activations,
        others=tuple(d for d in sorted(fleet) if d not in moved_now),
        reference=manifest.reference.distributions if manifest.reference else None,
        detector=manifest.task == "detection", label_count=manifest.label_count)
    judged = judge_pull_wave_task(wave, subject, params.canary, params.monitor_config, params.poll_interval_s)
    noted = judged.verdict.model_copy(update={"reason": f"{note}: {judged.verdict.reason}"}) if note else None
    record.verdicts.append(WaveVerdict(wave=wave, devices=observation.up, source=judged.source,
                                       judged_at=utc_now(), verdict=noted or judged.verdict,
                                       seconds_after_activation=(utc_now() - since).total_seconds()))
    return judged.verdict


def _judge(params: PullRolloutParams, record: RolloutRecord, manifest: Manifest, fleet: dict[str, str | None],
           wave: int, observation: WaveObservation, since: datetime) -> PullDecision:
    verdict = _verdict(params, record, manifest, fleet, wave, observation, since)
    return decide_pull_wave(observation, params.failure_threshold, verdict)


def _halt(params: PullRolloutParams, registry: RegistryWriter, store: RecordStore, record: RolloutRecord,
          monitor: MonitorView, wave: int, decision: PullDecision) -> RolloutHalted:
    """Signs share 0 (every moved device goes back to `replaces`), watches them go back, records the halt."""
    logger = get_run_logger()
    progress = record.pull
    assert progress is not None
    stage_share_task(registry, params.signing, model=record.model, channel=params.channel,
                     rollout_id=record.rollout_id, version=record.version, share_bp=0)
    progress.sent_back = True
    for device in record.devices.values():
        if device.state == "done":  # on the version: sent back
            device.fail("canary", "Halted", decision.reason)
    record.state = "halted"
    record.halted = HaltInfo(wave=wave, failed=decision.failed, reason=decision.reason, halted_by=decision.halted_by)
    store.save(record)
    sent = tuple(d for d, device in record.devices.items() if device.after == record.version
                 or device.refused_by_device)
    since = utc_now()
    back = watch_wave_task(wave, monitor, sent, progress.replaces or "", since, params.canary.max_swap_failures,
                           rule=_watch_rule(params, monitor, sent, since, minimum=0, threshold=None),
                           poll_interval_s=params.poll_interval_s, stale_after_s=params.stale_after_s)
    for device_id in back.up:
        device = record.devices[device_id]
        device.state, device.rolled_back_to, device.after = "rolled_back", progress.replaces, progress.replaces
    _publish(record, store)
    logger.warning("rollout %s halted in wave %d: %s; %d of %d moved devices back on %s", record.rollout_id, wave,
                   decision.reason, len(back.up), len(sent), progress.replaces)
    return RolloutHalted(f"rollout {record.rollout_id} halted in wave {wave}: {decision.reason}",
                         f"the moved devices were sent back to {progress.replaces} (signed share 0); fix the model "
                         f"and release a new version; record: {store.uri}", _result(record, store))


def _run_wave(params: PullRolloutParams, registry: RegistryWriter, record: RolloutRecord, manifest: Manifest,
              monitor: MonitorView, fleet: dict[str, str | None], step: NextWave) -> PullDecision:
    """One wave: sign its share, watch its devices, judge them; everything recorded."""
    progress = record.pull
    assert progress is not None
    wave = len(progress.passed) + 1
    devices = add_wave(record, fleet, step.share_bp)
    progress.shares.append(step.share_bp)
    progress.rate = step.rate
    pointer = stage_share_task(registry, params.signing, model=record.model, channel=params.channel,
                               rollout_id=record.rollout_id, version=record.version, share_bp=step.share_bp)
    progress.replaces = pointer.rollout.replaces if pointer.rollout else progress.replaces
    since = utc_now()
    started = time.monotonic()
    watched = devices + left_waiting(record.devices.values(), wave)  # earlier waves' devices waiting for windows
    rule = _watch_rule(params, monitor, watched, since, minimum=params.first_wave_min,
                       threshold=params.failure_threshold)
    observation = watch_wave_task(wave, monitor, watched, record.version, since, params.canary.max_swap_failures,
                                  rule=rule, poll_interval_s=params.poll_interval_s,
                                  stale_after_s=params.stale_after_s)
    apply_observation(record, observation, since)
    note_window_waiting(record, observation, rule.plan, wave)
    note_silent(record, [device for device in observation.waiting if device not in devices], wave)
    decision = _judge(params, record, manifest, fleet, wave, observation, since)
    if isinstance(params.schedule, ExponentialRate) and not decision.halt:
        time.sleep(max(0.0, params.schedule.minute_s - (time.monotonic() - started)))
    return decision


def _shadow_wave_or_halt(params: PullRolloutParams, registry: RegistryWriter, store: RecordStore,
                         record: RolloutRecord, monitor: MonitorView, fleet: dict[str, str | None]) -> None:
    """The shadow wave on the first wave's devices (`pull_shadow`); a verdict other than pass halts the rollout
    before any device activated the version (share 0, no shadow: every device clears it)."""
    progress = record.pull
    first = _next_wave(params, record, sorted(fleet))
    if progress is None or first is None:
        return
    devices = tuple(moved(record.rollout_id, sorted(fleet), first.share_bp))
    pointer = stage_share_task(registry, params.signing, model=record.model, channel=params.channel,
                               rollout_id=record.rollout_id, version=record.version, share_bp=0,
                               shadow_bp=first.share_bp)
    progress.replaces = pointer.rollout.replaces if pointer.rollout else progress.replaces
    store.save(record)
    since = utc_now()
    tags = monitor.tags(devices) if params.windows else {}  # the shadow waits for each device's window too
    plan_timeout = timedelta(seconds=params.shadow.timeout_s)
    plan = plan_wave(params.windows, devices, tags, since, plan_timeout)
    verdict = judge_shadow_wave_task(monitor, devices, record.version, progress.replaces, since, params.canary,
                                     params.shadow, max(latest_due(plan, since), plan_timeout))
    progress.shadow = outcome_of(verdict, first.share_bp, devices)
    get_run_logger().info("shadow wave on %s: %s - %s", list(devices), verdict.result, verdict.reason)
    if verdict.metrics:
        create_table_artifact(table=verdict.table(), key=_artifact_key(record.rollout_id) + "-shadow",
                              description=f"Shadow wave of rollout **{record.rollout_id}**: "
                                          f"{verdict.result.upper()} - {verdict.reason}")
    if verdict.result == "pass":
        store.save(record)
        return
    stage_share_task(registry, params.signing, model=record.model, channel=params.channel,
                     rollout_id=record.rollout_id, version=record.version, share_bp=0)
    record.state = "halted"
    record.halted = HaltInfo(wave=1, failed=devices, reason=f"shadow wave: {verdict.reason}",
                             halted_by=tuple(f"shadow_{name}" for name in verdict.failed_metrics) or ("shadow",))
    _publish(record, store)
    raise RolloutHalted(f"rollout {record.rollout_id} halted by its shadow wave, before any device activated "
                        f"{record.version}: {verdict.reason}", "fix the model and release a new version; the shadow "
                        f"verdict is in the rollout's artifacts and record: {store.uri}", _result(record, store))


def _watch_stragglers(params: PullRolloutParams, record: RolloutRecord, monitor: MonitorView,
                      watch: StragglerWatch) -> tuple[WaveObservation, tuple[str, ...]]:
    """Watches the stragglers until each reported, refused, or had its report timeout inside its window, or the cap
    (`stragglers_max_wait_s`) passed; records what each did. Returns the watched ones' observation and those the cap
    left unwatched (`pull_stragglers.unwatched`)."""
    until = utc_now() + timedelta(seconds=params.stragglers_max_wait_s)
    rule = _watch_rule(params, monitor, watch.devices, watch.since, minimum=watch.quorum,
                       threshold=params.failure_threshold)
    get_run_logger().info("%s: watching %d device(s) until each had %g s inside its maintenance window (until %s at "
                          "the latest: stragglers_max_wait_s)", watch.label, len(watch.devices),
                          params.report_timeout_s, min(watch.since + latest_due(rule.plan, watch.since), until))
    seen = watch_stragglers_task(watch.after_wave, monitor, watch.devices, record.version, watch.refusals_since,
                                 params.canary.max_swap_failures, rule=replace(rule, plan=capped(rule.plan, until)),
                                 poll_interval_s=params.poll_interval_s, stale_after_s=params.stale_after_s)
    now = utc_now()
    left = unwatched(seen, rule.plan, now, until)
    observation = without(seen, left)
    apply_observation(record, observation, watch.since)
    steps = straggler_steps(watch, observation, rule.plan, now) | unwatched_steps(watch, left, rule.plan, now)
    for device_id, step in steps.items():
        record.devices[device_id].steps.append(step)
    return observation, left


def _halt_stragglers(params: PullRolloutParams, registry: RegistryWriter, store: RecordStore, record: RolloutRecord,
                     monitor: MonitorView, wave: int, decision: PullDecision) -> RolloutHalted:
    """The stragglers' halt: share 0 (`_halt`) while the channel still names this rollout; else nothing is signed
    (`pull_stragglers.halt_blocker`), the verdict and refusals are recorded and the rollout ends halted."""
    pointer = channel_pointer_task(registry, params.signing, model=record.model, channel=params.channel)
    blocker = halt_blocker(pointer, record.rollout_id, params.channel)
    if blocker is None:
        return _halt(params, registry, store, record, monitor, wave, decision)
    record.state = "halted"
    record.halted = HaltInfo(wave=wave, failed=decision.failed, reason=f"{decision.reason}; share 0 not signed: "
                             f"{blocker}", halted_by=decision.halted_by)
    _publish(record, store)
    get_run_logger().warning("rollout %s: %s; share 0 not signed: %s", record.rollout_id, decision.reason, blocker)
    return RolloutHalted(
        f"rollout {record.rollout_id} halted after its last wave: {decision.reason}; share 0 not signed: {blocker}",
        f"nothing was sent back (the channel is not this rollout's any more); the devices {', '.join(decision.failed)} "
        f"need attention (edgefleet rollout show {record.rollout_id}); record: {store.uri}", _result(record, store))


def _judge_stragglers(params: PullRolloutParams, registry: RegistryWriter, store: RecordStore,
                      record: RolloutRecord, manifest: Manifest, monitor: MonitorView,
                      fleet: dict[str, str | None]) -> None:
    """After the last wave: watches the devices still waiting for their maintenance window (`_watch_stragglers`)
    and judges them as a wave (`pull_stragglers`); a halt raises RolloutHalted (`_halt_stragglers`)."""
    logger = get_run_logger()
    watch = stragglers(record.devices, len(record.pull.passed) if record.pull else 0)
    if watch is None:
        return
    if not params.watch_stragglers:
        logger.warning("%s", unwatched_warning(watch.devices, record.version, record.rollout_id,
                                               "watch_stragglers is off"))
        return
    observation, left = _watch_stragglers(params, record, monitor, watch)
    verdict = _verdict(params, record, manifest, fleet, watch.after_wave, observation, watch.since,
                       note=watch.label)
    decision = decide_stragglers(watch, observation, params.failure_threshold, verdict)
    if decision.halt:
        raise _halt_stragglers(params, registry, store, record, monitor, watch.after_wave, decision)
    logger.info("%s passed: %d reported the version, %d refused it, %d silent in their window", watch.label,
                len(observation.up), len(observation.refused), len(observation.waiting))
    if observation.waiting:
        logger.warning("%s: %s did not report %s in their maintenance window (recorded no_report; the rollout "
                       "does not halt for silence after the fleet took the version)", watch.label,
                       ", ".join(observation.waiting), record.version)
    if left:
        logger.warning("%s", unwatched_warning(left, record.version, record.rollout_id, "stragglers_max_wait_s passed"))


@flow(name=FLOW_NAME)
def pull_rollout(params: PullRolloutParams) -> RolloutResult:
    """Rolls a released version out to pull-mode devices in signed, judged shares (see the module docstring)."""
    logger = get_run_logger()
    registry = open_registry_writer(params.registry)
    channel_signing_key(params.signing, registry.uri)  # a missing or refused key fails now, not mid-rollout
    manifest, sha = _manifest(registry, params)
    rollout_id = params.rollout_id or f"{params.model}-{params.version}"
    store = RecordStore(registry, rollout_id)
    record = _open_record(store, params, rollout_id, sha)
    record.runs, record.state, record.halted = record.runs + 1, "running", None
    monitor = MonitorView(params.monitor_config, params.model)
    fleet = fleet_task(monitor, params.stale_after_s)
    logger.info("pull rollout %s: %s %s on channel %s, %d devices (run %d)", rollout_id, params.model,
                params.version, params.channel, len(fleet), record.runs)
    store.save(record)
    if record.pull is not None and shadow_wave_due(params.shadow, record.pull):
        _shadow_wave_or_halt(params, registry, store, record, monitor, fleet)
    while (step := _next_wave(params, record, sorted(fleet))) is not None:
        decision = _run_wave(params, registry, record, manifest, monitor, fleet, step)
        wave = len(record.pull.passed) + 1  # type: ignore[union-attr]
        if decision.halt:
            raise _halt(params, registry, store, record, monitor, wave, decision)
        record.pull.passed.append(step.share_bp)  # type: ignore[union-attr]
        store.save(record)
        logger.info("wave %d passed at %.2f %% of the fleet", wave, step.share_bp / 100)
    _judge_stragglers(params, registry, store, record, manifest, monitor, fleet)
    record.state, record.channel_moved = "completed", True
    _publish(record, store)
    return _result(record, store)
