"""The labelled spot check's correction of the accuracy estimate (issue 25). Pure.

A device that opts in sends an unbiased sample of its frames with the model's answers; labellers label them
(`edgefleet spotcheck import`). On those labels, per device and model version:

| quantity            | estimate                          | interval                                                  |
|---------------------|-----------------------------------|-----------------------------------------------------------|
| labelled accuracy   | right / labelled                  | Wilson score interval of the binomial (scipy `binomtest`)  |
| bias of the estimate| estimated (CBPE) - labelled       | MOVER (Newcombe 1998; Zou & Donner 2008): the two intervals|
|                     |                                   | recombined, each estimate's own uncertainty kept          |

The labelled accuracy is what the device's accuracy IS on its sampled frames (it sees the confidently wrong
answers and the concept shift the estimate cannot); the bias says how far the label-free estimate beside it is
off. The two cover different frames (the estimate: the frames since the drift watch started; the sample: the
labelled frames of that version), so a bias whose interval holds 0 is "no evidence the estimate is off", not
proof that it is right.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict
from scipy import stats

from edgefleet.kernel.contracts.spotcheck import LabelledSample

DEFAULT_CONFIDENCE = 0.95


class Interval(BaseModel):
    """An estimate with its two-sided confidence interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float
    low: float
    high: float

    def text(self, signed: bool = False) -> str:
        """'0.82 (0.71-0.90)', or signed: '-0.05 (-0.15 to +0.04)'."""
        if signed:
            return f"{self.value:+.2f} ({self.low:+.2f} to {self.high:+.2f})"
        return f"{self.value:.2f} ({self.low:.2f}-{self.high:.2f})"


class SpotCheckResult(BaseModel):
    """One device's spot check on one model version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str
    model_version: str
    labelled: int
    right: int
    accuracy: Interval
    bias: Interval | None = None
    """The estimate (CBPE) minus the labelled accuracy: positive, the estimate is too high."""


def labelled_accuracy(right: int, labelled: int, confidence: float = DEFAULT_CONFIDENCE) -> Interval | None:
    """The accuracy on the labelled sample with its Wilson interval; None without labels."""
    if labelled < 0 or not 0 <= right <= labelled:
        raise ValueError(f"{right} right answers of {labelled} labelled frames")
    if labelled == 0:
        return None
    ci = stats.binomtest(right, labelled).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(value=right / labelled, low=float(ci.low), high=float(ci.high))


def estimate_bias(estimated: Interval, labelled: Interval) -> Interval:
    """`estimated - labelled` with the MOVER interval recombined from both intervals (same confidence level)."""
    difference = estimated.value - labelled.value
    low = difference - math.hypot(estimated.value - estimated.low, labelled.high - labelled.value)
    high = difference + math.hypot(estimated.high - estimated.value, labelled.value - labelled.low)
    return Interval(value=difference, low=max(-1.0, low), high=min(1.0, high))


def spot_check(device_id: str, model_version: str, samples: Iterable[LabelledSample],
               estimated: Interval | None = None, confidence: float = DEFAULT_CONFIDENCE) -> SpotCheckResult | None:
    """The device's spot check on `model_version` (its labelled samples of other versions left out), with the
    bias of `estimated` (the CBPE estimate shown beside it) when given; None without a labelled sample."""
    marks = [sample.correct for sample in samples if sample.model_version == model_version]
    accuracy = labelled_accuracy(sum(marks), len(marks), confidence)
    if accuracy is None:
        return None
    return SpotCheckResult(device_id=device_id, model_version=model_version, labelled=len(marks), right=sum(marks),
                           accuracy=accuracy, bias=estimate_bias(estimated, accuracy) if estimated else None)
