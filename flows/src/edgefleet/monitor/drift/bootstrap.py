"""The CUSUM's tail on the device's own baseline, by a moving-block bootstrap. Pure (numpy).

A one-sided CUSUM with reference k raises its false alarms at the rate its increments' sums reach the
threshold h, and for large h that rate falls like e^{-theta* h}: theta* > 0 is the root of the sums'
cumulant generating function, log E e^{theta (S_l - l k)} = 0 for sums S_l of l consecutive increments
(Lundberg's exponent; the long-run form for correlated increments). For Gaussian increments of long-run
variance v it is 2 k / v, and Siegmund's threshold (`edgefleet.monitor.drift.threshold`) is planned on that.

The moving-block bootstrap resamples the baseline as a concatenation of its own overlapping blocks of l
consecutive increments, drawn at random: a random walk whose steps are those blocks' sums. Its exponent is
the root over the empirical distribution of the N - l + 1 overlapping block sums, found here directly (the
bootstrap's run length, without simulating millions of blocks per device). The *tail scale* compares it to
the Gaussian one of the same block sums' mean -m l and variance v l:

    c = sqrt(2 m / (theta* v)),     c = 1 on Gaussian blocks; c > 1: the sums' upper tail is heavier

(a class-mix divergence's: high divergences cluster). The CUSUM is planned on a spread widened by c, which
puts Siegmund's exponent at the bootstrap's (`edgefleet.monitor.drift.detector.plan`). c is itself an
estimate from ~N / l independent blocks: its standard error is the spread of log c over `resamples` block
bootstrap resamples of N / l blocks each (seeded: the same baseline gives the same plan), and the threshold
integrates it with the long-run spread's own.

Block length, the stated rule: Politis and White's (2004) optimal moving-block length for the long-run
variance, evaluated for an AR(1) with the increments' lag-1 autocorrelation phi (clipped to 0..0.95):
l = ceil((3 N / 2)^{1/3} (2 phi / (1 - phi^2))^{2/3}), at least 1 (`arch`'s data-driven version is not a
dependency; phi 0.5, N 500: l = 11). Fewer than `MIN_BLOCKS` blocks of that length in the baseline: no
bootstrap (c = 1, the integrated threshold alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_BLOCKS = 20
"""A baseline with fewer non-overlapping blocks than this cannot estimate its sums' tail: c = 1 (fallback)."""
MAX_PHI = 0.95
NEWTON_STEPS = 60
NEWTON_TOLERANCE = 1e-10
SCALE_BOUNDS = (0.25, 4.0)
"""Tail scales of a resample are kept inside these (a resample without a positive sum has theta* = inf)."""


@dataclass(frozen=True)
class TailScale:
    """The bootstrap's tail scale of one CUSUM's increments (module docstring)."""

    scale: float
    """c: 1 on Gaussian block sums, above 1 when their upper tail is heavier; 1 on the fallback."""
    log_se: float
    """Standard error of log c over the block-bootstrap resamples (0 on the fallback)."""
    block: int
    """The block length l (0: fallback, the baseline too short)."""


FALLBACK = TailScale(1.0, 0.0, 0)


def block_length(phi: float, blocks: int) -> int:
    """Politis and White's moving-block length for an AR(1) of lag-1 autocorrelation `phi` over `blocks`."""
    phi = min(max(phi, 0.0), MAX_PHI)
    return max(1, math.ceil((1.5 * blocks) ** (1 / 3) * (2 * phi / (1 - phi**2)) ** (2 / 3)))


def lag1(values: np.ndarray) -> float:
    """The lag-1 autocorrelation of `values` (0 when they do not vary)."""
    centred = values - values.mean()
    denominator = float(centred @ centred)
    return float(centred[1:] @ centred[:-1]) / denominator if denominator > 0 else 0.0


def block_sums(values: np.ndarray, length: int) -> np.ndarray:
    """The sums of every run of `length` consecutive values along the last axis (N - length + 1 of them)."""
    total = np.cumsum(values, axis=-1)
    total = np.concatenate([np.zeros((*total.shape[:-1], 1)), total], axis=-1)
    return total[..., length:] - total[..., :-length]


def resample(rng: np.random.Generator, values: np.ndarray, length: int, resamples: int) -> np.ndarray:
    """`resamples` moving-block bootstrap series (rows): N // length blocks of `length` consecutive values
    each, their starts drawn uniformly from the N - length + 1 possible."""
    count = len(values) // length
    starts = rng.integers(0, len(values) - length + 1, size=(resamples, count))
    return values[starts[:, :, None] + np.arange(length)].reshape(resamples, count * length)


def log_mgf(sums: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: log mean(e^{theta s}) and its derivative in theta (without overflow)."""
    tilted = theta[:, None] * sums
    peak = tilted.max(axis=1)
    weights = np.exp(tilted - peak[:, None])
    mass = weights.sum(axis=1)
    return np.log(mass / sums.shape[1]) + peak, (weights * sums).sum(axis=1) / mass


def exponents(sums: np.ndarray) -> np.ndarray:
    """theta* > 0 with mean(e^{theta* s}) = 1 over each row of `sums` (R x M, every row of negative mean);
    inf for a row without a positive sum. Newton's method from the right of the root, where the convex log
    mean is positive: it falls monotonically onto the root. The start: twice the Gaussian exponent 2 m / v
    when the log mean is positive there (near-Gaussian sums: a few steps), else one that always is."""
    sums = np.atleast_2d(sums)
    top = sums.max(axis=1)
    positive = top > 0
    safe = (math.log(sums.shape[1]) + 1) / np.where(positive, top, 1.0)
    gaussian = 4 * -sums.mean(axis=1) / np.maximum(sums.var(axis=1), np.finfo(float).tiny)
    theta = np.where(positive, np.where(log_mgf(sums, gaussian)[0] > 0, gaussian, safe), np.inf)
    live = np.flatnonzero(positive)
    for _ in range(NEWTON_STEPS):
        if not live.size:
            break
        value, slope = log_mgf(sums[live], theta[live])
        step = value / slope
        theta[live] -= step
        live = live[np.abs(step) > NEWTON_TOLERANCE * theta[live]]
    return theta


def scales(sums: np.ndarray, length: int) -> np.ndarray:
    """c per row of `sums` (module docstring), inside `SCALE_BOUNDS`."""
    sums = np.atleast_2d(sums)
    drift = -sums.mean(axis=1) / length
    variance = sums.var(axis=1) / length
    theta = exponents(sums)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.sqrt(2 * drift / (theta * variance))
    return np.clip(np.nan_to_num(c, nan=SCALE_BOUNDS[0]), *SCALE_BOUNDS)


def tail_scale(increments: np.ndarray, k: float, resamples: int, seed: int) -> TailScale:
    """The tail scale of a CUSUM with reference `k` on the baseline's standardized `increments` (in order),
    with its block-bootstrap standard error (`resamples` resamples, `seed`). The fallback when the baseline
    holds fewer than `MIN_BLOCKS` blocks of the rule's length or its increments do not drift below k."""
    values = np.asarray(increments, dtype=float)
    values = values[np.isfinite(values)]
    length = block_length(lag1(values), len(values)) if len(values) > 1 else 1
    count = len(values) // length
    if count < MIN_BLOCKS or k <= 0:
        return FALLBACK
    steps = values - k
    sums = block_sums(steps, length)
    if sums.mean() >= 0 or sums.var() <= 0:
        return FALLBACK
    point = float(scales(sums, length)[0])
    drawn = block_sums(resample(np.random.default_rng(seed), steps, length, resamples), length)
    spread = float(np.log(scales(drawn, length)).std(ddof=1)) if resamples > 1 else 0.0
    return TailScale(point, spread, length)
