"""Wave planning and the failure threshold: pure functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence

from edgefleet.flows.rollout.params import WaveSize


def cumulative_size(wave: WaveSize, total: int) -> int:
    """How many devices have been reached once `wave` is done: a count, or a percentage of `total` (rounded up)."""
    if isinstance(wave, int):
        return min(wave, total)
    return min(total, math.ceil(total * float(str(wave).rstrip("%")) / 100))


def plan_waves(device_ids: Sequence[str], waves: Sequence[WaveSize]) -> list[list[str]]:
    """Splits devices (in order) into waves of cumulative sizes; empty waves are dropped.

    The last wave always reaches every device, even when `waves` does not end at 100%.

    Example:
        >>> [len(w) for w in plan_waves([f"d{i}" for i in range(20)], [1, "25%", "100%"])]
        [1, 4, 15]
    """
    total = len(device_ids)
    plan: list[list[str]] = []
    reached = 0
    sizes = [cumulative_size(wave, total) for wave in waves] + [total]
    for size in sizes:
        if size > reached:
            plan.append(list(device_ids[reached:size]))
            reached = size
    return plan


def wave_over_threshold(failed: int, size: int, threshold: float) -> bool:
    """True when `failed` of `size` devices is more than the allowed share `threshold` (0: any failure)."""
    return size > 0 and failed / size > threshold
