"""Latency window maths."""

from __future__ import annotations

import pytest

from edgefleet.monitor.stats import LatencySample, WindowStats, weighted_percentile, window_stats


def test_weighted_percentile_is_nearest_rank():
    values = [(float(v), 1) for v in range(1, 101)]  # 1..100
    assert weighted_percentile(values, 0.5) == 50.0
    assert weighted_percentile(values, 0.95) == 95.0
    assert weighted_percentile(values, 1.0) == 100.0
    assert weighted_percentile([(7.0, 1)], 0.95) == 7.0


def test_weights_count_as_repeated_values_and_zero_weights_are_ignored():
    assert weighted_percentile([(1.0, 3), (100.0, 1)], 0.5) == 1.0
    assert weighted_percentile([(1.0, 3), (100.0, 1)], 0.95) == 100.0
    assert weighted_percentile([(1.0, 0), (5.0, 2)], 0.5) == 5.0
    assert weighted_percentile([], 0.5) is None
    assert weighted_percentile([(3.0, 0)], 0.5) is None


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_out_of_range_is_refused(fraction):
    with pytest.raises(ValueError, match="outside"):
        weighted_percentile([(1.0, 1)], fraction)


def test_window_stats_weigh_latency_by_successful_inferences():
    # 3 inferences with 1 failed at 10 ms, 1 at 20 ms; a failed-only message (latency 0) has no weight
    stats = window_stats([LatencySample(10.0, 12.0, 3, 1), LatencySample(20.0, 30.0, 1, 0),
                          LatencySample(0.0, 0.0, 1, 1)])
    assert stats == WindowStats(10.0, 30.0, 5, 2)
    assert stats.error_ratio == 0.4
    assert WindowStats(None, None, 0, 0).error_ratio == 0.0
    assert WindowStats(None, None, 2, 2).error_ratio == 1.0
    assert window_stats([LatencySample(0.0, 0.0, 1, 1)]).latency_p50_ms is None
