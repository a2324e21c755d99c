"""The pull rollout's shadow wave (issue 25): before any pull-mode device activates the version, the devices its
first wave would move run it as a shadow beside the version it replaces, and their pairs are judged.

No device is contacted: the wave signs the channel pointer at share 0 with `shadow_bp` the first wave's share
(`RolloutStage.shadow_bp`; the same stable hash of (device id, rollout id) picks the devices, so those that
shadow are those the first wave then moves). Each such device downloads and verifies the candidate as for an
activation and names it as its shadow (`edgefleet.device.pull_shadow`); its agent sends the pairs in its
telemetry (`inference.shadow`), which the fleet monitor stores (`monitor.shadows`). The verdict is the SSH
shadow wave's (`shadow_flow.await_shadow_verdict`, the one gate's thresholds); a device that refused the
candidate (a swap failure of it reported to the monitor) fails the wave at once. A device names the candidate only
inside its maintenance window: the wave's timeout counts only time inside each device's window
(`pull_windows.latest_due`). A pass goes on with the first
wave (which replaces the shadow by the activation); a fail signs share 0 without a shadow (every device clears
it) and halts the rollout, no device having acted on the version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from edgefleet.flows.rollout.params import CanaryGate
from edgefleet.flows.rollout.pull_tasks import MonitorView
from edgefleet.flows.rollout.record import PullProgress, ShadowOutcome, utc_now
from edgefleet.flows.rollout.shadow import ShadowVerdict
from edgefleet.flows.rollout.shadow_flow import ShadowLook, await_shadow_verdict
from edgefleet.flows.rollout.shadow_params import ShadowWave
from edgefleet.kernel.contracts.telemetry import ShadowSummary


def shadow_wave_due(wave: ShadowWave, progress: PullProgress) -> bool:
    """True when the rollout starts with a shadow wave now: enabled, no wave passed yet, and no shadow wave
    passed in an earlier run (a failed one runs again on resume). Pure."""
    passed = progress.shadow is not None and progress.shadow.result == "pass"
    return wave.enabled and not progress.passed and not passed


def pull_look(pairs: Mapping[str, ShadowSummary | None], failures: Mapping[str, int], version: str) -> ShadowLook:
    """The look the fleet monitor gives: each device's stored pairs; a device that reported a swap failure or
    rollback of the candidate (it refused it: verification, floor) cannot run it. Pure."""
    return ShadowLook(pairs, {device: f"refused {version} ({count} swap failure or rollback events reported)"
                              for device, count in failures.items() if count})


def outcome_of(verdict: ShadowVerdict, share_bp: int, devices: Sequence[str]) -> ShadowOutcome:
    """What the record keeps of the shadow wave (a verdict still waiting never gets here). Pure."""
    return ShadowOutcome(share_bp=share_bp, devices=tuple(devices), result="pass" if verdict.result == "pass"
                         else "fail", reason=verdict.reason, judged_at=utc_now(), table=tuple(verdict.table()))


@task(name="shadow-judgement", cache_policy=NO_CACHE, task_run_name="shadow-judgement {version}")
def judge_shadow_wave_task(monitor: MonitorView, devices: tuple[str, ...], version: str, replaces: str | None,
                           since: datetime, gate: CanaryGate, wave: ShadowWave,
                           timeout: timedelta | None = None) -> ShadowVerdict:
    """Reads the devices' stored pairs from the fleet monitor until the verdict passes or fails (`timeout`, by
    default `wave.timeout_s`: the flow gives devices with maintenance windows that long inside their windows)."""
    return await_shadow_verdict(
        lambda: pull_look(monitor.shadow_pairs(devices, version, replaces, since),
                          monitor.failures(devices, version, since), version), gate, wave,
        timeout_s=None if timeout is None else timeout.total_seconds())
