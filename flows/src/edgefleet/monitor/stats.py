"""Latency maths for the fleet state: combining per-message latency summaries into window percentiles.

Each telemetry message reports the p50/p95 of the inferences it covers (one inference in mode `every`,
where p50 = p95 = its latency; a window in mode `summary`). Its `count` includes the failed inferences
(`errors`), which have no latency, so a message weighs by its successful inferences (count - errors). A
device's window percentile is the weighted nearest-rank percentile of the per-message values: the p50 of
the message p50s and the p95 of the message p95s. For one-inference messages this is exactly the
nearest-rank percentile of the latencies; for summaries it is the usual approximation that does not need
the raw samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple


class LatencySample(NamedTuple):
    """One message's contribution to a latency window: `count` inferences, `errors` of them failed."""

    p50_ms: float
    p95_ms: float
    count: int
    errors: int


class WindowStats(NamedTuple):
    """Percentiles and counts over a window of samples; percentiles are None without a successful inference.
    `inferences` includes the failed ones (`errors`), as the telemetry's `count` does."""

    latency_p50_ms: float | None
    latency_p95_ms: float | None
    inferences: int
    errors: int

    @property
    def error_ratio(self) -> float:
        """Failed inferences per inference (0 when none ran)."""
        if self.inferences == 0:
            return 1.0 if self.errors else 0.0
        return min(1.0, self.errors / self.inferences)


def weighted_percentile(values: Iterable[tuple[float, int]], fraction: float) -> float | None:
    """Nearest-rank percentile of `(value, weight)` pairs: the smallest value whose cumulative weight
    reaches `fraction` of the total. None when the total weight is 0.

    Args:
        values: (value, weight) pairs in any order; weights are non-negative counts.
        fraction: 0 < fraction <= 1, e.g. 0.95 for p95.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"percentile fraction {fraction} is outside (0, 1]")
    pairs = sorted((value, weight) for value, weight in values if weight > 0)
    total = sum(weight for _, weight in pairs)
    if total == 0:
        return None
    rank = math.ceil(fraction * total)
    cumulative = 0
    for value, weight in pairs:
        cumulative += weight
        if cumulative >= rank:
            return value
    return pairs[-1][0]


P50 = 0.50
P95 = 0.95


def window_stats(samples: Iterable[LatencySample]) -> WindowStats:
    """p50/p95 latency and inference/error totals over `samples` (see the module docstring)."""
    samples = list(samples)
    return WindowStats(
        latency_p50_ms=weighted_percentile(((s.p50_ms, s.count - s.errors) for s in samples), P50),
        latency_p95_ms=weighted_percentile(((s.p95_ms, s.count - s.errors) for s in samples), P95),
        inferences=sum(s.count for s in samples),
        errors=sum(s.errors for s in samples),
    )
