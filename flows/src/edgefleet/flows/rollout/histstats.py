"""Statistics on count histograms in O(buckets): memory and time never grow with a reported count. Pure.

The canary judge receives histograms (bucket index -> count) that devices reported; a count is a claim, not
a list of observations. So nothing here expands a histogram into observations (no `np.repeat`): the
Mann-Whitney U statistic is computed from cumulative counts (with the tie correction of grouped data),
medians are interpolated inside their bucket (so an effect floor is not decided by bucket rounding), and
what one device contributes is capped (`capped`) before anything is pooled.

Impossible input (an index outside its contract range, a negative or absurd count, more errors than
inferences) raises `CannotJudge`: the judge turns it into a failed verdict that halts the wave.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

from edgefleet.kernel.contracts.distributions import (
    DETECTIONS_MAX,
    LATENCY_BUCKETS,
    LATENCY_BUCKETS_PER_DECADE,
    LATENCY_MIN_MS,
    SCORE_BUCKETS,
    Distributions,
)

MAX_WINDOW_COUNT = 10**9
"""The most inferences one device can report for one window (about 1,000 fps for 11 days): more is a lie
or a fault, and the judge refuses to judge on it."""

NO_SPREAD = 1e-9
"""Device changes that differ by less than this are equal (a t-test on them is only rounding noise)."""

Histogram = Mapping[int, float]


class CannotJudge(ValueError):
    """The judge's input is impossible (or the judge itself failed): the wave halts as on a failed verdict."""


# --- validation -----------------------------------------------------------------------------------------
def check_counts(what: str, counts: Mapping[int, int | float], low: int, high: int) -> None:
    """Every index in [low, high] and every count in [0, MAX_WINDOW_COUNT], finite; else `CannotJudge`."""
    for index, count in counts.items():
        if not low <= index <= high:
            raise CannotJudge(f"{what}: bucket index {index} outside {low}..{high}")
        if not (isinstance(count, (int, float)) and math.isfinite(count) and 0 <= count <= MAX_WINDOW_COUNT):
            raise CannotJudge(f"{what}: count {count!r} in bucket {index} outside 0..{MAX_WINDOW_COUNT}")


def check_distributions(what: str, dist: Distributions) -> None:
    """The bounds the telemetry contract promises, checked again here: the judge is safe on its own inputs."""
    check_counts(f"{what} latency", dist.latency_counts(), 0, LATENCY_BUCKETS - 1)
    check_counts(f"{what} score", dist.score_counts(), 0, SCORE_BUCKETS - 1)
    check_counts(f"{what} detections", dist.detection_counts(), 0, DETECTIONS_MAX)
    check_counts(f"{what} classes", dist.class_counts(), -1, 1_000_000)


def check_sample(what: str, inferences: int, errors: int, swap_failures: int, dist: Distributions) -> None:
    """A sample's counts are possible: errors within inferences, all within MAX_WINDOW_COUNT."""
    for name, value in (("inferences", inferences), ("errors", errors), ("swap failures", swap_failures)):
        if not 0 <= value <= MAX_WINDOW_COUNT:
            raise CannotJudge(f"{what}: {name} {value} outside 0..{MAX_WINDOW_COUNT}")
    if errors > inferences:
        raise CannotJudge(f"{what}: {errors} errors of {inferences} inferences")
    check_distributions(what, dist)


# --- caps -----------------------------------------------------------------------------------------------
def total(counts: Histogram) -> float:
    return float(sum(counts.values()))


def capped(counts: Histogram, cap: float) -> dict[int, float]:
    """`counts` scaled down to at most `cap` in total (same shape): one device's weight is bounded."""
    n = total(counts)
    factor = min(1.0, cap / n) if n > 0 else 1.0
    return {key: value * factor for key, value in counts.items() if value > 0}


def pooled(histograms: Sequence[Histogram]) -> dict[int, float]:
    out: dict[int, float] = {}
    for counts in histograms:
        for key, value in counts.items():
            out[key] = out.get(key, 0.0) + value
    return out


# --- medians --------------------------------------------------------------------------------------------
def interpolated_quantile(counts: Histogram, edges: Callable[[int], tuple[float, float]],
                          q: float = 0.5) -> float | None:
    """The q-quantile with the observations spread evenly inside each bucket (`edges(i)` = (low, high));
    None when empty. Continuous in the data, so a floor between two bucket edges is decided by the data."""
    n = total(counts)
    if n <= 0:
        return None
    target = q * n
    seen = 0.0
    for key in sorted(counts):
        count = counts[key]
        if count <= 0:
            continue
        if seen + count >= target:
            low, high = edges(key)
            return low + (high - low) * (target - seen) / count
        seen += count
    return edges(max(counts))[1]  # pragma: no cover - float rounding only


def latency_log_edges(index: int) -> tuple[float, float]:
    """Bucket `index` of the latency histogram as log10(ms) edges (the open end buckets: one bucket wide)."""
    step = 1 / LATENCY_BUCKETS_PER_DECADE
    low = math.log10(LATENCY_MIN_MS) + (index - 1) * step
    return low, low + step


def latency_median_ms(counts: Histogram) -> float | None:
    value = interpolated_quantile(counts, latency_log_edges)
    return None if value is None else 10**value


def score_edges(index: int) -> tuple[float, float]:
    return index / SCORE_BUCKETS, (index + 1) / SCORE_BUCKETS


def score_median(counts: Histogram) -> float | None:
    return interpolated_quantile(counts, score_edges)


# --- tests ----------------------------------------------------------------------------------------------
def mann_whitney_greater(a: Histogram, b: Histogram) -> float:
    """One-sided p-value that values of `a` are stochastically greater than those of `b` (ordered bucket
    indices), by the normal approximation with tie correction and continuity correction, as
    `scipy.stats.mannwhitneyu(..., method="asymptotic")` on the expanded data, in O(buckets)."""
    n_a, n_b = total(a), total(b)
    if n_a <= 0 or n_b <= 0:
        return 1.0
    keys = sorted(set(a) | set(b))
    a_counts = np.array([a.get(k, 0.0) for k in keys], dtype=float)
    b_counts = np.array([b.get(k, 0.0) for k in keys], dtype=float)
    b_below = np.cumsum(b_counts) - b_counts
    u = float(np.sum(a_counts * (b_below + 0.5 * b_counts)))
    n = n_a + n_b
    ties = a_counts + b_counts
    tie_term = float(np.sum(ties**3 - ties)) / (n * (n - 1)) if n > 1 else 0.0
    variance = n_a * n_b / 12 * ((n + 1) - tie_term)
    if variance <= 0:
        return 1.0
    z = (u - n_a * n_b / 2 - 0.5) / math.sqrt(variance)
    return float(stats.norm.sf(z))


def fixed_vector(counts: Mapping[int, float], classes: Sequence[int]) -> np.ndarray:
    """Counts over one fixed class list, the rest (any other id, -1 included) in a last "other" cell."""
    listed = set(classes)
    other = sum(value for key, value in counts.items() if key not in listed)
    return np.array([counts.get(k, 0.0) for k in classes] + [other], dtype=float)


def divergence_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Jensen-Shannon divergence in base 2, chi-square homogeneity p-value) of two count vectors over the
    same cells."""
    table = np.vstack([a, b]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or table[0].sum() <= 0 or table[1].sum() <= 0:
        return 0.0, 1.0
    p, q = table[0] / table[0].sum(), table[1] / table[1].sum()
    divergence = float(jensenshannon(p, q, base=2) ** 2)
    return divergence, _pvalue(stats.chi2_contingency(table, correction=False))


def _pvalue(result: Any) -> float:  # noqa: ANN401 - scipy builds its result types at run time
    """The `pvalue` field of a scipy test result (checkers see no fields on scipy's run-time result bunches)."""
    return float(result.pvalue)


def chance_divergence(a: np.ndarray, b: np.ndarray) -> float:
    """The Jensen-Shannon divergence (base 2) two samples of one distribution show by chance: (k - 1) / (8 ln 2)
    x (1/n_a + 1/n_b) over k non-empty cells (second-order expansion; 4 n JSD is the G statistic, chi-square
    with k - 1 degrees of freedom). 100 classes in 300 frames a side: 0.12, over any useful floor, so effects
    are measured above it."""
    n_a, n_b = float(a.sum()), float(b.sum())
    cells = int(np.count_nonzero(a + b))
    if cells < 2 or n_a <= 0 or n_b <= 0:
        return 0.0
    return (cells - 1) / (8 * math.log(2)) * (1 / n_a + 1 / n_b)


def combined_p(pvalues: Sequence[float]) -> float:
    """Stouffer's combination, each device one equal vote (a device's volume does not weigh more)."""
    if not pvalues:
        return 1.0
    if len(pvalues) == 1:
        return float(pvalues[0])
    clipped = np.clip(np.asarray(pvalues, dtype=float), 1e-300, 1 - 1e-16)
    return _pvalue(stats.combine_pvalues(clipped, method="stouffer"))


def shift_greater(canary: Sequence[float], control: Sequence[float]) -> float:
    """One-sided p-value that the canary devices' changes exceed the control devices' changes: the pooled
    two-sample t-test with devices as units (works with a single canary device: a prediction interval)."""
    if len(control) < 2 or not canary:
        return 1.0
    if np.ptp(np.concatenate([canary, control])) < NO_SPREAD:
        return 1.0
    pvalue = _pvalue(stats.ttest_ind(np.asarray(canary, float), np.asarray(control, float), equal_var=True,
                                     alternative="greater"))
    return 1.0 if math.isnan(pvalue) else pvalue
