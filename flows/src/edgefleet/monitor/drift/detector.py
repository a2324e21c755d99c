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
| normal scores     | (`transform`, default) each block's value is first replaced by its normal score in the  |
|                   | baseline's own distribution (Phi^-1 of its mid-rank; linear beyond the baseline's     |
|                   | range): a skewed divergence or a median of a few bucket values then has normal tails, |
|                   | which the threshold assumes; `linear` keeps (x - m)                                    |
| standardized      | z = score / s_lr, clipped to +-`clip_sd` (one freak block moves the sum by at most     |
|                   | that: a camera's rare class comes in bursts), then centred and scaled by the clipped  |
|                   | baseline's own mean and long-run SD; up: z, down: -z (the class mix's divergence only  |
|                   | grows under a change: up only)                                                         |
| tail scale        | (`threshold: bootstrap`, opt-in) each CUSUM's increments on the baseline, resampled   |
|                   | by a moving-block bootstrap: c compares the exponent of their block sums' upper tail   |
|                   | with a Gaussian's (`edgefleet.monitor.drift.bootstrap`); s_lr widened by max(c, 1),   |
|                   | and c's own standard error integrated by the threshold with the spread's              |
| guard             | optional (`estimation_guard`): s_lr widened by that many standard errors of its        |
|                   | estimate, k raised by as many standard errors of m                                     |
| CUSUM             | S = max(0, S + z - k), alarm when S > h, then S = 0 (a new run)                        |
| k                 | half the `reference_shift_sd` shift, in s_lr units: r * s / s_lr / 2 (+ any guard)     |
| h                 | the in-control run length (blocks between false alarms) of each CUSUM is the device's  |
|                   | budget split evenly over its CUSUMs: ARL0 = n_cusums * blocks_per_day * 100 / budget;  |
|                   | h makes the false alarms of a fleet of such baselines average 1 / ARL0 per block over  |
|                   | the baseline's own estimation errors (mean +- 1/sqrt(N), spread +- its standard error; |
|                   | Siegmund's ARL inside: `edgefleet.monitor.drift.threshold`)                            |
| effect            | at an alarm, the mean z since the run began (the CUSUM's estimate of the change point), |
|                   | in baseline SDs (s) and in natural units                                               |

Siegmund's approximation is for independent normal increments; with normal scores and the long-run spread a
CUSUM on AR(1)-like blocks runs close to it. Sums of class-mix divergences have a heavier upper tail than
that (high divergences cluster): the block bootstrap measures it on each baseline (the tail scale), and the
guard (`estimation_guard`) covers what 500 blocks cannot show of it (`edgefleet.monitor.drift.config`).
`bench/drift_bench.py` and `bench/drift_scenes.py` measure the false alarms that are left on correlated,
heterogeneous devices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import ndtri

from edgefleet.monitor.drift.bootstrap import FALLBACK, TailScale, tail_scale
from edgefleet.monitor.drift.config import DriftConfig, DriftError, MetricName
from edgefleet.monitor.drift.threshold import integrated_threshold

NO_SPREAD = 1e-9
"""A statistic whose baseline SD is below this does not vary (a classifier's detections): not watched."""
DAYS_PER_BUDGET = 100.0
"""The budget is stated per 100 device-days."""
Direction = Literal["up", "down"]
TAIL_SCALE_FLOOR = 1.0
"""The bootstrap's tail scale widens the plan, never narrows it below the Gaussian one: on Gaussian AR(1)
blocks (phi 0.5, 500 of them) its estimate averages 0.93 (500 blocks under-represent the far tail of their
sums), and a narrower plan there would spend the budget the integrated threshold holds."""


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
    spread_batches: int = 0
    """The batches of the batch-means estimate when it gave the (clipped) long-run SD; 0: the AR(1) one."""
    ranked_on: tuple[float, ...] = ()
    """The baseline's values, sorted, when the statistic is watched on its normal scores (else empty)."""
    score_sd: float = 0.0
    """SD of the baseline's normal scores (with `ranked_on`)."""
    score_long_run_sd: float = 0.0
    """Long-run SD of the baseline's normal scores (with `ranked_on`)."""
    tail_scales: tuple[float, ...] = ()
    """Per direction watched (`directions`): the block bootstrap's tail scale of the CUSUM's increments on the
    baseline (`edgefleet.monitor.drift.bootstrap`); empty: 1 (the integrated threshold alone)."""
    tail_log_ses: tuple[float, ...] = ()
    """Per direction: the standard error of the log tail scale (block bootstrap); empty: 0."""
    tail_blocks: tuple[int, ...] = ()
    """Per direction: the bootstrap's block length (0: the fallback, the baseline too short)."""

    def tail(self, direction: Direction) -> TailScale:
        """The bootstrap's tail scale of the CUSUM in `direction` (the fallback when none was measured)."""
        if not self.tail_scales:
            return FALLBACK
        index = directions(self.metric).index(direction)
        return TailScale(self.tail_scales[index], self.tail_log_ses[index], self.tail_blocks[index])

    def unit(self, values: np.ndarray | Sequence[float]) -> np.ndarray:
        """The statistic in long-run SDs from the baseline's centre, before clipping (NaN stays NaN)."""
        x = np.asarray(values, dtype=float)
        if not self.ranked_on:
            return (x - self.mean) / self.long_run_sd
        return normal_scores(np.asarray(self.ranked_on), x, self.sd) / self.score_long_run_sd

    @property
    def sd_per_long_run_sd(self) -> float:
        """The block statistic's SD in long-run SDs (a shift of 1 SD is this many long-run SDs)."""
        return self.score_sd / self.score_long_run_sd if self.ranked_on else self.sd / self.long_run_sd

    def clipped(self, values: np.ndarray, widening: float = 1.0) -> np.ndarray:
        """The statistic standardized (over `widening`), clipped, centred and scaled to unit long-run SD on the
        baseline. The clip comes after the widening: a large change still adds the whole clip per block."""
        z = np.clip(self.unit(values) / widening, -self.clip_sd, self.clip_sd)
        return (z - self.clipped_mean) / self.clipped_long_run_sd

    @property
    def relative_se(self) -> float:
        """Standard error of log(long_run_sd), the spread's own: of the estimator that gave it (AR(1)
        large-sample approximation, or batch means' 1 / sqrt(2 (B - 1)) for B batches)."""
        if self.spread_batches:
            return 1 / math.sqrt(2 * (self.spread_batches - 1))
        phi, n = self.autocorrelation, self.blocks
        return math.sqrt((1 + phi) / (2 * n * (1 - phi)) + 1 / (n * (1 - phi**2)))


def normal_scores(ranked_on: np.ndarray, values: np.ndarray, scale: float) -> np.ndarray:
    """Phi^-1 of each value's mid-rank in the sorted baseline `ranked_on` (ties share their rank), kept inside
    (1 / 2N, 1 - 1 / 2N): the baseline's own distribution mapped onto N(0, 1), so its skew and tails (a
    divergence's, a median's few bucket values) do not break a threshold made for normal increments. Beyond
    the baseline's range a value goes on linearly (`scale`: the baseline's SD per unit), so a large change
    still moves the CUSUM by as much as the clipping allows."""
    n = len(ranked_on)
    below = np.searchsorted(ranked_on, values, side="left")
    through = np.searchsorted(ranked_on, values, side="right")
    edge = ndtri(1 - 0.5 / n)
    scores = ndtri(np.clip((below + through) / (2 * n), 0.5 / n, 1 - 0.5 / n))
    beyond = np.where(values > ranked_on[-1], edge + (values - ranked_on[-1]) / scale,
                      np.where(values < ranked_on[0], -edge - (ranked_on[0] - values) / scale, scores))
    return np.where(np.isfinite(values), beyond, np.nan)


def ar1_long_run_sd(values: np.ndarray, max_autocorrelation: float) -> tuple[float, float]:
    """(phi, s_lr): the lag-1 autocorrelation (clipped to 0..max) and the AR(1) long-run SD."""
    centred = values - values.mean()
    denominator = float(centred @ centred)
    phi = float(centred[1:] @ centred[:-1]) / denominator if denominator > 0 else 0.0
    phi = min(max(phi, 0.0), max_autocorrelation)
    return phi, float(values.std(ddof=1)) * math.sqrt((1 + phi) / (1 - phi))


def batch_means_long_run_sd(values: np.ndarray) -> float:
    """s_lr by non-overlapping batch means of b = floor(sqrt(N)) blocks."""
    size, batches = batch_layout(len(values))
    means = values[: batches * size].reshape(batches, size).mean(axis=1)
    return math.sqrt(size * float(means.var(ddof=1)))


def batch_layout(blocks: int) -> tuple[int, int]:
    """(batch size, batches) of the batch-means estimate over `blocks` blocks."""
    size = max(1, int(math.sqrt(blocks)))
    return size, blocks // size


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
    ranked = tuple(float(v) for v in np.sort(data)) if config.transform == "normal_scores" else ()
    scores = normal_scores(np.asarray(ranked), data, sd) if ranked else np.zeros(1)
    score_sd, score_long_run = (float(scores.std(ddof=1)), lr_sd(scores, config)) if ranked else (0.0, 0.0)
    unit = scores / score_long_run if ranked else (data - mean) / long_run
    z = np.clip(unit, -config.clip_sd, config.clip_sd)
    clipped_sd = lr_sd(z, config)
    by_batches = config.long_run_variance != "ar1" and clipped_sd > ar1_long_run_sd(z, config.max_autocorrelation)[1]
    k = reference_k(config, score_sd / score_long_run if ranked else sd / long_run)
    tails = tail_scales(metric, (z - z.mean()) / clipped_sd, k, config)
    return MetricBaseline(metric, mean, sd, phi, long_run, len(data), config.clip_sd, float(z.mean()), clipped_sd,
                          batch_layout(len(data))[1] if by_batches else 0, ranked, score_sd, score_long_run,
                          tuple(t.scale for t in tails), tuple(t.log_se for t in tails), tuple(t.block for t in tails))


def reference_k(config: DriftConfig, sd_per_long_run_sd: float) -> float:
    """The CUSUM's reference before any widening: half the reference shift, in long-run SDs."""
    return config.reference_shift_sd * sd_per_long_run_sd / 2


def tail_scales(metric: MetricName, increments: np.ndarray, k: float, config: DriftConfig) -> tuple[TailScale, ...]:
    """The bootstrap's tail scale of each direction's CUSUM on the baseline's own increments (in order);
    none with `threshold: integrated`."""
    if config.threshold != "bootstrap":
        return ()
    return tuple(tail_scale((1.0 if direction == "up" else -1.0) * increments, k, config.bootstrap_resamples,
                            config.bootstrap_seed) for direction in directions(metric))


def lr_sd(values: np.ndarray, config: DriftConfig) -> float:
    """The long-run SD of `values` by the configured method."""
    ar1 = ar1_long_run_sd(values, config.max_autocorrelation)[1]
    if config.long_run_variance == "ar1":
        return ar1
    batch_means = max(batch_means_long_run_sd(values), float(values.std(ddof=1)))
    return batch_means if config.long_run_variance == "batch_means" else max(ar1, batch_means)


@dataclass(frozen=True)
class Cusum:
    """One watched statistic in one direction, with everything it needs to standardize and decide."""

    baseline: MetricBaseline
    direction: Direction
    spread: float
    """The long-run SD of the statistic the CUSUM works in (the estimate, widened by the tail scale and guard)."""
    k: float
    h: float

    def standardized(self, values: np.ndarray) -> np.ndarray:
        """The CUSUM's increments (before k): clipped z in the direction watched, over the plan's widening."""
        sign = 1.0 if self.direction == "up" else -1.0
        widening = self.spread / (self.baseline.long_run_sd * self.baseline.clipped_long_run_sd)
        return sign * self.baseline.clipped(values, widening)


def directions(metric: MetricName) -> tuple[Direction, ...]:
    """The class mix's divergence only grows under a change; the others may go either way."""
    return ("up",) if metric == "class_mix" else ("up", "down")


def plan(baselines: Sequence[MetricBaseline], config: DriftConfig, blocks_per_day: float) -> tuple[Cusum, ...]:
    """The device's CUSUMs, with the false-alarm budget split evenly over them (see the module table)."""
    if blocks_per_day <= 0:
        raise DriftError(f"drift: {blocks_per_day} blocks per day", "measure the block rate over the baseline")
    count = sum(len(directions(b.metric)) for b in baselines)
    arl0 = count * blocks_per_day * DAYS_PER_BUDGET / config.false_alarms_per_100_device_days
    return tuple(plan_one(base, direction, config, arl0) for base in baselines for direction in directions(base.metric))


def plan_one(base: MetricBaseline, direction: Direction, config: DriftConfig, arl0: float) -> Cusum:
    """One CUSUM: its spread widened by the bootstrap's tail scale (at least `TAIL_SCALE_FLOOR`) and by any
    guard, its threshold integrating the spread's and the tail scale's standard errors (in quadrature)."""
    guard, tail = config.estimation_guard, base.tail(direction)
    widening = base.clipped_long_run_sd * max(tail.scale, TAIL_SCALE_FLOOR) * math.exp(guard * base.relative_se)
    k = reference_k(config, base.sd_per_long_run_sd) / widening + guard / math.sqrt(base.blocks)
    h = integrated_threshold(arl0, k, base.blocks, math.hypot(base.relative_se, tail.log_se))
    return Cusum(base, direction, base.long_run_sd * widening, k, h)


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
    cusum = np.zeros(width) if s is None else np.array(s, dtype=float)
    length = np.zeros(width) if run_length is None else np.array(run_length, dtype=float)
    total = np.zeros(width) if run_sum is None else np.array(run_sum, dtype=float)
    first, first_length, first_sum = np.full(width, -1), np.zeros(width), np.zeros(width)
    alarms = np.zeros(width, dtype=int)
    for t, row in enumerate(z):
        cusum = np.maximum(0.0, cusum + np.nan_to_num(row) - k)  # a block without a value adds nothing
        running = cusum > 0
        length = np.where(running, length + 1, 0.0)
        total = np.where(running, total + np.nan_to_num(row), 0.0)
        alarm = cusum > h
        if alarm.any():
            new = alarm & (first < 0)
            first, first_length, first_sum = (np.where(new, t, first), np.where(new, length, first_length),
                                              np.where(new, total, first_sum))
            alarms += alarm
            cusum, length, total = (np.where(alarm, 0.0, x) for x in (cusum, length, total))
    return Scan(cusum, length, total, first, first_length, first_sum, alarms)
