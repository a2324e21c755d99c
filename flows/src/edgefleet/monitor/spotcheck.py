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

Per model version (`version_spot_check`, what `fleet status --json` and the fleet page show) the labels of the
devices shown on it are pooled: the labelled accuracy is right / labelled over them all (each labelled frame
counts once, whichever device sent it), and the bias is, over the devices that also have an estimate, their
estimates weighted as their labels are (each device by its labelled frames) minus the labelled accuracy of those
same frames; the weighted estimate's interval combines the devices' intervals as independent
(sqrt of the sum of the squared weighted half-widths), then MOVER as above.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict
from scipy import stats

from edgefleet.kernel.contracts.layout import version_sort_key
from edgefleet.kernel.contracts.spotcheck import LabelledSample

DEFAULT_CONFIDENCE = 0.95
SPOT_CHECK_CAVEAT = ("Spot check: the accuracy on frames the device sampled blind to the model's answers and "
                     "people labelled (Wilson 95 % interval); 'estimate off by' is the estimated accuracy minus "
                     "it (positive: the estimate is too high). The two cover different frames of the version.")
"""Said wherever the spot check is shown (`fleet status`, the fleet page)."""


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


class LabelledAccuracy(BaseModel):
    """What a spot check says of one model version: its accuracy on labelled frames, and how far the label-free
    estimate (CBPE) beside it is off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    model_version: str
    labelled: int
    right: int
    accuracy: Interval
    """right / labelled, with its Wilson interval."""
    estimated: Interval | None = None
    """The label-free estimate (CBPE) beside it; None: there is none."""
    bias: Interval | None = None
    """`estimated` minus the labelled accuracy of the same frames' devices (MOVER): positive, the estimate is too
    high."""


class SpotCheckResult(LabelledAccuracy):
    """One device's spot check on one model version."""

    device_id: str
    not_counted: int = 0
    """Labelled frames of this version left out: signed by a key revoked since, or recorded without its key."""


class VersionSpotCheck(LabelledAccuracy):
    """The spot check of one model version over the devices shown running it that have labels on it: their frames
    pooled, their estimates weighted by their labelled frames (those with an estimate)."""

    devices: int
    """Devices whose labels are pooled."""
    bias_devices: int = 0
    """Devices with both labels and an estimate, the ones `bias` is over."""


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


def spot_check(device_id: str, model: str, model_version: str, samples: Iterable[LabelledSample],
               estimated: Interval | None = None, confidence: float = DEFAULT_CONFIDENCE) -> SpotCheckResult | None:
    """The device's spot check on `model` `model_version` (its labelled samples of other models or versions left
    out), with the bias of `estimated` (the CBPE estimate shown beside it) when given; None without a labelled
    sample."""
    marks = [sample.correct for sample in samples if (sample.model, sample.model_version) == (model, model_version)]
    accuracy = labelled_accuracy(sum(marks), len(marks), confidence)
    if accuracy is None:
        return None
    return SpotCheckResult(device_id=device_id, model=model, model_version=model_version, labelled=len(marks),
                           right=sum(marks), accuracy=accuracy, estimated=estimated,
                           bias=estimate_bias(estimated, accuracy) if estimated else None)


def weighted_estimate(results: Sequence[SpotCheckResult]) -> Interval | None:
    """The estimates of `results` weighted by their labelled frames, the half-widths combined as independent;
    None when none has an estimate (those without one are left out)."""
    pairs = [(result.labelled, result.estimated) for result in results if result.estimated is not None]
    total = sum(labelled for labelled, _ in pairs)
    if not total:
        return None
    value = sum(labelled * estimate.value for labelled, estimate in pairs) / total
    below = math.sqrt(sum((labelled * (estimate.value - estimate.low)) ** 2 for labelled, estimate in pairs)) / total
    above = math.sqrt(sum((labelled * (estimate.high - estimate.value)) ** 2 for labelled, estimate in pairs)) / total
    return Interval(value=value, low=max(0.0, value - below), high=min(1.0, value + above))


def version_spot_check(results: Sequence[SpotCheckResult],
                       confidence: float = DEFAULT_CONFIDENCE) -> VersionSpotCheck | None:
    """The pooled spot check of one model version (see the module doc) from its devices' `results` (all of one
    model and version); None without any."""
    if not results:
        return None
    first = results[0]
    if any((r.model, r.model_version) != (first.model, first.model_version) for r in results):
        raise ValueError("a version's spot check pools the results of that model version only")
    right, labelled = sum(r.right for r in results), sum(r.labelled for r in results)
    accuracy = labelled_accuracy(right, labelled, confidence)
    if accuracy is None:
        return None
    estimated = weighted_estimate(results)
    with_estimate = [r for r in results if r.estimated is not None]
    same_frames = labelled_accuracy(sum(r.right for r in with_estimate), sum(r.labelled for r in with_estimate),
                                    confidence)
    bias = estimate_bias(estimated, same_frames) if estimated is not None and same_frames is not None else None
    return VersionSpotCheck(model=first.model, model_version=first.model_version, devices=len(results),
                            labelled=labelled, right=right, accuracy=accuracy, estimated=estimated, bias=bias,
                            bias_devices=len(with_estimate))


def version_spot_checks(results: Iterable[SpotCheckResult]) -> tuple[VersionSpotCheck, ...]:
    """`version_spot_check` of each model version in `results`, by model, then version (1.9.0 before 1.10.0)."""
    by_version: dict[tuple[str, str], list[SpotCheckResult]] = {}
    for result in results:
        by_version.setdefault((result.model, result.model_version), []).append(result)
    ordered = sorted(by_version.items(), key=lambda item: (item[0][0], version_sort_key(item[0][1])))
    pooled = (version_spot_check(group) for _, group in ordered)
    return tuple(check for check in pooled if check is not None)


class SpotCheckReport(BaseModel):
    """The labelled spot check of the devices shown (`fleet status --json`'s `spot_check`, the fleet page)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    registry: str
    """Where the labels were read (`fleet/spotcheck-labels/`)."""
    devices: tuple[SpotCheckResult, ...] = ()
    """Each device shown that has labels on the model version it runs."""
    versions: tuple[VersionSpotCheck, ...] = ()
    """Per model version, those devices' labels pooled."""
    error: str | None = None
    """Why the labels could not be read (then nothing else is filled in)."""
