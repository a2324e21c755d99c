"""Per-device drift statistics (`edgefleet.monitor.drift`): block statistics, the CUSUM and its budget, the
daily triage list and the label-free accuracy estimate. Seeded simulations: deterministic, no timing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter

from edgefleet.flows.rollout.histstats import score_median
from edgefleet.kernel.contracts import distributions as d
from edgefleet.monitor.drift import (
    DriftConfig,
    DriftError,
    advance,
    expected_accuracy,
    fit,
    fit_counts,
    fit_device,
    start,
    triage,
)
from edgefleet.monitor.drift.blocks import blocks_from_windows, interpolated_median
from edgefleet.monitor.drift.detector import fit_metric, plan, scan
from edgefleet.monitor.drift.device import statistics
from edgefleet.monitor.drift.threshold import siegmund_arl, threshold_for

SEED = 20261207
CLASSES = 5
BLOCKS_PER_DAY = 864.0  # 1 fps in blocks of 100 frames


def ar1_series(rng: np.random.Generator, phi: float, blocks: int, series: int) -> np.ndarray:
    """Unit-variance AR(1) series (blocks x series), started in its stationary distribution."""
    noise = rng.standard_normal((blocks, series)) * math.sqrt(1 - phi**2)
    return lfilter([1.0], [1.0, -phi], noise, axis=0, zi=phi * rng.standard_normal((1, series)))[0]


def block(rng: np.random.Generator, score: float, mix: np.ndarray, frames: int = 100) -> d.Distributions:
    scores = np.clip(rng.normal(score, 0.08, frames), 0, 0.999)
    classes = rng.choice(len(mix), size=frames, p=mix)
    return d.build(latency={5: frames}, score=dict(zip(*np.unique((scores * d.SCORE_BUCKETS).astype(int),
                                                                   return_counts=True), strict=True)),
                   classes=dict(zip(*np.unique(classes, return_counts=True), strict=True)))


def stream(rng: np.random.Generator, blocks: int, *, score_shift: float = 0.0, phi: float = 0.5,
           mix: np.ndarray | None = None) -> list[d.Distributions]:
    """A classifier device's blocks: a scene whose score centre drifts as an AR(1) (SD 0.03)."""
    scene = ar1_series(rng, phi, blocks, 1)[:, 0] * 0.03
    mix = np.full(CLASSES, 1 / CLASSES) if mix is None else mix
    return [block(rng, 0.8 + s + score_shift, mix) for s in scene]


# --- block statistics -----------------------------------------------------------------------------------
def test_windows_are_merged_into_blocks_of_at_least_block_frames():
    rng = np.random.default_rng(SEED)
    windows = [block(rng, 0.8, np.full(CLASSES, 0.2), frames=40) for _ in range(7)]
    blocks = blocks_from_windows(windows, 100)
    assert [sum(b.score_counts().values()) for b in blocks] == [120, 120]  # the last 40 frames wait


@pytest.mark.parametrize("counts", [{3: 5, 10: 20, 15: 1}, {16: 100}, {0: 1, 19: 1}, {12: 7, 13: 8}])
def test_the_block_median_is_the_canary_judges_interpolated_median(counts):
    row = np.zeros((1, d.SCORE_BUCKETS))
    for index, count in counts.items():
        row[0, index] = count
    assert interpolated_median(row)[0] == pytest.approx(score_median(counts))


# --- the CUSUM and its threshold -------------------------------------------------------------------------
def test_the_threshold_inverts_siegmunds_run_length():
    assert siegmund_arl(4.0, 0.5) == pytest.approx(336, rel=0.01)  # the textbook one-sided h=4, k=0.5 value
    h = threshold_for(2_592_000, 0.5)
    assert siegmund_arl(h, 0.5) == pytest.approx(2_592_000, rel=1e-6)
    assert siegmund_arl(h, 0.5, shift=1.0) < 30  # a 1-SD shift: about 26 blocks


def alarms_per_day(config: DriftConfig, baseline: np.ndarray, monitored: np.ndarray) -> float:
    """False alarms per device-day of a stationary fleet of series, each CUSUM on its own fitted baseline."""
    cusums = [(column, cusum) for column in range(baseline.shape[1])
              for cusum in plan([fit_metric("score_median", baseline[:, column], config)], config, BLOCKS_PER_DAY)]
    z = np.stack([cusum.standardized(monitored[:, column]) for column, cusum in cusums], axis=1)
    found = scan(z, np.array([c.k for _, c in cusums]), np.array([c.h for _, c in cusums]))
    return int(found.alarms.sum()) / (monitored.size / BLOCKS_PER_DAY)


def test_a_stationary_ar1_series_stays_within_its_budget_and_the_long_run_spread_is_what_holds_it():
    rng = np.random.default_rng(SEED)
    series = ar1_series(rng, 0.5, 28_000, 40)
    baseline, monitored = series[:8_000], series[8_000:]
    # 1 false alarm per device-day: enough alarms in 926 device-days to measure the rate.
    config = DriftConfig(false_alarms_per_100_device_days=100.0, baseline_blocks=8_000)
    rate = alarms_per_day(config, baseline, monitored)
    assert 0.1 <= rate <= 1.0, rate  # under the budget (the guard and the larger long-run estimate widen it)
    naive = alarms_per_day(config.model_copy(update={"max_autocorrelation": 0.0, "long_run_variance": "ar1",
                                                     "estimation_guard": 0.0}), baseline, monitored)
    assert naive > 5 * rate  # blocks taken as independent: the budget is broken many times over


def test_one_freak_block_does_not_alarm():
    rng = np.random.default_rng(SEED)
    config = DriftConfig()
    cusum = plan([fit_metric("score_median", rng.standard_normal(500), config)], config, BLOCKS_PER_DAY)[0]
    assert scan(cusum.standardized(np.array([1e6, 0.0, 0.0])), cusum.k, cusum.h).alarms[0] == 0


def test_a_short_baseline_is_refused_with_a_fix_and_a_constant_statistic_is_not_watched():
    config = DriftConfig()
    with pytest.raises(DriftError, match="499 blocks") as error:
        fit_metric("score_median", np.zeros(499), config)
    assert "baseline_blocks" in error.value.fix
    assert fit_metric("detections", np.zeros(500), config) is None


# --- one device, end to end from its telemetry distributions -------------------------------------------
CONFIG = DriftConfig(baseline_blocks=200)
ONSET_TOLERANCE_BLOCKS = 20


def test_a_planted_score_drop_alarms_after_the_change_with_its_size_and_onset():
    rng = np.random.default_rng(SEED)
    device = fit_device(stream(rng, CONFIG.baseline_blocks), CONFIG, BLOCKS_PER_DAY)
    assert {c.baseline.metric for c in device.cusums} == {"class_mix", "score_median"}
    sd = next(m.sd for m in device.metrics if m.metric == "score_median")
    quiet, drifts = advance(device, start(device), stream(rng, 300))
    assert drifts == ()
    state, drifts = advance(device, quiet, stream(rng, 300, score_shift=-2 * sd))
    first = drifts[0]
    assert (first.metric, first.direction) == ("score_median", "down")
    # the onset is the CUSUM's estimate (its run's start), a few blocks either side of the change: over 20 seeds
    # it fell 0-18 blocks early in 11 (8 of 20 with the old guard of 2.5, whose larger k had made this seed's
    # estimate land at 300 exactly)
    assert 300 - ONSET_TOLERANCE_BLOCKS <= first.onset_block <= first.alarm_block < 300 + 60
    assert -3.5 < first.effect_sd < -1.0
    assert first.effect == pytest.approx(first.effect_sd * sd, rel=0.05)
    assert first.baseline == pytest.approx(0.8, abs=0.02)
    assert state.blocks == 600


def test_a_class_mix_change_alarms_on_the_class_mix():
    rng = np.random.default_rng(SEED + 1)
    device = fit_device(stream(rng, CONFIG.baseline_blocks), CONFIG, BLOCKS_PER_DAY)
    collapsed = np.array([0.6, 0.1, 0.1, 0.1, 0.1])
    _, drifts = advance(device, start(device), stream(rng, 200, mix=collapsed))
    assert drifts and drifts[0].metric == "class_mix" and drifts[0].effect > 0


def test_a_device_without_enough_blocks_has_no_baseline():
    rng = np.random.default_rng(SEED)
    with pytest.raises(DriftError, match="drift baseline: 10 blocks"):
        fit_device(stream(rng, 10), CONFIG, BLOCKS_PER_DAY)


# --- the daily triage list ------------------------------------------------------------------------------
def test_triage_lists_the_shifted_device_only():
    rng = np.random.default_rng(SEED)
    devices = {}
    for number in range(12):
        device = fit_device(stream(rng, CONFIG.baseline_blocks), CONFIG, BLOCKS_PER_DAY)
        shift = -0.05 if number == 7 else 0.0
        devices[f"d{number}"] = (device, statistics(device, stream(rng, 100, score_shift=shift)))
    listed = triage(devices, CONFIG)
    assert [e.device for e in listed] == ["d7"]
    assert listed[0].metric == "score_median" and listed[0].direction == "down" and listed[0].qvalue <= 0.05


# --- accuracy without labels ----------------------------------------------------------------------------
def calibrated_split(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    scores = rng.uniform(0.5, 1.0, n)
    return scores, rng.uniform(size=n) < scores  # the score is the probability of being right


def test_expected_accuracy_recovers_a_calibrated_models_accuracy_within_its_interval():
    rng = np.random.default_rng(SEED)
    table = fit(*calibrated_split(rng, 20_000))
    assert list(table.accuracy) == sorted(table.accuracy)  # isotonic
    device_scores = np.clip(rng.normal(0.7, 0.1, 5_000), 0, 0.999)
    truth = float(np.mean(rng.uniform(size=device_scores.size) < device_scores))
    counts = dict(zip(*np.unique((device_scores * d.SCORE_BUCKETS).astype(int), return_counts=True), strict=True))
    estimate = expected_accuracy(table, counts)
    assert estimate.low <= truth <= estimate.high
    assert estimate.high - estimate.low < 0.05
    assert estimate.unseen_share > 0  # scores below 0.5 fell where the split had no image
    assert expected_accuracy(table, {}) is None


def test_calibration_refuses_impossible_counts_and_mismatched_answers():
    with pytest.raises(DriftError, match="0 <= correct <= images"):
        fit_counts([1] * d.SCORE_BUCKETS, [2] * d.SCORE_BUCKETS)
    with pytest.raises(DriftError, match="3 scores and 2 answers"):
        fit([0.1, 0.5, 0.9], [True, False])
    table = fit_counts([10] * d.SCORE_BUCKETS, [5] * d.SCORE_BUCKETS, isotonic=False)
    with pytest.raises(DriftError, match="score bucket 20"):
        expected_accuracy(table, {20: 1})
