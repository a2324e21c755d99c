"""The CUSUM threshold from a false-alarm budget with the baseline's estimation error integrated
(`edgefleet.monitor.drift.threshold`). Seeded simulations: deterministic, no timing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from scipy.signal import lfilter

from edgefleet.kernel.contracts import distributions as d
from edgefleet.monitor.drift import DriftConfig, DriftError, fit_device
from edgefleet.monitor.drift.blocks import block_statistics, held_out_divergence
from edgefleet.monitor.drift.detector import fit_metric, normal_scores, plan, scan
from edgefleet.monitor.drift.device import baseline_from_dict, baseline_to_dict
from edgefleet.monitor.drift.threshold import (
    integrated_threshold,
    log_false_alarm_rate,
    log_siegmund_arl,
    siegmund_arl,
    threshold_for,
)

SEED = 20261207


@pytest.mark.parametrize(("h", "k", "shift"), [(4.0, 0.5, 0.0), (21.0, 0.29, 0.0), (21.0, 0.29, 0.58),
                                               (0.0, 0.5, 0.5), (12.0, 0.5, 3.0), (900.0, 0.9, 0.0)])
def test_the_array_form_of_siegmunds_run_length_is_the_scalar_one_and_finite(h, k, shift):
    grid = log_siegmund_arl(np.full(3, h), k, np.array([shift, shift, shift]))
    assert np.allclose(grid, log_siegmund_arl(h, k, shift)) and np.isfinite(grid).all()


def test_a_run_length_falls_as_the_shift_grows():
    shifts = np.linspace(-1.0, 3.0, 41)
    assert np.all(np.diff(log_siegmund_arl(15.0, 0.3, shifts)) < 0)


def test_an_exact_baseline_gives_siegmunds_threshold():
    h = threshold_for(2_592_000, 0.29)
    assert siegmund_arl(h, 0.29) == pytest.approx(2_592_000, rel=1e-6)
    assert integrated_threshold(2_592_000, 0.29, 10**9, 1e-9) == pytest.approx(h, rel=1e-4)


@pytest.mark.parametrize("k", [0.25, 0.29, 0.5])
def test_a_shorter_or_noisier_baseline_needs_a_higher_threshold_for_the_same_budget(k):
    thresholds = [integrated_threshold(864_000, k, n, se) for n, se in
                  [(10_000, 0.02), (2_000, 0.04), (500, 0.08), (500, 0.15), (100, 0.15)]]
    assert thresholds == sorted(thresholds) and thresholds[0] > threshold_for(864_000, k)
    rate = log_false_alarm_rate(thresholds[2], k, 500, 0.08)
    assert rate == pytest.approx(-math.log(864_000), abs=1e-6)  # the solved h meets the budget exactly


def test_a_baseline_too_short_for_the_budget_is_refused_with_a_fix():
    # a mean known to +-0.1 long-run SDs against a reference of 0.1: some devices' CUSUMs drift up for ever
    with pytest.raises(DriftError, match="baseline of 100 blocks") as error:
        integrated_threshold(864_000, 0.1, 100, 0.15)
    assert "baseline_blocks" in error.value.fix


def fleet_rate(thresholds: tuple[float, float], baseline_blocks: int) -> tuple[float, float]:
    """False alarms per block, over the budget's, of a fleet of iid N(0, 1) devices, each standardized by its own
    estimated mean and SD: (taking the estimates as exact, integrating their error)."""
    rng = np.random.default_rng(SEED)
    devices, blocks, arl0, k = 1_000, 3_000, 300.0, 0.5
    baseline = rng.standard_normal((baseline_blocks, devices))
    z = (rng.standard_normal((blocks, devices)) - baseline.mean(axis=0)) / baseline.std(axis=0, ddof=1)
    return tuple(int(scan(z, k, h).alarms.sum()) / (blocks * devices) * arl0 for h in thresholds)


def test_a_fleet_of_estimated_baselines_holds_its_budget_only_with_the_integrated_threshold():
    n, arl0, k = 100, 300.0, 0.5
    exact, integrated = fleet_rate((threshold_for(arl0, k),
                                    integrated_threshold(arl0, k, n, 1 / math.sqrt(2 * (n - 1)))), n)
    assert exact > 1.2  # the budget broken: the devices whose spread came out low alarm far more often
    assert 0.8 < integrated < 1.15


def unguarded(blocks: int) -> DriftConfig:
    return DriftConfig(baseline_blocks=blocks, estimation_guard=0.0)


def test_the_plan_integrates_its_baselines_estimation_error():
    rng = np.random.default_rng(SEED)
    per_day = 8_640.0
    short, long = (plan([fit_metric("score_median", rng.standard_normal(n), unguarded(n))], unguarded(n), per_day)[0]
                   for n in (100, 5_000))
    assert short.h > long.h > threshold_for(2 * per_day * 100, long.k)
    base = short.baseline
    assert short.k == pytest.approx(base.sd_per_long_run_sd / base.clipped_long_run_sd / 2)  # no guard on k
    guarded = plan([base], DriftConfig(baseline_blocks=100), per_day)[0]
    assert guarded.k == pytest.approx(short.k / math.exp(base.relative_se) + 0.1)  # 1 SE of m: 1 / sqrt(100)
    assert guarded.spread == pytest.approx(short.spread * math.exp(base.relative_se))


# --- normal scores: the baseline's own distribution mapped onto N(0, 1) -----------------------------------
def test_normal_scores_rank_within_the_baseline_share_ties_and_go_on_linearly_outside_it():
    ranked = np.sort(np.array([0.1, 0.2, 0.2, 0.3, 0.5]))
    scores = normal_scores(ranked, np.array([0.2, 0.2, -0.9, 0.9, 0.35, 0.4, np.nan, 0.5, 0.1]), 0.2)
    assert scores[0] == scores[1] == pytest.approx(-0.253, abs=1e-3)  # mid-rank 2 of 5: Phi^-1(0.4)
    assert scores[7] == pytest.approx(1.2816, abs=1e-3) and scores[8] == pytest.approx(-1.2816, abs=1e-3)
    assert scores[2] == pytest.approx(-1.2816 - 5, abs=1e-3) and scores[3] == pytest.approx(1.2816 + 2, abs=1e-3)
    assert scores[4] == scores[5]  # between two baseline values: the same rank
    assert np.isnan(scores[6])


@pytest.mark.parametrize("seed", range(3))
def test_a_skewed_statistic_is_watched_on_symmetric_increments(seed):
    rng = np.random.default_rng(SEED + seed)
    config = DriftConfig()
    base = fit_metric("class_mix", rng.lognormal(0.0, 0.8, 500), config)
    later = base.clipped(rng.lognormal(0.0, 0.8, 20_000))
    linear = fit_metric("class_mix", rng.lognormal(0.0, 0.8, 500), config.model_copy(update={"transform": "linear"}))
    assert abs(stats.skew(later)) < 0.15
    assert stats.skew(linear.clipped(rng.lognormal(0.0, 0.8, 20_000))) > 0.8  # clipped at +-2, still skewed
    assert linear.ranked_on == () and base.ranked_on == tuple(sorted(base.ranked_on))


def test_a_baseline_survives_its_stored_form():
    rng = np.random.default_rng(SEED)
    config = DriftConfig(baseline_blocks=100)
    device = fit_device([block_of(rng) for _ in range(100)], config, 8_640.0)
    again = baseline_from_dict(json.loads(json.dumps(baseline_to_dict(device))))
    assert again == device and again.metrics == device.metrics  # hashable: the sorted values are a tuple again


def block_of(rng: np.random.Generator) -> d.Distributions:
    scores = np.clip(rng.normal(0.7, 0.1, 100), 0, 0.999)
    classes = rng.choice(3, size=100, p=[0.5, 0.3, 0.2])
    return d.build(latency={5: 100}, score=dict(zip(*np.unique((scores * d.SCORE_BUCKETS).astype(int),
                                                                return_counts=True), strict=True)),
                   classes=dict(zip(*np.unique(classes, return_counts=True), strict=True)))


# --- the baseline's class mix, out of fold ----------------------------------------------------------------
def wandering_mix(rng: np.random.Generator, blocks: int, devices: int) -> np.ndarray:
    """Class counts (blocks x devices x 6) of cameras whose scene mix wanders (log-shares AR(1), phi 0.9)."""
    noise = rng.standard_normal((blocks, devices, 6)) * math.sqrt(1 - 0.81)
    latent = lfilter([1.0], [1.0, -0.9], noise, axis=0, zi=0.9 * rng.standard_normal((1, devices, 6)))[0]
    share = np.exp(0.5 * latent)
    return rng.multinomial(100, share / share.sum(-1, keepdims=True)).astype(float)


def test_the_baselines_class_mix_sees_what_later_blocks_will_only_out_of_fold():
    rng = np.random.default_rng(SEED)
    counts = wandering_mix(rng, 2_500, 40)
    baseline, later = counts[:500], counts[500:]
    reference = baseline.sum(axis=0)
    in_sample = block_statistics(baseline, np.ones((500 * 40, d.SCORE_BUCKETS)), None, reference, 100)["class_mix"]
    held_out = held_out_divergence(baseline, 100)
    ahead = block_statistics(later, np.ones((2_000 * 40, d.SCORE_BUCKETS)), None, reference, 100)["class_mix"]
    sd = float(in_sample.std())
    assert (held_out.mean(axis=0) > in_sample.mean(axis=0)).all()
    assert float(ahead.mean() - in_sample.mean()) > 0.05 * sd  # in sample: biased low (h ~ 20: e^2 the alarms)
    assert abs(float(ahead.mean() - held_out.mean())) < 0.5 * float(ahead.mean() - in_sample.mean())
