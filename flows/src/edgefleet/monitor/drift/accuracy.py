"""Accuracy without labels from the calibrated confidence (confidence-based performance estimation, as
NannyML's CBPE). Pure.

| step             | what                                                                                   |
|------------------|----------------------------------------------------------------------------------------|
| calibration      | on the release's held-out split: per top-1 score bucket (the telemetry's SCORE_BUCKETS) |
|                  | the share of correct answers, made non-decreasing in the score (isotonic, weighted by  |
|                  | the bucket's images: `scipy.optimize.isotonic_regression`) or left as bucket means     |
| estimate         | a device's score histogram weighted by the table: sum n_b * acc_b / sum n_b            |
| interval         | normal, variance = the table's (acc_b (1 - acc_b) / m_b per bucket, m_b held-out       |
|                  | images; a bucket the split never saw counts as m_b = 1 and its nearest neighbour's     |
|                  | accuracy) + the frames' own (sum n_b acc_b (1 - acc_b) / N^2, frames independent)      |

What it cannot see: it assumes that a score means on the device what it meant on the held-out split
(p(correct | score) unchanged). So it cannot see confidently wrong answers (a scene where the model is sure
and wrong: a look-alike class, a shuffled-labels model scores as confidently as a good one), nor a concept
shift (the right answer for the same image changed); a covariate shift that keeps the calibration is what it
estimates well. The frames of a device are correlated, so the frame term of the interval is optimistic; a
labelled spot check is what corrects it. `unseen_share` says how much of the device's traffic fell into
buckets the held-out split had no image in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats
from scipy.optimize import isotonic_regression

from edgefleet.kernel.contracts.distributions import SCORE_BUCKETS, score_bucket
from edgefleet.monitor.drift.config import DriftError

DEFAULT_CONFIDENCE = 0.95


class CalibrationTable(BaseModel):
    """Per score bucket: the accuracy on the held-out split and how many of its images fell there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accuracy: tuple[float, ...] = Field(min_length=SCORE_BUCKETS, max_length=SCORE_BUCKETS)
    images: tuple[int, ...] = Field(min_length=SCORE_BUCKETS, max_length=SCORE_BUCKETS)
    isotonic: bool


class AccuracyEstimate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    accuracy: float
    low: float
    high: float
    frames: int
    unseen_share: float
    """Share of the device's frames in score buckets the held-out split had no image in."""


def fit_counts(images: Sequence[int] | np.ndarray, correct: Sequence[int] | np.ndarray, *,
               isotonic: bool = True) -> CalibrationTable:
    """The table from per-bucket counts of held-out images and of correct answers among them."""
    n, c = np.asarray(images, dtype=float), np.asarray(correct, dtype=float)
    if n.shape != (SCORE_BUCKETS,) or c.shape != n.shape or (c > n).any() or (c < 0).any():
        raise DriftError(f"calibration: need {SCORE_BUCKETS} buckets with 0 <= correct <= images",
                         "count the held-out split per telemetry score bucket")
    seen = n > 0
    if not seen.any():
        raise DriftError("calibration: the held-out split is empty", "fit the table on the release's held-out split")
    means = c[seen] / n[seen]
    if isotonic:
        means = isotonic_regression(means, weights=n[seen], increasing=True).x
    filled = np.interp(np.arange(SCORE_BUCKETS), np.flatnonzero(seen), means)  # nearest seen at the ends
    return CalibrationTable(accuracy=tuple(float(a) for a in filled), images=tuple(int(x) for x in n),
                            isotonic=isotonic)


def fit(scores: Sequence[float], correct: Sequence[bool], *, isotonic: bool = True) -> CalibrationTable:
    """The table from the held-out split's top-1 scores and whether each answer was right."""
    if len(scores) != len(correct):
        raise DriftError(f"calibration: {len(scores)} scores and {len(correct)} answers",
                         "give one score and one right/wrong per held-out image")
    buckets = np.array([score_bucket(float(s)) for s in scores], dtype=int)
    images = np.bincount(buckets, minlength=SCORE_BUCKETS)
    right = np.bincount(buckets, weights=np.asarray(correct, dtype=float), minlength=SCORE_BUCKETS)
    return fit_counts(images, right, isotonic=isotonic)


def expected_accuracy(table: CalibrationTable, score_counts: Mapping[int, int],
                      confidence: float = DEFAULT_CONFIDENCE) -> AccuracyEstimate | None:
    """The device's expected accuracy from its score histogram (bucket -> frames); None without frames."""
    counts = np.zeros(SCORE_BUCKETS)
    for index, count in score_counts.items():
        if not 0 <= index < SCORE_BUCKETS or count < 0:
            raise DriftError(f"accuracy estimate: score bucket {index} with {count} frames",
                             f"give a telemetry score histogram (buckets 0..{SCORE_BUCKETS - 1})")
        counts[index] += count
    frames = counts.sum()
    if frames <= 0:
        return None
    acc, images = np.asarray(table.accuracy), np.maximum(np.asarray(table.images, dtype=float), 1)
    weights = counts / frames
    estimate = float(weights @ acc)
    variance = float((weights**2) @ (acc * (1 - acc) / images)) + float(weights @ (acc * (1 - acc))) / frames
    half = float(stats.norm.ppf(0.5 + confidence / 2)) * math.sqrt(variance)
    unseen = float(weights @ (np.asarray(table.images) == 0))
    return AccuracyEstimate(accuracy=estimate, low=max(0.0, estimate - half), high=min(1.0, estimate + half),
                            frames=int(frames), unseen_share=unseen)
