"""The shadow wave's judgement (issue 25): is the candidate, run beside the current model on the same frames,
answering like it? Pure maths, no I/O; the device is the unit.

Each canary device reports its pairs (`ShadowSummary`, cumulative since its candidate was loaded; capped at
`max_device_samples` by scaling). The thresholds are the one gate's (`params.CanaryGate`). Per device:

| metric      | per device                               | test                               | limit                |
|-------------|------------------------------------------|------------------------------------|----------------------|
| agreement   | top-1 agreement / answered pairs         | one-sided binomial; Stouffer (all) | min_shadow_agreement |
| class_mix   | JS(candidate mix, primary mix)           | chi-square homogeneity (canary's)  | max_class_divergence |
| score_delta | median paired delta, candidate - primary | sign test (falls vs rises)         | -max_score_drop      |
| errors      | candidate failures / sampled frames      | one-sided binomial                 | max_error_ratio      |

A device fails a metric when its value is beyond the floor *and* the test is significant at `alpha`; the
agreement also fails when the devices' p-values combined (Stouffer, one vote each) are significant although
no single device is. A metric passes when every device with enough pairs is within its floor; it has no data
until every device has `min_samples` pairs. The verdict fails on any failed metric, passes when all pass, and
otherwise waits, until `final`, when a metric without data fails it (no device acts on an unjudged model).
Frames of one device are correlated (one scene): the cap keeps a device's tests from reading them as
thousands of independent observations; the chi-square treats the two mixes as independent samples although
they are paired (it is then conservative for a candidate that agrees).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict
from scipy import stats

from edgefleet.flows.rollout import histstats as h
from edgefleet.flows.rollout.classmix import comparable
from edgefleet.flows.rollout.params import CanaryGate
from edgefleet.kernel.contracts.telemetry import SCORE_DELTA_BUCKETS, ShadowSummary

ShadowMetricName = Literal["agreement", "class_mix", "score_delta", "errors"]
ShadowResult = Literal["pass", "fail", "nodata"]
ZERO_DELTA_BUCKET = SCORE_DELTA_BUCKETS // 2
"""The bucket holding a delta of 0 (and small rises): the buckets below it are falls."""


class DeviceValue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    device: str
    value: float
    pvalue: float
    failed: bool


class ShadowMetric(BaseModel):
    """One row of the shadow verdict: the median device's value, each device's value and test."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ShadowMetricName
    result: ShadowResult
    value: float | None
    limit: float
    devices: tuple[DeviceValue, ...] = ()
    detail: str = ""


class ShadowVerdict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    result: Literal["pass", "fail", "wait"]
    reason: str
    metrics: tuple[ShadowMetric, ...]
    frames: dict[str, int]
    """Pairs per device (as reported, before the cap)."""

    @property
    def failed_metrics(self) -> tuple[str, ...]:
        return tuple(metric.name for metric in self.metrics if metric.result == "fail")

    def table(self) -> list[dict[str, str]]:
        return [{"metric": m.name, "result": m.result, "value": "-" if m.value is None else f"{m.value:.4g}",
                 "limit": f"{m.limit:g}", "devices": ", ".join(f"{d.device} {d.value:.3g} (p {d.pvalue:.2g})"
                                                               for d in m.devices), "detail": m.detail}
                for m in self.metrics]


# --- per device -----------------------------------------------------------------------------------------------
def answered(summary: ShadowSummary) -> int:
    return summary.frames - summary.errors


def scale(summary: ShadowSummary, cap: int) -> float:
    """The factor bringing a device's answered pairs down to `cap` (1 when below)."""
    n = answered(summary)
    return min(1.0, cap / n) if n > 0 else 1.0


def agreement(summary: ShadowSummary, gate: CanaryGate) -> tuple[float, float]:
    """(agreement, one-sided p-value that it is below `min_shadow_agreement`), on the capped counts."""
    n = answered(summary)
    rate = summary.top1_agree / n
    factor = scale(summary, gate.max_device_samples)
    trials = max(1, round(n * factor))
    agree = min(trials, round(summary.top1_agree * factor))
    return rate, float(stats.binomtest(agree, trials, gate.min_shadow_agreement, alternative="less").pvalue)


def class_mix(summary: ShadowSummary, gate: CanaryGate) -> tuple[float, float]:
    """(JS divergence of the candidate's top-1 mix from the primary's, chi-square p-value), on capped counts
    compared as the canary compares class mixes (`classmix.comparable`: rare classes and anything in "other"
    lumped into one cell, never dropped). No chance level is taken off, unlike the canary's before/after
    windows: the two mixes are of the same frames, so they differ only where the models disagree."""
    primary = summary.primary.class_counts() if summary.primary else {}
    candidate = summary.candidate.class_counts() if summary.candidate else {}
    cells = sorted(k for k in set(primary) | set(candidate) if k >= 0)
    used, (old, new) = comparable(cells, h.capped(primary, gate.max_device_samples),
                                  h.capped(candidate, gate.max_device_samples))
    a, b = h.fixed_vector(old, used), h.fixed_vector(new, used)
    return h.divergence_test(b, a)


def score_delta(summary: ShadowSummary, gate: CanaryGate) -> tuple[float, float]:
    """(median paired delta, sign-test p-value that the candidate's score falls more often than it rises)."""
    counts = {b.i: float(b.n) for b in summary.score_delta}
    width = 2.0 / SCORE_DELTA_BUCKETS
    median = h.interpolated_quantile(counts, lambda i: (-1.0 + i * width, -1.0 + (i + 1) * width), 0.5)
    factor = scale(summary, gate.max_device_samples)
    falls = round(sum(n for i, n in counts.items() if i < ZERO_DELTA_BUCKET) * factor)
    rises = round(sum(n for i, n in counts.items() if i >= ZERO_DELTA_BUCKET) * factor)
    pvalue = float(stats.binomtest(falls, falls + rises, 0.5, alternative="greater").pvalue) if falls + rises else 1.0
    return (median if median is not None else 0.0), pvalue


def error_ratio(summary: ShadowSummary, gate: CanaryGate) -> tuple[float, float]:
    """(failures / sampled frames, one-sided p-value that the ratio exceeds `max_error_ratio`)."""
    factor = min(1.0, gate.max_device_samples / summary.frames)
    trials = max(1, round(summary.frames * factor))
    errors = min(trials, round(summary.errors * factor))
    if gate.max_error_ratio <= 0:
        return summary.errors / summary.frames, 0.0 if errors else 1.0
    pvalue = float(stats.binomtest(errors, trials, gate.max_error_ratio, alternative="greater").pvalue)
    return summary.errors / summary.frames, pvalue


# --- the wave -------------------------------------------------------------------------------------------------
def _metric(name: ShadowMetricName, values: Mapping[str, tuple[float, float]], limit: float, *, above: bool,
            alpha: float, waiting: Sequence[str], combined: float | None = None) -> ShadowMetric:
    """One metric over the devices: a device fails when beyond `limit` (above it when `above`) and significant."""
    rows = tuple(DeviceValue(device=device, value=value, pvalue=pvalue,
                             failed=(value > limit if above else value < limit) and pvalue < alpha)
                 for device, (value, pvalue) in sorted(values.items()))
    median = statistics.median(row.value for row in rows) if rows else None
    failed = [row.device for row in rows if row.failed]
    if combined is not None and combined < alpha and median is not None and (median > limit if above else
                                                                             median < limit):
        failed = failed or ["the devices together"]
    if failed:
        return ShadowMetric(name=name, result="fail", value=median, limit=limit, devices=rows,
                            detail=f"beyond the limit, significantly: {', '.join(failed)}")
    if waiting or not rows:
        return ShadowMetric(name=name, result="nodata", value=median, limit=limit, devices=rows,
                            detail=f"waiting for pairs from {', '.join(waiting) or 'every device'}")
    beyond = [row.device for row in rows if (row.value > limit if above else row.value < limit)]
    if beyond:
        return ShadowMetric(name=name, result="nodata", value=median, limit=limit, devices=rows,
                            detail=f"beyond the limit, not yet significantly: {', '.join(beyond)}")
    return ShadowMetric(name=name, result="pass", value=median, limit=limit, devices=rows)


def judge_shadow(reports: Mapping[str, ShadowSummary | None], gate: CanaryGate, *, final: bool = False
                 ) -> ShadowVerdict:
    """The shadow wave's verdict from each canary device's pairs (None: the device reported none yet).

    Raises:
        ValueError: a report with impossible counts (each is checked against the contract again).
    """
    reports = {device: ShadowSummary.model_validate(summary.model_dump()) if summary is not None else None
               for device, summary in reports.items()}
    frames = {device: (summary.frames if summary else 0) for device, summary in reports.items()}
    ready = {device: summary for device, summary in reports.items()
             if summary is not None and answered(summary) >= gate.min_samples}
    waiting = sorted(set(reports) - set(ready))
    erring = {device: summary for device, summary in reports.items()
              if summary is not None and summary.frames >= gate.min_samples}
    agree = {device: agreement(summary, gate) for device, summary in ready.items()}
    metrics = (
        _metric("agreement", agree, gate.min_shadow_agreement, above=False, alpha=gate.alpha, waiting=waiting,
                combined=h.combined_p([p for _, p in agree.values()]) if agree else None),
        _metric("class_mix", {d: class_mix(s, gate) for d, s in ready.items()}, gate.max_class_divergence,
                above=True, alpha=gate.alpha, waiting=waiting),
        _metric("score_delta", {d: score_delta(s, gate) for d, s in ready.items()}, -gate.max_score_drop,
                above=False, alpha=gate.alpha, waiting=waiting),
        _metric("errors", {d: error_ratio(s, gate) for d, s in erring.items()}, gate.max_error_ratio, above=True,
                alpha=gate.alpha, waiting=sorted(set(reports) - set(erring))),
    )
    failed = [m for m in metrics if m.result == "fail"]
    if failed:
        reason = "; ".join(f"shadow {m.name} {m.value:.3g} vs limit {m.limit:g}: {m.detail}" for m in failed)
        return ShadowVerdict(result="fail", reason=reason, metrics=metrics, frames=frames)
    if all(m.result == "pass" for m in metrics):
        return ShadowVerdict(result="pass", reason="the candidate answers like the current model on every "
                             "canary device", metrics=metrics, frames=frames)
    pending = "; ".join(f"{m.name}: {m.detail}" for m in metrics if m.result == "nodata")
    if final:
        return ShadowVerdict(result="fail", reason=f"the shadow wave ended without a verdict ({pending})",
                             metrics=metrics, frames=frames)
    return ShadowVerdict(result="wait", reason=pending, metrics=metrics, frames=frames)


def judge_shadow_safely(reports: Mapping[str, ShadowSummary | None], gate: CanaryGate, *, final: bool = False
                        ) -> ShadowVerdict:
    """`judge_shadow`, where a judge that cannot judge (impossible counts) fails the verdict: the rollout halts."""
    try:
        return judge_shadow(reports, gate, final=final)
    except (ValueError, ArithmeticError) as error:
        return ShadowVerdict(result="fail", reason=f"the shadow judge cannot judge: {error}", metrics=(),
                             frames={device: (s.frames if s else 0) for device, s in reports.items()})
