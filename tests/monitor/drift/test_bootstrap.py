"""The block bootstrap's tail scale of a CUSUM on the device's own baseline (`edgefleet.monitor.drift.bootstrap`)
and the plan it gives (`detector.plan`). Seeded series: deterministic, no timing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.signal import lfilter
from scipy.special import logsumexp

from edgefleet.monitor.drift import DriftConfig
from edgefleet.monitor.drift.bootstrap import FALLBACK, MIN_BLOCKS, block_length, exponents, lag1, tail_scale
from edgefleet.monitor.drift.detector import MetricBaseline, fit_metric, plan
from edgefleet.monitor.drift.device import metric_from_dict

SEED = 20261207
PER_DAY = 8_640.0
"""Blocks a day of a 10 fps camera with blocks of 100 frames."""


def ar1(rng: np.random.Generator, blocks: int, phi: float) -> np.ndarray:
    """Unit long-run variance AR(1) blocks."""
    series = np.asarray(lfilter([1.0], [1.0, -phi], rng.standard_normal(blocks)))  # typed as maybe a tuple
    return series * math.sqrt((1 - phi) / (1 + phi))


def clustered(rng: np.random.Generator, blocks: int) -> np.ndarray:
    """Blocks whose high values come in runs (a class mix far from its usual stays there for a while): rare
    bursts of 8 blocks over AR(1) noise, centred and scaled to unit variance."""
    x = ar1(rng, blocks, 0.5)
    starts = np.flatnonzero(rng.random(blocks) < 0.006)
    for s in starts:
        x[s:s + 8] += 2.0
    return (x - x.mean()) / x.std()


def test_the_block_length_rule_grows_with_the_correlation_and_the_baseline():
    assert block_length(0.0, 500) == 1
    assert block_length(0.5, 500) == 12  # ceil((750)^(1/3) (4/3)^(2/3)) = ceil(11.003)
    lengths = [block_length(phi, 500) for phi in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert lengths == sorted(lengths) and len(set(lengths)) == len(lengths)
    assert block_length(0.5, 2_000) > block_length(0.5, 500)
    assert block_length(-0.4, 500) == 1 and block_length(0.99, 500) == block_length(0.95, 500)  # clipped


def test_the_exponent_is_the_root_of_the_empirical_generating_function():
    rng = np.random.default_rng(SEED)
    sums = rng.standard_normal((3, 400)) * [[1.0], [2.0], [0.5]] - 0.4
    found = exponents(sums)
    for row, theta in zip(sums, found, strict=True):
        expected = brentq(lambda t, r=row: float(np.asarray(logsumexp(t * r))) - math.log(len(r)), 1e-6, 50.0)
        assert theta == pytest.approx(expected, rel=1e-6)
    assert exponents(np.array([[-1.0, -0.5, -2.0]]))[0] == math.inf  # no positive sum: never crosses


def test_gaussian_blocks_have_a_tail_scale_near_one_and_clustered_bursts_above_it():
    rng = np.random.default_rng(SEED)
    gaussian = tail_scale(ar1(rng, 20_000, 0.5), 0.29, 50, SEED)
    assert gaussian.scale == pytest.approx(1.0, abs=0.08) and gaussian.block > 1
    heavy = tail_scale(clustered(rng, 20_000), 0.29, 50, SEED)
    assert heavy.scale > gaussian.scale + 0.1


def test_the_tail_scale_is_reproducible_with_its_seed():
    values = ar1(np.random.default_rng(SEED), 500, 0.5)
    first, again = tail_scale(values, 0.29, 100, 7), tail_scale(values, 0.29, 100, 7)
    assert first == again
    other = tail_scale(values, 0.29, 100, 8)
    assert other.scale == first.scale  # the point estimate uses every block: no randomness
    assert other.log_se != first.log_se and other.log_se > 0


def test_a_baseline_too_short_for_its_blocks_falls_back_to_the_gaussian_plan():
    rng = np.random.default_rng(SEED)
    short = ar1(rng, 100, 0.8)
    assert len(short) // block_length(lag1(short), len(short)) < MIN_BLOCKS
    assert tail_scale(short, 0.29, 100, SEED) == FALLBACK
    assert tail_scale(ar1(rng, 500, 0.5), 0.0, 100, SEED) == FALLBACK  # no reference: nothing drifts down
    settings = {"baseline_blocks": 100, "estimation_guard": 0.0, "false_alarms_per_100_device_days": 100.0}
    config, integrated_only = DriftConfig(**settings, threshold="bootstrap"), DriftConfig(**settings)
    bootstrapped = plan([fitted(short, config)], config, PER_DAY)
    assert [c.baseline.tail(c.direction) for c in bootstrapped] == [FALLBACK, FALLBACK]
    expected = plan([fitted(short, integrated_only)], integrated_only, PER_DAY)
    assert [(c.k, c.h, c.spread) for c in bootstrapped] == [(c.k, c.h, c.spread) for c in expected]


def heavy_baseline(config: DriftConfig) -> MetricBaseline:
    base = fit_metric("class_mix", clustered(np.random.default_rng(SEED), 500), config)
    assert base is not None
    return base


def fitted(values: np.ndarray, config: DriftConfig) -> MetricBaseline:
    base = fit_metric("score_median", values, config)
    assert base is not None
    return base


def test_a_heavier_tail_on_the_baseline_widens_the_plan_and_raises_the_threshold():
    bootstrap = DriftConfig(estimation_guard=0.0, threshold="bootstrap")
    integrated = DriftConfig(estimation_guard=0.0, threshold="integrated")
    wide, = plan([heavy_baseline(bootstrap)], bootstrap, PER_DAY)
    narrow, = plan([heavy_baseline(integrated)], integrated, PER_DAY)
    assert wide.baseline.tail("up").scale > 1
    assert wide.spread == pytest.approx(narrow.spread * wide.baseline.tail("up").scale)
    assert wide.k < narrow.k and wide.h > narrow.h * 0.9  # the threshold also pays for the scale's error


@pytest.mark.parametrize("budgets", [(0.1, 1.0, 10.0, 100.0)])
def test_the_bootstrap_threshold_falls_as_the_budget_grows(budgets):
    thresholds = []
    for budget in budgets:
        config = DriftConfig(estimation_guard=0.0, false_alarms_per_100_device_days=budget, threshold="bootstrap")
        thresholds.append(plan([heavy_baseline(config)], config, PER_DAY)[0].h)
    assert all(a > b for a, b in zip(thresholds, thresholds[1:], strict=False))


def test_a_stored_baseline_keeps_its_tail_scales_and_an_older_one_loads_without_them():
    base = heavy_baseline(DriftConfig(threshold="bootstrap"))
    stored = {**base.__dict__, "ranked_on": list(base.ranked_on), "tail_scales": list(base.tail_scales),
              "tail_log_ses": list(base.tail_log_ses), "tail_blocks": list(base.tail_blocks)}
    assert metric_from_dict(stored) == base
    older = {key: value for key, value in stored.items() if not key.startswith("tail_")}
    assert metric_from_dict(older).tail("up") == FALLBACK
    assert heavy_baseline(DriftConfig()).tail("up") == FALLBACK  # the default plan: the integrated threshold
