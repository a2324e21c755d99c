"""The sequential detector: a CUSUM per block statistic and direction, on the device's own baseline. Pure.

| step              | what                                                                                   |
|-------------------|----------------------------------------------------------------------------------------|
| baseline          | mean m and SD s of the statistic over the first N blocks after the activation          |
| long-run spread   | blocks are correlated (the scene drifts slowly): the SD of a sum of n blocks grows like |
|                   | sqrt(n) * s_lr, not sqrt(n) * s. AR(1): s_lr = s * sqrt((1 + phi) / (1 - phi)), phi the |
|                   | lag-1 autocorrelation (clipped to 0..`max_autocorrelation`); batch means: s_lr^2 =     |
|                   | b * Var(means of batches of b = sqrt(N) blocks); `larger` (default): the larger of the |
|                   | two (AR(1) misses bursts that persist longer than the lag-1 correlation says, as a     |
|                   | class-mix divergence's; batch means alone is noisy with few batches)                   |
| guard             | s_lr is widened by `estimation_guard` standard errors of its estimate, and k raised by |
|                   | as many standard errors of m (1 / sqrt(N) in s_lr): an estimated baseline is not exact |
| standardized      | z = (x - m) / s_lr, clipped to +-`clip_sd` (one freak block moves the sum by at most   |
|                   | that: a camera's rare class comes in bursts, a heavy tail no normal threshold holds),  |
|                   | then centred and scaled by the clipped baseline's own mean and long-run SD; up: z,     |
|                   | down: -z (the class mix's divergence only grows under a change: up only)               |
| CUSUM             | S = max(0, S + z - k), alarm when S > h, then S = 0 (a new run)                        |
| k                 | half the `reference_shift_sd` shift, in s_lr units: r * s / s_lr / 2 (+ the guard)     |
| h                 | the in-control run length (blocks between false alarms) of each CUSUM is the device's  |
|                   | budget split evenly over its CUSUMs: ARL0 = n_cusums * blocks_per_day * 100 / budget;  |
|                   | h solves Siegmund's approximation ARL0 = (e^{2kb} - 2kb - 1) / 2k^2, b = h + 1.166     |
| effect            | at an alarm, the mean z since the run began (the CUSUM's estimate of the change point), |
|                   | in baseline SDs (s) and in natural units                                               |

Siegmund's approximation is for independent normal increments; with the long-run spread, a CUSUM with small
k on AR(1) increments runs close to it (the sum is what a small-k CUSUM sees). `bench/drift_bench.py`
measures the false alarms that are left on simulated correlated, heterogeneous devices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import brentq

from edgefleet.monitor.drift.config import DriftConfig, DriftError, MetricName

SIEGMUND_CORRECTION = 1.166
"""Siegmund's overshoot correction of a normal CUSUM's threshold (2 x 0.583)."""
NO_SPREAD = 1e-9
"""A statistic whose baseline SD is below this does not vary (a classifier's detections): not watched."""
MAX_THRESHOLD = 1_000.0
DAYS_PER_BUDGET = 100.0
"""The budget is stated per 100 device-days."""
Direction = Literal["up", "down"]


@dataclass(frozen=True)
class MetricBaseline:
    """One statistic over a device's baseline blocks."""

    metric: MetricName
    mean: float
    sd: float
    autocorrelation: float
    long_run_sd: float
    blocks: int
    clip_sd: float
    clipped_mean: float
    """Mean of the baseline's clipped z (0 for a symmetric statistic)."""
    clipped_long_run_sd: float
    """Long-run SD of the baseline's clipped z (1 without clipping and correlation estimation error)."""

    def clipped(self, values: np.ndarray) -> np.ndarray:
        """The statistic standardized, clipped, centred and scaled to unit long-run SD on the baseline."""
        z = np.clip((np.asarray(values, dtype=float) - self.mean) / self.long_run_sd, -self.clip_sd, self.clip_sd)
        return (z - self.clipped_mean) / self.clipped_long_run_sd

    @property
    def relative_se(self) -> float:
        """Standard error of log(long_run_sd): the spread's own (AR(1) large-sample approximation)."""
        phi, n = self.autocorrelation, self.blocks
        return math.sqrt((1 + phi) / (2 * n * (1 - phi)) + 1 / (n * (1 - phi**2)))


def ar1_long_run_sd(values: np.ndarray, max_autocorrelation: float) -> tuple[float, float]:
    """(phi, s_lr): the lag-1 autocorrelation (clipped to 0..max) and the AR(1) long-run SD."""
    centred = values - values.mean()
    denominator = float(centred @ centred)
    phi = float(centred[1:] @ centred[:-1]) / denominator if denominator > 0 else 0.0
    phi = min(max(phi, 0.0), max_autocorrelation)
    return phi, float(values.std(ddof=1)) * math.sqrt((1 + phi) / (1 - phi))


def batch_means_long_run_sd(values: np.ndarray) -> float:
    """s_lr by non-overlapping batch means of b = floor(sqrt(N)) blocks."""
    size = max(1, int(math.sqrt(len(values))))
    batches = len(values) // size
    means = values[: batches * size].reshape(batches, size).mean(axis=1)
    return math.sqrt(size * float(means.var(ddof=1)))


def fit_metric(metric: MetricName, values: Sequence[float] | np.ndarray, config: DriftConfig) -> MetricBaseline | None:
    """The baseline of one statistic; None when it does not vary (nothing to watch). NaN blocks are left out."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if len(data) < config.baseline_blocks:
        raise DriftError(f"drift baseline of {metric}: {len(data)} blocks with a value, "
                         f"{config.baseline_blocks} needed",
                         "wait for more blocks after the activation, or lower drift.baseline_blocks")
    sd = float(data.std(ddof=1))
    if sd < NO_SPREAD:
        return None
    phi = ar1_long_run_sd(data, config.max_autocorrelation)[0]
    long_run = lr_sd(data, config)
    mean = float(data.mean())
    z = np.clip((data - mean) / long_run, -config.clip_sd, config.clip_sd)
    clipped_sd = lr_sd(z, config)
    return MetricBaseline(metric, mean, sd, phi, long_run, len(data), config.clip_sd, float(z.mean()), clipped_sd)


def lr_sd(values: np.ndarray, config: DriftConfig) -> float:
    """The long-run SD of `values` by the configured method."""
    ar1 = ar1_long_run_sd(values, config.max_autocorrelation)[1]
    if config.long_run_variance == "ar1":
        return ar1
    batch_means = max(batch_means_long_run_sd(values), float(values.std(ddof=1)))
    return batch_means if config.long_run_variance == "batch_means" else max(ar1, batch_means)


def siegmund_arl(h: float, k: float, shift: float = 0.0) -> float:
    """Average run length (blocks) of a one-sided CUSUM with reference k and threshold h on N(shift, 1)."""
    return math.exp(log_siegmund_arl(h, k, shift))


def log_siegmund_arl(h: float, k: float, shift: float = 0.0) -> float:
    """log of `siegmund_arl`, without overflow: (e^x - x - 1) / 2 delta^2 with x = -2 delta b."""
    delta, b = shift - k, h + SIEGMUND_CORRECTION
    if abs(delta) < 1e-9:
        return 2 * math.log(b)
    x = -2 * delta * b
    if x > 1:  # e^x dominates: log(e^x - x - 1) = x + log(1 - (x + 1) e^-x)
        numerator = x + math.log1p(-(x + 1) * math.exp(-x))
    else:
        numerator = math.log(math.expm1(x) - x)
    return numerator - math.log(2 * delta * delta)


def threshold_for(arl0_blocks: float, k: float) -> float:
    """The h whose in-control average run length is `arl0_blocks` (Siegmund)."""
    target = math.log(arl0_blocks)
    if log_siegmund_arl(0.0, k) >= target:
        return 0.0
    return float(brentq(lambda h: log_siegmund_arl(h, k) - target, 0.0, MAX_THRESHOLD))


@dataclass(frozen=True)
class Cusum:
    """One watched statistic in one direction, with everything it needs to standardize and decide."""

    baseline: MetricBaseline
    direction: Direction
    spread: float
    """The long-run SD of the statistic the CUSUM works in (the estimate, widened by the guard)."""
    k: float
    h: float

    def standardized(self, values: np.ndarray) -> np.ndarray:
        """The CUSUM's increments (before k): clipped z in the direction watched, over the guard's widening."""
        sign = 1.0 if self.direction == "up" else -1.0
        widening = self.spread / (self.baseline.long_run_sd * self.baseline.clipped_long_run_sd)
        return sign * self.baseline.clipped(values) / widening


def directions(metric: MetricName) -> tuple[Direction, ...]:
    """The class mix's divergence only grows under a change; the others may go either way."""
    return ("up",) if metric == "class_mix" else ("up", "down")


def plan(baselines: Sequence[MetricBaseline], config: DriftConfig, blocks_per_day: float) -> tuple[Cusum, ...]:
    """The device's CUSUMs, with the false-alarm budget split evenly over them (see the module table)."""
    if blocks_per_day <= 0:
        raise DriftError(f"drift: {blocks_per_day} blocks per day", "measure the block rate over the baseline")
    count = sum(len(directions(b.metric)) for b in baselines)
    arl0 = count * blocks_per_day * DAYS_PER_BUDGET / config.false_alarms_per_100_device_days
    out = []
    for base in baselines:
        spread = base.long_run_sd * base.clipped_long_run_sd * math.exp(config.estimation_guard * base.relative_se)
        k = config.reference_shift_sd * base.sd / spread / 2 + config.estimation_guard / math.sqrt(base.blocks)
        h = threshold_for(arl0, k)
        out.extend(Cusum(base, direction, spread, k, h) for direction in directions(base.metric))
    return tuple(out)


@dataclass(frozen=True)
class Scan:
    """A CUSUM scan over T blocks of D series (arrays of D): the state after it and what alarmed."""

    s: np.ndarray
    run_length: np.ndarray
    run_sum: np.ndarray
    first_alarm: np.ndarray
    """Index of the first alarming block (-1: none)."""
    first_run_length: np.ndarray
    first_run_sum: np.ndarray
    alarms: np.ndarray
    """Alarms in the scan (the CUSUM restarts at 0 after each)."""


def scan(z: np.ndarray, k: np.ndarray | float, h: np.ndarray | float, s: np.ndarray | None = None,
         run_length: np.ndarray | None = None, run_sum: np.ndarray | None = None) -> Scan:
    """Runs the CUSUM over `z` (T blocks x D series, standardized) from the given state (default 0)."""
    z = np.asarray(z, dtype=float).reshape(len(z), -1)
    width = z.shape[1]
    s = np.zeros(width) if s is None else np.array(s, dtype=float)
    run_length = np.zeros(width) if run_length is None else np.array(run_length, dtype=float)
    run_sum = np.zeros(width) if run_sum is None else np.array(run_sum, dtype=float)
    first, first_length, first_sum = np.full(width, -1), np.zeros(width), np.zeros(width)
    alarms = np.zeros(width, dtype=int)
    for t, row in enumerate(z):
        s = np.maximum(0.0, s + np.nan_to_num(row) - k)  # a block without a value adds nothing
        running = s > 0
        run_length = np.where(running, run_length + 1, 0.0)
        run_sum = np.where(running, run_sum + np.nan_to_num(row), 0.0)
        alarm = s > h
        if alarm.any():
            new = alarm & (first < 0)
            first, first_length, first_sum = (np.where(new, t, first), np.where(new, run_length, first_length),
                                              np.where(new, run_sum, first_sum))
            alarms += alarm
            s, run_length, run_sum = (np.where(alarm, 0.0, x) for x in (s, run_length, run_sum))
    return Scan(s, run_length, run_sum, first, first_length, first_sum, alarms)
