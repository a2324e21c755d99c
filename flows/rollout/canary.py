"""Canary analysis: is the new version worse than the old one, beyond the noise? Pure maths, no I/O.

Kayenta-style: the canary (the wave's devices on the new version, pooled) against a control (devices still on
the old version over the same window; else the same devices before activation), plus the release's own
reference distributions (held-out split). Each metric is a significance test AND an effect size AND, where
it makes sense, an absolute floor, so that neither noise on a loaded machine (tiny effects are significant
with thousands of samples) nor a big ratio of two small numbers (0.7 ms / 0.3 ms) halts a good release:

| metric               | test                                     | effect                        | floor            |
|----------------------|------------------------------------------|-------------------------------|------------------|
| latency              | Mann-Whitney U on the histograms (>)     | ratio of medians              | median + N ms    |
| errors               | Fisher exact vs control (binomial vs max)| error ratio above the control | max_error_ratio  |
| swap failures        | count                                    |                               | max_swap_failures|
| class mix vs X       | chi-square of homogeneity                | Jensen-Shannon divergence     |                  |
| top-1 score vs X     | Mann-Whitney U (one-sided: lower)        | drop of the median score      |                  |
| detections/frame vs X| chi-square of homogeneity (detectors)    | Jensen-Shannon divergence     |                  |

Each metric passes, fails, or has not enough data. The verdict's score is passed / judged; it fails below
`pass_score` or when any critical metric fails; it waits while metrics lack data, until the caller's
timeout, when `final=True` makes a critical metric without data fail and the others leave the score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

from edgefleet.flows.rollout.params import CanaryGate, MetricName
from edgefleet.flows.rollout.verdict import ControlKind, Metric, Sample, Verdict
from edgefleet.kernel.contracts.distributions import SCORE_BUCKETS, Distributions, latency_bucket_mid_ms


# --- statistics on histograms ---------------------------------------------------------------------------
def _expand(counts: Mapping[int, int], value_of) -> np.ndarray:  # noqa: ANN001 - index -> representative value
    keys = sorted(counts)
    return np.repeat(np.array([value_of(k) for k in keys], dtype=float), [counts[k] for k in keys])


def histogram_median(counts: Mapping[int, int], value_of) -> float | None:  # noqa: ANN001
    """The median of a histogram, each bucket at its representative value; None when empty."""
    total = sum(counts.values())
    if total == 0:
        return None
    seen = 0
    for key in sorted(counts):
        seen += counts[key]
        if seen * 2 >= total:
            return float(value_of(key))
    return None  # pragma: no cover - unreachable


def mann_whitney_greater(canary: Mapping[int, int], control: Mapping[int, int]) -> float:
    """One-sided p-value that canary values are stochastically greater (bucket indices are ordered)."""
    result = stats.mannwhitneyu(_expand(canary, float), _expand(control, float), alternative="greater",
                                method="asymptotic")
    return float(result.pvalue)


def score_bucket_mid(index: int) -> float:
    return (index + 0.5) / SCORE_BUCKETS


def divergence_test(a: Mapping[int, int], b: Mapping[int, int]) -> tuple[float, float]:
    """(Jensen-Shannon divergence in base 2, chi-square homogeneity p-value) of two count histograms."""
    keys = sorted(set(a) | set(b))
    table = np.array([[a.get(k, 0) for k in keys], [b.get(k, 0) for k in keys]], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    p, q = table[0] / table[0].sum(), table[1] / table[1].sum()
    divergence = float(jensenshannon(p, q, base=2) ** 2)
    _, pvalue, _, _ = stats.chi2_contingency(table, correction=False)
    return divergence, float(pvalue)


# --- metrics --------------------------------------------------------------------------------------------
def _no_data(name: MetricName, gate: CanaryGate, canary: str, control: str, test: str, why: str, *,
             waiting: bool = True) -> Metric:
    return Metric(name=name, critical=name in gate.critical, canary=canary, control=control, test=test,
                  statistic=None, threshold="", result="nodata", detail=why, waiting=waiting)


def latency_metric(canary: Sample, control: Sample | None, gate: CanaryGate) -> Metric:
    name: MetricName = "latency"
    test = "Mann-Whitney U (one-sided)"
    canary_counts = canary.dist.latency_counts()
    canary_n = sum(canary_counts.values())
    canary_median = histogram_median(canary_counts, latency_bucket_mid_ms)
    canary_text = f"median {canary_median:.2f} ms (n={canary_n})" if canary_median is not None else f"n={canary_n}"
    if control is None:
        return _no_data(name, gate, canary_text, "-", test, "no control", waiting=False)
    control_counts = control.dist.latency_counts()
    control_n = sum(control_counts.values())
    control_median = histogram_median(control_counts, latency_bucket_mid_ms)
    control_text = f"median {control_median:.2f} ms (n={control_n})" if control_median is not None \
        else f"n={control_n}"
    if canary_n < gate.min_samples or control_n < gate.min_samples:
        return _no_data(name, gate, canary_text, control_text, test, f"fewer than {gate.min_samples} latencies")
    pvalue = mann_whitney_greater(canary_counts, control_counts)
    ratio = canary_median / control_median if control_median else math.inf
    added = canary_median - control_median
    regression = (pvalue < gate.alpha and ratio > gate.max_latency_increase_ratio
                  and added > gate.min_latency_increase_ms)
    return Metric(name=name, critical=name in gate.critical, canary=canary_text, control=control_text, test=test,
                  statistic=pvalue, result="fail" if regression else "pass",
                  threshold=f"p<{gate.alpha:g} and x{gate.max_latency_increase_ratio:g} and "
                            f"+{gate.min_latency_increase_ms:g} ms",
                  detail=f"median x{ratio:.2f} (+{added:.2f} ms)")


def error_metric(canary: Sample, control: Sample | None, gate: CanaryGate) -> Metric:
    name: MetricName = "errors"
    ratio = canary.errors / canary.inferences if canary.inferences else 0.0
    canary_text = f"{canary.errors}/{canary.inferences} ({ratio:.2%})"
    if canary.inferences < gate.min_samples:
        return _no_data(name, gate, canary_text, "-", "", f"fewer than {gate.min_samples} inferences")
    if control is not None and control.inferences >= gate.min_samples:
        control_ratio = control.errors / control.inferences
        control_text = f"{control.errors}/{control.inferences} ({control_ratio:.2%})"
        test = "Fisher exact (one-sided)"
        _, pvalue = stats.fisher_exact([[canary.errors, canary.inferences - canary.errors],
                                        [control.errors, control.inferences - control.errors]],
                                       alternative="greater")
    else:
        control_text = "-"
        test = f"binomial vs {gate.max_error_ratio:.1%}"
        pvalue = stats.binomtest(canary.errors, canary.inferences, gate.max_error_ratio,
                                 alternative="greater").pvalue
    failed = pvalue < gate.alpha and ratio > gate.max_error_ratio
    if not failed and canary.inferences < gate.min_error_samples:  # may fail early, passes only with power
        return _no_data(name, gate, canary_text, control_text, test,
                        f"fewer than {gate.min_error_samples} inferences to pass")
    return Metric(name=name, critical=name in gate.critical, canary=canary_text, control=control_text, test=test,
                  statistic=float(pvalue), threshold=f"p<{gate.alpha:g} and >{gate.max_error_ratio:.1%}",
                  result="fail" if failed else "pass")


def swap_metric(canary: Sample, gate: CanaryGate) -> Metric:
    name: MetricName = "swap_failures"
    failed = canary.swap_failures > gate.max_swap_failures
    return Metric(name=name, critical=name in gate.critical, canary=str(canary.swap_failures), control="-",
                  test="count", statistic=float(canary.swap_failures), threshold=f"<={gate.max_swap_failures}",
                  result="fail" if failed else "pass")


def _not_comparable(name: MetricName, gate: CanaryGate, canary_n: int, other_n: int | None, texts: tuple[str, str],
                    test: str, reference: bool) -> Metric | None:
    """The no-data row when the canary cannot be compared yet (or at all) with the other side; None when it can.

    A control may still grow (the metric waits); the release's reference is fixed (a missing or too small one
    is simply not judged)."""
    canary_text, other_text = texts
    if other_n is None or (reference and other_n == 0):
        return _no_data(name, gate, canary_text, other_text, test, "nothing to compare with", waiting=False)
    if reference and other_n < gate.min_reference_samples:
        return _no_data(name, gate, canary_text, other_text, test,
                        f"reference of {other_n} images (< {gate.min_reference_samples})", waiting=False)
    other_needed = gate.min_reference_samples if reference else gate.min_samples
    if canary_n < gate.min_samples or other_n < other_needed:
        return _no_data(name, gate, canary_text, other_text, test, f"fewer than {gate.min_samples} samples")
    return None


def divergence_metric(name: MetricName, canary_counts: Mapping[int, int], other_counts: Mapping[int, int] | None,
                      max_divergence: float, gate: CanaryGate, *, reference: bool = False) -> Metric:
    """Divergence of the canary from a control (which may still grow) or from the release's reference (fixed)."""
    test = "Jensen-Shannon + chi-square"
    canary_n = sum(canary_counts.values())
    other_n = sum(other_counts.values()) if other_counts is not None else None
    texts = (f"n={canary_n}", f"n={other_n}" if other_n is not None else "-")
    waiting = _not_comparable(name, gate, canary_n, other_n, texts, test, reference)
    if waiting is not None or other_counts is None:
        return waiting  # type: ignore[return-value]
    divergence, pvalue = divergence_test(canary_counts, other_counts)
    failed = pvalue < gate.alpha and divergence > max_divergence
    return Metric(name=name, critical=name in gate.critical, canary=texts[0], control=texts[1], test=test,
                  statistic=divergence, threshold=f"JS>{max_divergence:g} and p<{gate.alpha:g}",
                  result="fail" if failed else "pass", detail=f"chi-square p={pvalue:.3g}")


def _median_text(median: float | None, n: int | None) -> str:
    if n is None:
        return "-"
    return f"median {median:.2f} (n={n})" if median is not None else f"n={n}"


def score_metric(name: MetricName, canary_counts: Mapping[int, int], other_counts: Mapping[int, int] | None,
                 max_drop: float, gate: CanaryGate, *, reference: bool = False) -> Metric:
    """A collapse of the top-1 scores: one-sided Mann-Whitney U (canary lower) AND a median drop over `max_drop`.

    One-sided on purpose: a new model more confident than the old one is no regression.
    """
    test = "Mann-Whitney U (one-sided, lower)"
    canary_n = sum(canary_counts.values())
    other_n = sum(other_counts.values()) if other_counts is not None else None
    canary_median = histogram_median(canary_counts, score_bucket_mid)
    other_median = histogram_median(other_counts or {}, score_bucket_mid)
    texts = (_median_text(canary_median, canary_n), _median_text(other_median, other_n))
    waiting = _not_comparable(name, gate, canary_n, other_n, texts, test, reference)
    if waiting is not None or other_counts is None:
        return waiting  # type: ignore[return-value]
    pvalue = mann_whitney_greater(other_counts, canary_counts)  # the other side higher = the canary lower
    drop = (other_median or 0.0) - (canary_median or 0.0)
    failed = pvalue < gate.alpha and drop > max_drop
    return Metric(name=name, critical=name in gate.critical, canary=texts[0], control=texts[1], test=test,
                  statistic=pvalue, threshold=f"p<{gate.alpha:g} and drop>{max_drop:g}",
                  result="fail" if failed else "pass", detail=f"median drop {drop:+.2f}")


# --- the verdict ----------------------------------------------------------------------------------------
def judge(canary: Sample, control: Sample | None, reference: Distributions | None, gate: CanaryGate, *,
          control_kind: ControlKind, behaviour_control: Sample | None = None,
          behaviour_kind: ControlKind | None = None, detector: bool = False, final: bool = False) -> Verdict:
    """Judges one wave (see the module docstring). `final`: the wait is over (timeout), judge what is there.

    `control` is for latency and errors (best: concurrent, same load); `behaviour_control` for the class mix,
    scores and detections (best: the same devices before activation, same scenes); when it is not given,
    `control` serves both.
    """
    if behaviour_control is None:
        behaviour_control, behaviour_kind = control, control_kind
    behaviour = behaviour_control.dist if behaviour_control is not None else None
    metrics = [
        latency_metric(canary, control, gate),
        error_metric(canary, control, gate),
        swap_metric(canary, gate),
        divergence_metric("class_mix_control", canary.dist.class_counts(),
                          behaviour.class_counts() if behaviour else None, gate.max_class_divergence, gate),
        divergence_metric("class_mix_reference", canary.dist.class_counts(),
                          reference.class_counts() if reference else None, gate.max_reference_divergence, gate,
                          reference=True),
        score_metric("score_control", canary.dist.score_counts(),
                     behaviour.score_counts() if behaviour else None, gate.max_score_drop, gate),
        score_metric("score_reference", canary.dist.score_counts(),
                     reference.score_counts() if reference else None, gate.max_reference_score_drop, gate,
                     reference=True),
    ]
    if detector:
        metrics += [
            divergence_metric("detections_control", canary.dist.detection_counts(),
                              behaviour.detection_counts() if behaviour else None,
                              gate.max_class_divergence, gate),
            divergence_metric("detections_reference", canary.dist.detection_counts(),
                              reference.detection_counts() if reference else None,
                              gate.max_reference_divergence, gate, reference=True),
        ]
    described = control_kind if behaviour_kind == control_kind else f"{control_kind}; behaviour: {behaviour_kind}"
    return decide(metrics, gate, control=described, final=final)


def _waiting_for(metric: Metric) -> bool:
    """A metric that may still get data: not one that has nothing to compare with at all."""
    return metric.result == "nodata" and metric.waiting


def decide(metrics: Sequence[Metric], gate: CanaryGate, *, control: str, final: bool) -> Verdict:
    """The verdict from the metric rows: critical failures first, then waiting, then the score."""
    critical_failed = [m.name for m in metrics if m.critical and m.result == "fail"]
    if final:
        critical_failed += [m.name for m in metrics if m.critical and m.result == "nodata"]
    judged = [m for m in metrics if m.result != "nodata"]
    score = sum(m.result == "pass" for m in judged) / len(judged) if judged else None
    common = {"score": score, "pass_score": gate.pass_score, "control": control, "metrics": tuple(metrics)}
    if critical_failed:
        others = [m.name for m in judged if m.result == "fail" and m.name not in critical_failed]
        return Verdict(result="fail", halted_by=tuple(critical_failed + others), **common,
                       reason=f"critical metric(s) failed: {', '.join(critical_failed)}"
                              + (f"; also failed: {', '.join(others)}" if others else ""))
    if not final and any(_waiting_for(m) for m in metrics):
        waiting = [m.name for m in metrics if _waiting_for(m)]
        return Verdict(result="wait", **common, reason=f"waiting for data: {', '.join(waiting)}")
    if score is None:
        return Verdict(result="fail", halted_by=("no data",), **common, reason="no metric could be judged")
    failed = tuple(m.name for m in judged if m.result == "fail")
    if score < gate.pass_score:
        return Verdict(result="fail", halted_by=failed, **common,
                       reason=f"score {score:.2f} below {gate.pass_score:.2f}: {', '.join(failed)} failed")
    return Verdict(result="pass", **common,
                   reason=f"score {score:.2f} (>= {gate.pass_score:.2f})"
                          + (f"; failed but tolerated: {', '.join(failed)}" if failed else ""))
