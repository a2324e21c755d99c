"""A pull rollout's decisions, pure: the share of each wave, who it moves, and what a wave's observation means.

The flow (`pull_flow.py`) asks these and carries out the answers; nothing here reads or writes anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from edgefleet.flows.rollout.pull_params import ExponentialRate, ShareSchedule
from edgefleet.flows.rollout.verdict import Verdict
from edgefleet.kernel.contracts.rollout import SHARE_BP_FULL, cohort_bucket, in_share, percent_to_bp


def share_steps(schedule: ShareSchedule) -> list[int]:
    """The cumulative share of each wave in basis points (e.g. ['1%', '10%', '100%'] -> [100, 1000, 10000])."""
    return [percent_to_bp(float(share.rstrip("%"))) for share in schedule.shares]


def share_for(rollout_id: str, devices: Sequence[str], count: int) -> int:
    """The smallest share (bp) that moves at least `count` of `devices` (all of them: 10000)."""
    buckets = sorted(cohort_bucket(rollout_id, device) for device in devices)
    if count <= 0:
        return 0
    if count >= len(buckets):
        return SHARE_BP_FULL
    return buckets[count - 1] + 1


def moved(rollout_id: str, devices: Sequence[str], share_bp: int) -> list[str]:
    """The devices on the new version at `share_bp` (in the given order)."""
    return [device for device in devices if in_share(rollout_id, device, share_bp)]


def first_share(rollout_id: str, devices: Sequence[str], share_bp: int, first_wave_min: int) -> int:
    """The first wave's share, raised until it moves at least `first_wave_min` devices."""
    return max(share_bp, share_for(rollout_id, devices, first_wave_min))


@dataclass(frozen=True)
class NextWave:
    """The next wave's share, and the rate it was computed with (exponential schedules)."""

    share_bp: int
    rate: int | None = None


def next_share_wave(schedule: ShareSchedule, rollout_id: str, devices: Sequence[str], passed: Sequence[int],
                    first_wave_min: int) -> NextWave | None:
    """The next share after the waves `passed` (their shares), or None when the rollout is complete."""
    steps = share_steps(schedule)
    if passed and passed[-1] >= SHARE_BP_FULL:
        return None
    if not passed:
        return NextWave(first_share(rollout_id, devices, steps[0], first_wave_min))
    later = [step for step in steps if step > passed[-1]]
    return NextWave(later[0] if later else SHARE_BP_FULL)


def next_rate(rate: ExponentialRate, current: int, notified: int, succeeded: int) -> int:
    """The rate after a passed wave that notified (moved) `notified` devices, `succeeded` of which reported the
    new version: grown by the factor when the wave met the criteria (none set: always), capped."""
    criteria = rate.rate_increase_criteria
    met = ((criteria.number_of_notified_things is None and criteria.number_of_succeeded_things is None)
           or (criteria.number_of_notified_things is not None and notified >= criteria.number_of_notified_things)
           or (criteria.number_of_succeeded_things is not None
               and succeeded >= criteria.number_of_succeeded_things))
    grown = math.ceil(current * rate.increment_factor) if met else current
    return min(grown, rate.maximum_per_minute)


def next_rate_wave(rate: ExponentialRate, rollout_id: str, devices: Sequence[str], passed: Sequence[int],
                   current_rate: int | None, notified: int, succeeded: int, first_wave_min: int) -> NextWave | None:
    """The next wave of an exponential schedule: `rate` more devices than the last share moved."""
    if passed and passed[-1] >= SHARE_BP_FULL:
        return None
    if not passed:
        count = max(min(rate.base_rate_per_minute, rate.maximum_per_minute), first_wave_min)
        return NextWave(share_for(rollout_id, devices, count), min(rate.base_rate_per_minute,
                                                                   rate.maximum_per_minute))
    grown = next_rate(rate, current_rate or rate.base_rate_per_minute, notified, succeeded)
    already = len(moved(rollout_id, devices, passed[-1]))
    return NextWave(max(share_for(rollout_id, devices, already + grown), passed[-1]), grown)


@dataclass(frozen=True)
class WaveObservation:
    """A wave's moved devices as the monitor sees them."""

    up: tuple[str, ...]
    """Reporting the new version."""
    refused: tuple[str, ...]
    """Reported a swap failure or rollback of the new version (the device refused it and went back itself)."""
    waiting: tuple[str, ...]
    """Neither yet (not polled yet, downloading, offline; silent, once its report is due)."""
    window_waiting: tuple[str, ...] = ()
    """Neither yet, and its maintenance window is closed while its report is not due yet (`pull_windows`)."""
    up_at: Mapping[str, datetime] = field(default_factory=dict)
    """When the watch first saw each `up` device report the version (the rollout's clock; `seen_up`): its
    activation, at most one poll and the telemetry's way earlier. Empty before the watch keeps it."""

    @property
    def settled(self) -> bool:
        return not self.waiting and not self.window_waiting

    @property
    def size(self) -> int:
        return len(self.up) + len(self.refused) + len(self.waiting) + len(self.window_waiting)


def observe(devices: Sequence[str], versions: Mapping[str, str | None], failures: Mapping[str, int],
            version: str, max_failures: int) -> WaveObservation:
    """Sorts a wave's moved `devices` by what the monitor says: the version each reports, and the swap failures
    and rollbacks of `version` each reported since the wave began."""
    refused = tuple(device for device in devices if failures.get(device, 0) > max_failures)
    up = tuple(device for device in devices if device not in refused and versions.get(device) == version)
    waiting = tuple(device for device in devices if device not in refused and device not in up)
    return WaveObservation(up=up, refused=refused, waiting=waiting)


def seen_up(observation: WaveObservation, earlier: Mapping[str, datetime], now: datetime) -> WaveObservation:
    """`observation` with `up_at`: each `up` device's first look reporting the version (`earlier`'s, else
    `now`), so the canary judge windows each device from its own activation, not the wave's start."""
    return replace(observation, up_at={device: earlier.get(device, now) for device in observation.up})


def over_threshold(observation: WaveObservation, threshold: float) -> bool:
    """True when more of the wave refused the version than `threshold` allows."""
    return bool(observation.refused) and len(observation.refused) > threshold * observation.size


@dataclass(frozen=True)
class PullDecision:
    """Halt or go on after a wave of a pull rollout."""

    halt: bool
    reason: str = ""
    halted_by: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


def needs_verdict(observation: WaveObservation, threshold: float) -> bool:
    """Whether the canary judge looks at the wave: someone reports the new version and the wave is not already
    over its failure threshold."""
    return bool(observation.up) and not over_threshold(observation, threshold)


def decide_pull_wave(observation: WaveObservation, threshold: float, verdict: Verdict | None) -> PullDecision:
    """Halt (and send the moved devices back) or go on. A wave that moved nobody passes; one whose moved devices
    all stayed silent until the timeout halts (nothing says the version works)."""
    size = observation.size
    if over_threshold(observation, threshold):
        return PullDecision(True, f"{len(observation.refused)} of {size} moved devices refused the version "
                                  f"(threshold {threshold:.0%})", ("failure_threshold",), observation.refused)
    if verdict is not None and verdict.result == "fail":
        return PullDecision(True, f"the canary judge failed the version on {len(observation.up)} device(s): "
                                  f"{verdict.reason}", verdict.halted_by, observation.up + observation.refused)
    if size and not observation.up:
        return PullDecision(True, f"none of the {size} moved devices reported the version in time",
                            ("no_report",), observation.waiting)
    return PullDecision(False)
