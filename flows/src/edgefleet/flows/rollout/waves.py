"""Wave planning, the failure threshold, the decision after a wave and what a rollback does: pure functions, no I/O."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from edgefleet.flows.rollout.params import WaveSize
from edgefleet.flows.rollout.record import DeviceRecord, HaltInfo, RolloutRecord
from edgefleet.flows.rollout.verdict import Verdict


def cumulative_size(wave: WaveSize, total: int) -> int:
    """How many devices have been reached once `wave` is done: a count, or a percentage of `total` (rounded up)."""
    if isinstance(wave, int):
        return min(wave, total)
    return min(total, math.ceil(total * float(str(wave).rstrip("%")) / 100))


def plan_waves(device_ids: Sequence[str], waves: Sequence[WaveSize], *, first_wave_min: int = 1,
               holdback: int = 0, keep_outside: int = 0) -> list[list[str]]:
    """Splits devices (in order) into waves of cumulative sizes; empty waves are dropped.

    The last wave always reaches every device, even when `waves` does not end at 100%. The first wave has
    at least `first_wave_min` devices while `keep_outside` devices stay outside it (the controls); the last
    `holdback` devices of the order are reached only by the last wave.

    Example:
        >>> [len(w) for w in plan_waves([f"d{i}" for i in range(20)], [1, "25%", "100%"])]
        [1, 4, 15]
        >>> [len(w) for w in plan_waves([f"d{i}" for i in range(20)], [1, "50%", "100%"], first_wave_min=3,
        ...                             holdback=5, keep_outside=3)]
        [3, 7, 10]
    """
    total = len(device_ids)
    held = min(holdback, max(total - 1, 0))
    sizes = [size if size == total else min(size, total - held)
             for size in (cumulative_size(wave, total) for wave in waves)] + [total]
    sizes[0] = max(sizes[0], min(first_wave_min, total - max(keep_outside, held)))
    plan: list[list[str]] = []
    reached = 0
    for size in sizes:
        if size > reached:
            plan.append(list(device_ids[reached:size]))
            reached = size
    return plan


def wave_order(device_ids: Sequence[str], order: str, seed: int) -> list[str]:
    """The devices in the order waves take them: as listed ("inventory"), or shuffled with `seed` ("random")."""
    ordered = list(device_ids)
    if order == "random":
        random.Random(seed).shuffle(ordered)
    return ordered


def wave_over_threshold(failed: int, size: int, threshold: float) -> bool:
    """True when `failed` of `size` devices is more than the allowed share `threshold` (0: any failure)."""
    return size > 0 and failed / size > threshold


@dataclass(frozen=True)
class WaveDecision:
    """What a wave's outcome means for the rollout (see `decide_wave`)."""

    halt: bool
    reason: str
    halted_by: tuple[str, ...]
    canary_failed: tuple[str, ...]
    """The wave's devices that came up but whose version the canary judge failed."""
    roll_back: tuple[str, ...]
    """Devices to return to the version they ran before."""


def needs_judgement(todo: Sequence[str], hard_failed: Sequence[str], up: Sequence[str], threshold: float) -> bool:
    """Whether the canary judge looks at the wave: someone came up and the wave is not already over its
    failure threshold (then it halts whatever the verdict)."""
    return bool(up) and not wave_over_threshold(len(hard_failed), len(todo), threshold)


def decide_wave(todo: Sequence[str], hard_failed: Sequence[str], up: Sequence[str], verdict: Verdict | None,
                threshold: float, policy: str, changed: Sequence[str]) -> WaveDecision:
    """Halt or go on after one wave, and what to roll back. Pure.

    Args:
        todo: the wave's devices worked on in this run.
        hard_failed: those that failed hard (unreachable, refused, crashed, not up in time).
        up: those that came up on the new version.
        verdict: the canary verdict over `up` (None when not judged: nobody came up, or the wave already
            went over the failure threshold).
        threshold: the share of `todo` allowed to fail hard.
        policy: "failed" rolls back the failed devices (hard and canary), "all" everything `changed`.
        changed: every device this rollout changed so far (for policy "all").
    """
    canary_failed = tuple(up) if verdict is not None and verdict.result == "fail" else ()
    if wave_over_threshold(len(hard_failed), len(todo), threshold):
        reason = f"{len(hard_failed)} of {len(todo)} devices failed (threshold {threshold:.0%})"
        halted_by: tuple[str, ...] = ("failure_threshold",)
    elif verdict is not None and canary_failed:
        reason = f"the canary judge failed the version on {len(up)} device(s): {verdict.reason}"
        halted_by = verdict.halted_by
    else:
        return WaveDecision(False, "", (), (), tuple(hard_failed))
    failed = tuple(hard_failed) + canary_failed
    roll_back = tuple(dict.fromkeys([*failed, *changed])) if policy == "all" else failed
    return WaveDecision(True, reason, halted_by, canary_failed, roll_back)


def halt_info(record: RolloutRecord, wave: int, hard_failed: Sequence[str], decision: WaveDecision) -> HaltInfo:
    """What the record says about a halt: the wave, its failed devices and why (each hard failure's step and
    message after the decision's reason)."""
    reasons = [f"{device_id} at {error.step}: {error.message}" for device_id in hard_failed
               if (error := record.devices[device_id].error) is not None]
    return HaltInfo(wave=wave, failed=tuple(hard_failed) + decision.canary_failed,
                    reason=decision.reason + (": " + "; ".join(reasons) if reasons else ""),
                    halted_by=decision.halted_by)


@dataclass(frozen=True)
class RollbackPlan:
    """How each device chosen for rollback gets back to the version it ran before (see `plan_rollback`)."""

    roll: tuple[tuple[str, str], ...]
    """(device, version to make current again): devices this rollout switched."""
    already: tuple[str, ...]
    """Devices whose agent refused the version and went back by itself: only recorded as rolled back."""
    kept: tuple[str, ...]
    """Devices left as they are: never switched, or with no earlier version to go back to (stay failed)."""


def plan_rollback(devices: Sequence[DeviceRecord], version: str) -> RollbackPlan:
    """Chooses, per device to roll back, whether to switch it back, only record it, or leave it. Pure."""
    roll: list[tuple[str, str]] = []
    already: list[str] = []
    kept: list[str] = []
    for device in devices:
        if device.refused_by_device:
            already.append(device.device_id)
        elif device.activated_at is None or device.before is None or device.before == version:
            kept.append(device.device_id)
        else:
            roll.append((device.device_id, device.before))
    return RollbackPlan(tuple(roll), tuple(already), tuple(kept))
