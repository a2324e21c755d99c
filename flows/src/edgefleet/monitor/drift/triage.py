"""The daily triage list: which devices' day differs from their baseline, Benjamini-Hochberg across devices.

Not the alarm (the CUSUMs are, with their own per-device budget): a list for a person to look at once a day,
ranked, with the false discovery rate across the fleet held at `triage_fdr`. Per device and watched
statistic (and direction), the day's mean of its blocks against the baseline's mean, by a normal test whose
variance counts the correlation between blocks and the baseline's own error:
s_lr^2 * (1 / n_day + 1 / n_baseline). A device's p-value is its smallest, times its number of tests
(Bonferroni within the device); BH (`scipy.stats.false_discovery_control`) across the devices. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import stats

from edgefleet.monitor.drift.blocks import Stats
from edgefleet.monitor.drift.config import DriftConfig, MetricName
from edgefleet.monitor.drift.detector import Direction
from edgefleet.monitor.drift.device import DeviceBaseline


class TriageEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    device: str
    metric: MetricName
    direction: Direction
    effect_sd: float
    """The day's mean minus the baseline's, in the baseline's SDs of the block statistic."""
    pvalue: float
    """The device's p-value (Bonferroni over its tests)."""
    qvalue: float
    """Benjamini-Hochberg adjusted across the devices."""


def device_test(device: DeviceBaseline, day: Stats) -> tuple[float, MetricName, Direction, float] | None:
    """(p, metric, direction, effect in SDs) of the device's most significant test; None without blocks."""
    best = None
    for cusum in device.cusums:
        values = np.asarray(day.get(cusum.baseline.metric, ()), dtype=float)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            continue
        base = cusum.baseline
        shift = float(values.mean()) - base.mean
        z = shift / (base.long_run_sd * math.sqrt(1 / len(values) + 1 / base.blocks))
        p = float(stats.norm.sf(z if cusum.direction == "up" else -z))
        if best is None or p < best[0]:
            best = (p, base.metric, cusum.direction, shift / base.sd)
    if best is None:
        return None
    return min(1.0, best[0] * len(device.cusums)), best[1], best[2], best[3]


def triage(devices: Mapping[str, tuple[DeviceBaseline, Stats]], config: DriftConfig) -> tuple[TriageEntry, ...]:
    """The devices whose BH-adjusted q-value is at most `config.triage_fdr`, most significant first."""
    tested = [(name, found) for name, (device, day) in sorted(devices.items())
              if (found := device_test(device, day)) is not None]
    if not tested:
        return ()
    q = stats.false_discovery_control([found[0] for _, found in tested], method="bh")
    entries = [TriageEntry(device=name, metric=found[1], direction=found[2], effect_sd=found[3], pvalue=found[0],
                           qvalue=float(qv)) for (name, found), qv in zip(tested, q, strict=True)]
    return tuple(sorted((e for e in entries if e.qvalue <= config.triage_fdr), key=lambda e: (e.qvalue, e.device)))
