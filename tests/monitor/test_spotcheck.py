"""The spot check's correction maths: the labelled accuracy's Wilson interval, the estimate's bias (MOVER)."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from edgefleet.kernel.contracts.spotcheck import LabelledSample
from edgefleet.monitor.spotcheck import (
    Interval,
    SpotCheckResult,
    estimate_bias,
    labelled_accuracy,
    spot_check,
    version_spot_check,
    version_spot_checks,
    weighted_estimate,
)

Z95 = 1.959963984540054


def _wilson(right: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The textbook closed form (Wilson 1927)."""
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.mark.parametrize(("right", "n"), [(8, 10), (0, 12), (50, 50), (173, 200)])
def test_the_labelled_accuracy_is_the_share_right_with_the_wilson_interval(right: int, n: int) -> None:
    accuracy = labelled_accuracy(right, n)
    assert accuracy is not None and accuracy.value == right / n
    assert (accuracy.low, accuracy.high) == pytest.approx(_wilson(right, n), abs=1e-9)
    assert 0.0 <= accuracy.low <= accuracy.value <= accuracy.high <= 1.0


def test_the_interval_covers_the_true_accuracy_at_about_its_level() -> None:
    """Exact coverage over the binomial distribution (no simulation): near 95 % for a small sample."""
    for true, n in ((0.9, 40), (0.7, 60), (0.95, 100)):
        coverage = sum(stats.binom.pmf(k, n, true) for k in range(n + 1)
                       if (a := labelled_accuracy(k, n)) is not None and a.low <= true <= a.high)
        assert 0.92 <= coverage <= 0.99, (true, n, coverage)


def test_no_labels_is_no_accuracy_and_impossible_counts_are_refused() -> None:
    assert labelled_accuracy(0, 0) is None
    for right, n in ((5, 3), (-1, 3), (0, -1)):
        with pytest.raises(ValueError, match="right answers"):
            labelled_accuracy(right, n)


def test_the_bias_is_estimate_minus_labelled_with_both_uncertainties() -> None:
    labelled = Interval(value=0.70, low=0.60, high=0.78)
    exact = estimate_bias(Interval(value=0.90, low=0.90, high=0.90), labelled)  # an estimate without spread
    assert (exact.value, exact.low, exact.high) == pytest.approx((0.20, 0.12, 0.30))
    wide = estimate_bias(Interval(value=0.90, low=0.85, high=0.93), labelled)
    assert wide.value == pytest.approx(0.20)
    assert wide.low == pytest.approx(0.20 - math.hypot(0.05, 0.08))
    assert wide.high == pytest.approx(0.20 + math.hypot(0.03, 0.10))
    assert wide.low < exact.low and wide.high > exact.high
    assert wide.text(signed=True) == "+0.20 (+0.11 to +0.30)"


def _sample(seq: int, version: str, correct: bool) -> LabelledSample:
    return LabelledSample(frame_id=f"20261207T210000Z-{seq:012d}", model="birds", model_version=version, answer_id=1,
                          answer_label="robin", answer_score=0.8, label="robin" if correct else "crow",
                          correct=correct)


def test_the_spot_check_counts_the_version_shown_only() -> None:
    samples = [_sample(i, "1.0.0", i % 4 != 0) for i in range(40)] + [_sample(100 + i, "0.9.0", False)
                                                                       for i in range(30)]
    result = spot_check("cam-1", "birds", "1.0.0", samples, Interval(value=0.9, low=0.88, high=0.92))
    assert result is not None and (result.labelled, result.right) == (40, 30)
    assert result.accuracy.value == 0.75 and result.bias is not None and result.bias.value == pytest.approx(0.15)
    assert spot_check("cam-1", "birds", "2.0.0", samples) is None
    assert spot_check("cam-1", "birds", "1.0.0", samples).bias is None  # no estimate shown: nothing to correct


def _result(device: str, right: int, labelled: int, estimated: Interval | None = None,
            version: str = "1.0.0", model: str = "birds") -> SpotCheckResult:
    samples = [_sample(i, version, i < right) for i in range(labelled)]
    result = spot_check(device, model, version, [s.model_copy(update={"model": model}) for s in samples], estimated)
    assert result is not None
    return result


def test_a_versions_spot_check_pools_its_devices_labels_and_biases_over_those_with_an_estimate() -> None:
    estimate = Interval(value=0.9, low=0.88, high=0.92)
    pooled = version_spot_checks([_result("c", 1, 5, version="10.0.0"), _result("e", 1, 1, version="9.0.0"),
                                  _result("a", 30, 40, estimate),
                                  _result("b", 10, 10), _result("d", 2, 2, model="cats")])
    assert [(v.model, v.model_version, v.devices, v.labelled, v.right) for v in pooled] == [
        ("birds", "1.0.0", 2, 50, 40), ("birds", "9.0.0", 1, 1, 1), ("birds", "10.0.0", 1, 5, 1),
        ("cats", "1.0.0", 1, 2, 2)]
    birds = pooled[0]
    assert birds.accuracy == labelled_accuracy(40, 50)
    # the bias is over device a alone (b has no estimate): its estimate minus a's own labelled accuracy
    assert birds.estimated == estimate and birds.bias_devices == 1
    a_only = labelled_accuracy(30, 40)
    assert a_only is not None and birds.bias == estimate_bias(estimate, a_only)
    assert pooled[1].bias is None and pooled[1].estimated is None and pooled[1].bias_devices == 0


def test_the_version_estimate_weights_each_device_by_its_labelled_frames() -> None:
    high, low = Interval(value=0.9, low=0.88, high=0.93), Interval(value=0.7, low=0.66, high=0.72)
    estimated = weighted_estimate([_result("a", 27, 30, high), _result("b", 7, 10, low), _result("c", 1, 1)])
    assert estimated is not None and estimated.value == pytest.approx((30 * 0.9 + 10 * 0.7) / 40)
    assert estimated.value - estimated.low == pytest.approx(math.hypot(30 * 0.02, 10 * 0.04) / 40)
    assert estimated.high - estimated.value == pytest.approx(math.hypot(30 * 0.03, 10 * 0.02) / 40)
    assert weighted_estimate([_result("c", 1, 1)]) is None


def test_a_versions_spot_check_refuses_results_of_another_version() -> None:
    with pytest.raises(ValueError, match="that model version only"):
        version_spot_check([_result("a", 1, 2), _result("b", 1, 2, version="2.0.0")])
    assert version_spot_check([]) is None
