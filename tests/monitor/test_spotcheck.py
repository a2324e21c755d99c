"""The spot check's correction maths: the labelled accuracy's Wilson interval, the estimate's bias (MOVER)."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from edgefleet.kernel.contracts.spotcheck import LabelledSample
from edgefleet.monitor.spotcheck import Interval, estimate_bias, labelled_accuracy, spot_check

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
