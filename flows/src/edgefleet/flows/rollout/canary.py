"""Canary analysis: is the new version worse than the old one, beyond the noise? Pure maths, no I/O.

The device is the unit. Frames of one device share a scene and a host, so 300 of them carry about one
independent observation of its latency: pooling frames across devices makes every p-value tiny and lets the
effect floors decide on one device's quirks, and lets one device (honest or not) decide by volume. So each
canary device's *change* (its window since the activation against its own window before it, same scene,
same host) is compared with the control devices' change over the same two windows (devices still on the
old version: the load and the time of day changed for them too). Frames are only pooled within a device
(exchangeable) or for the error count; every device's window is capped at `max_device_samples` first.

| metric            | change per device                  | test: vs controls / without (*) | floor (median device)  |
|-------------------|------------------------------------|---------------------------------|------------------------|
| latency           | log(median after / median before)  | t-test / Mann-Whitney           | x ratio and +ms (**)    |
| errors            | (pooled over devices, capped)      | sequential probability ratio    | control + max_error_ratio |
| swap failures     | count                              |                                 | max_swap_failures      |
| class_mix_control | Jensen-Shannon(after, before)      | t-test / chi-square             | above chance (*3)      |
| score_control     | median before - median after       | t-test / Mann-Whitney           | max_score_drop         |
| class_mix_ref.    | JS(after, ref) - JS(before, ref)   | - / chi-square                  | max_reference_divergence |
| score_reference   | shortfall below ref: after-before  | - / Mann-Whitney                | max_reference_score_drop |
| detections/frame  | as class mix                       | as class mix                    | max_class_divergence   |

(*) with `min_control_devices` control changes: a pooled t-test of the canary devices' changes against the
controls' (devices as units; the floor on the effect net of the controls' median change); without: each
canary device's after against its own before (its frames are exchangeable), one vote per device (Stouffer).
(**) `max_latency_increase_ratio` and `min_latency_increase_ms`. The error test is valid under repeated
looks (the judge looks every poll). (*3) `max_class_divergence` on the divergence above what two samples of one
mix show by chance over as many classes (`histstats.chance_divergence`: with 100 classes that alone is over
the floor); the t-test sees the divergences themselves.

Medians are interpolated inside their bucket (a floor between two bucket edges is decided by the data, not
by rounding); class mixes are counted over one class list per release (`release_classes`: the manifest's
labels), not each window's own top K: schema 3 windows list every class they saw, schema 2 windows (their
own top 32 and `class_other`) are compared on the classes both sides list, cut alike (`classmix`).
Each metric passes, fails, or has not enough data. The verdict's score is passed / judged; it fails below
`pass_score` or when any critical metric fails; it waits while metrics lack data, until the caller's
timeout, when `final=True` makes a critical metric without data fail. A judge that cannot judge (impossible
counts, an exception) fails the verdict (`judge_safely`): the wave halts.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgefleet.flows.rollout import histstats as h
from edgefleet.flows.rollout.classmix import comparable, release_classes
from edgefleet.flows.rollout.params import CanaryGate, MetricName
from edgefleet.flows.rollout.verdict import Metric, Sample, Verdict, WaveEvidence, cannot_judge, decide
from edgefleet.kernel.contracts.distributions import DETECTIONS_MAX, Distributions


# --- what one device's window contributes (validated, capped) -------------------------------------------
@dataclass(frozen=True)
class Window:
    """One device's window, checked and capped: counts are floats scaled to at most `max_device_samples`."""

    inferences: float
    errors: float
    swap_failures: int
    latency: dict[int, float]
    score: dict[int, float]
    classes: dict[int, float]
    detections: dict[int, float]


def window(sample: Sample | None, cap: int, what: str) -> Window | None:
    """`sample` checked (`CannotJudge` on impossible counts) and capped; None stays None."""
    if sample is None:
        return None
    dist = sample.dist
    h.check_sample(what, sample.inferences, sample.errors, sample.swap_failures, dist)
    factor = min(1.0, cap / sample.inferences) if sample.inferences else 1.0
    return Window(inferences=sample.inferences * factor, errors=sample.errors * factor,
                  swap_failures=sample.swap_failures, latency=h.capped(dist.latency_counts(), cap),
                  score=h.capped(dist.score_counts(), cap), classes=h.capped(dist.class_counts(), cap),
                  detections=h.capped(dist.detection_counts(), cap))


@dataclass(frozen=True)
class Device:
    name: str
    before: Window | None
    after: Window | None


def prepare(evidence: WaveEvidence, gate: CanaryGate) -> tuple[list[Device], list[Device]]:
    """The canary and control devices, every window checked and capped."""
    def one(side: str, item) -> Device:  # noqa: ANN001 - a DeviceWindows
        return Device(item.device, window(item.before, gate.max_device_samples, f"{side} {item.device} before"),
                      window(item.after, gate.max_device_samples, f"{side} {item.device} after"))
    return [one("canary", d) for d in evidence.canary], [one("control", d) for d in evidence.control]


# --- per-device changes ---------------------------------------------------------------------------------
Change = Callable[[Window, Window], "tuple[float, float, float] | None"]
"""(before, after) -> (change, within-device p-value that it is a regression, an extra effect) or None."""


@dataclass(frozen=True)
class Changes:
    canary: list[float]
    extra: list[float]
    pvalues: list[float]
    control: list[float]
    control_extra: list[float]
    waiting: bool
    """Some canary device has a before-window but not enough since the activation yet."""


def _counted(win: Window | None, histogram: str, gate: CanaryGate) -> bool:
    return win is not None and h.total(getattr(win, histogram)) >= min(gate.min_samples, gate.max_device_samples)


def changes(canary: Sequence[Device], control: Sequence[Device], histogram: str, change: Change,
            gate: CanaryGate) -> Changes:
    """Each device's change of one histogram (`histogram`: a `Window` field) between its two windows."""
    def of(devices: Sequence[Device]) -> list[tuple[float, float, float]]:
        out = []
        for device in devices:
            if _counted(device.before, histogram, gate) and _counted(device.after, histogram, gate):
                value = change(device.before, device.after)  # type: ignore[arg-type]
                if value is not None:
                    out.append(value)
        return out
    mine, theirs = of(canary), of(control)
    waiting = any(_counted(d.before, histogram, gate) and not _counted(d.after, histogram, gate) for d in canary)
    return Changes([c for c, _, _ in mine], [x for _, _, x in mine], [p for _, p, _ in mine],
                   [c for c, _, _ in theirs], [x for _, _, x in theirs], waiting)


def latency_change(before: Window, after: Window) -> tuple[float, float, float] | None:
    old, new = h.latency_median_ms(before.latency), h.latency_median_ms(after.latency)
    if not old or not new:
        return None
    return math.log(new / old), h.mann_whitney_greater(after.latency, before.latency), new - old


def score_change(before: Window, after: Window) -> tuple[float, float, float] | None:
    old, new = h.score_median(before.score), h.score_median(after.score)
    if old is None or new is None:
        return None
    return old - new, h.mann_whitney_greater(before.score, after.score), 0.0


def mix_change(cells: Sequence[int], field: str) -> Change:
    def change(before: Window, after: Window) -> tuple[float, float, float]:
        used, (old, new) = comparable(cells, getattr(before, field), getattr(after, field))
        after_cells, before_cells = h.fixed_vector(new, used), h.fixed_vector(old, used)
        divergence, pvalue = h.divergence_test(after_cells, before_cells)
        return divergence, pvalue, divergence - h.chance_divergence(after_cells, before_cells)  # floor: above chance
    return change


def reference_mix_drift(cells: Sequence[int], reference: Distributions) -> Change:
    ref_counts: dict[int, float] = dict(reference.class_counts())  # counts, compared as the windows' floats

    def change(before: Window, after: Window) -> tuple[float, float, float]:
        used, (old_counts, new_counts, ref) = comparable(cells, before.classes, after.classes, ref_counts)
        old, new = h.fixed_vector(old_counts, used), h.fixed_vector(new_counts, used)
        fixed_ref = h.fixed_vector(ref, used)
        drift = h.divergence_test(new, fixed_ref)[0] - h.divergence_test(old, fixed_ref)[0]
        return drift, h.divergence_test(new, old)[1], 0.0
    return change


def reference_score_drift(reference: Distributions) -> Change:
    ref = h.score_median(reference.score_counts()) or 0.0

    def change(before: Window, after: Window) -> tuple[float, float, float] | None:
        old, new = h.score_median(before.score), h.score_median(after.score)
        if old is None or new is None:
            return None
        drift = max(0.0, ref - new) - max(0.0, ref - old)
        return drift, h.mann_whitney_greater(before.score, after.score), 0.0
    return change


# --- metric rows ----------------------------------------------------------------------------------------
def _row(name: MetricName, gate: CanaryGate, **fields) -> Metric:  # noqa: ANN003
    return Metric(name=name, critical=name in gate.critical, **fields)


def _no_data(name: MetricName, gate: CanaryGate, canary: str, control: str, test: str, why: str, *,
             waiting: bool = True) -> Metric:
    return _row(name, gate, canary=canary, control=control, test=test, statistic=None, threshold="",
                result="nodata", detail=why, waiting=waiting)


@dataclass(frozen=True)
class Floor:
    """What the median canary device's effect must exceed (a description and the check)."""

    text: str
    exceeded: Callable[[float, float], bool]
    """(effect, extra effect) -> over the floor."""
    show: Callable[[float, float], str]


def cube_root(values: Sequence[float]) -> list[float]:
    """Divergences of noise are skewed like a chi-square; their cube roots are close to normal
    (Wilson-Hilferty), which the t-test assumes."""
    return [math.copysign(abs(v) ** (1 / 3), v) for v in values]


def shift_metric(name: MetricName, found: Changes, gate: CanaryGate, floor: Floor, *,
                 with_controls: bool = True, scale: Callable[[Sequence[float]], list[float]] = list,
                 final: bool = False) -> Metric:
    """Fails when the canary devices' change is significant AND its median is over the floor.

    With `min_control_devices` control changes (and `with_controls`): the canary devices' changes against
    the controls' by a t-test (devices as units), the effect net of the controls' median change; else each
    canary device's after against its own before (frames of one device are exchangeable), combined with
    one vote per device (Stouffer). `scale`: what the t-test sees of the changes (the floor sees them as they
    are). Until `final`, it waits for every canary device that has a before-window."""
    canary_text = f"{len(found.canary)} device(s)"
    if not found.canary or (found.waiting and not final):
        why = "canary devices: not enough since activation yet" if found.waiting else \
            "no canary device has a before-activation window to compare with"
        return _no_data(name, gate, "0 devices", "-", "", why, waiting=found.waiting)
    effect, extra = statistics.median(found.canary), statistics.median(found.extra)
    if with_controls and len(found.control) >= gate.min_control_devices:
        pvalue = h.shift_greater(scale(found.canary), scale(found.control))
        effect -= statistics.median(found.control)
        extra -= statistics.median(found.control_extra)
        control_text = f"{len(found.control)} control device(s): {floor.show(statistics.median(found.control), 0)}"
        test = "t-test of device changes vs controls'"
    else:
        pvalue = h.combined_p(found.pvalues)
        control_text = "own before-activation window"
        test = "per device after vs before (Stouffer)"
    failed = pvalue < gate.alpha and floor.exceeded(effect, extra)
    return _row(name, gate, canary=f"{canary_text}: {floor.show(effect, extra)}", control=control_text, test=test,
                statistic=pvalue, threshold=f"p<{gate.alpha:g} and {floor.text}",
                result="fail" if failed else "pass")


def latency_floor(gate: CanaryGate) -> Floor:
    log_ratio = math.log(gate.max_latency_increase_ratio)
    return Floor(f"x{gate.max_latency_increase_ratio:g} and +{gate.min_latency_increase_ms:g} ms",
                 lambda effect, added: effect > log_ratio and added > gate.min_latency_increase_ms,
                 lambda effect, added: f"median x{math.exp(effect):.2f} ({added:+.2f} ms)")


def excess_floor(limit: float, what: str) -> Floor:
    """On the extra effect (a divergence above chance): the t-test still sees the divergences themselves."""
    return Floor(f"{what} above chance>{limit:g}", lambda _, extra: extra > limit,
                 lambda _, extra: f"{what} above chance {extra:+.3f}")


def plain_floor(limit: float, what: str) -> Floor:
    return Floor(f"{what}>{limit:g}", lambda effect, _: effect > limit, lambda effect, _: f"{what} {effect:+.3f}")


def error_metric(canary: Sequence[Device], control: Sequence[Device], gate: CanaryGate, final: bool) -> Metric:
    """Wald's sequential probability ratio test of the canary's pooled (capped) error ratio: H0 at the
    allowed ratio (the control's ratio + `max_error_ratio`), H1 `error_detectable_increase` above it. The
    likelihood ratio is a martingale under H0, so failing when it crosses 1/alpha keeps the false-halt
    rate under alpha however often the judge looks (Ville's inequality). Undecided at the end (`final`):
    the allowed ratio was not rejected, so it passes."""
    name: MetricName = "errors"
    after = [d.after for d in canary if d.after is not None]
    n, e = sum(w.inferences for w in after), sum(w.errors for w in after)
    canary_text = f"{e:.0f}/{n:.0f} ({e / n:.2%})" if n else "n=0"
    baseline, control_text = _error_baseline(canary, control, gate)
    test = "sequential probability ratio"
    if n < gate.min_samples:
        return _no_data(name, gate, canary_text, control_text, test, f"fewer than {gate.min_samples} inferences")
    allowed = min(max(baseline + gate.max_error_ratio, 1e-6), 0.5)
    alternative = min(allowed + gate.error_detectable_increase, 0.999)
    llr = e * math.log(alternative / allowed) + (n - e) * math.log((1 - alternative) / (1 - allowed))
    fail_at, pass_at = math.log(1 / gate.alpha), math.log(gate.error_beta / (1 - gate.alpha))
    if llr >= fail_at:
        result = "fail"
    elif (llr <= pass_at and n >= gate.min_error_samples) or final:
        result = "pass"
    else:
        return _no_data(name, gate, canary_text, control_text, test, "the sequential test has not decided yet")
    return _row(name, gate, canary=canary_text, control=control_text, test=test,
                statistic=math.exp(min(0.0, -llr)), threshold=f"LR>{1 / gate.alpha:g} for {alternative:.2%} "
                f"against {allowed:.2%} allowed", result=result, detail=f"log LR {llr:+.2f}")


def _error_baseline(canary: Sequence[Device], control: Sequence[Device], gate: CanaryGate) -> tuple[float, str]:
    """The old version's error ratio: the median control device's since the activation (one vote per
    device: a device claiming many errors or many clean inferences moves it by one rank), else the canary
    devices' own before-windows, else none (0)."""
    ratios = sorted(d.after.errors / d.after.inferences for d in control
                    if d.after is not None and d.after.inferences >= gate.min_samples)
    if len(ratios) >= gate.min_control_devices:
        median = statistics.median(ratios)
        return median, f"median of {len(ratios)} control devices: {median:.2%}"
    before = [d.before for d in canary if d.before is not None]
    n, e = sum(w.inferences for w in before), sum(w.errors for w in before)
    if n >= gate.min_samples:
        return e / n, f"own before: {e:.0f}/{n:.0f} ({e / n:.2%})"
    return 0.0, "-"


def swap_metric(canary: Sequence[Device], gate: CanaryGate) -> Metric:
    swaps = sum(d.after.swap_failures for d in canary if d.after is not None)
    return _row("swap_failures", gate, canary=str(swaps), control="-", test="count", statistic=float(swaps),
                threshold=f"<={gate.max_swap_failures}", result="fail" if swaps > gate.max_swap_failures else "pass")


def reference_metric(name: MetricName, reference: Distributions | None, reference_n: int, gate: CanaryGate,
                     build: Callable[[Distributions], Metric]) -> Metric:
    """A reference metric only with a usable reference (it is fixed: a missing one is not waited for)."""
    if reference is None or reference_n == 0:
        return _no_data(name, gate, "-", "-", "", "nothing to compare with", waiting=False)
    if reference_n < gate.min_reference_samples:
        return _no_data(name, gate, "-", f"n={reference_n}", "",
                        f"reference of {reference_n} images (< {gate.min_reference_samples})", waiting=False)
    return build(reference)


# --- the verdict ----------------------------------------------------------------------------------------
def judge(evidence: WaveEvidence, reference: Distributions | None, gate: CanaryGate, *,
          classes: Sequence[int] | None = None, detector: bool = False, final: bool = False) -> Verdict:
    """Judges one wave (see the module docstring). `final`: the wait is over (timeout), judge what is there.

    `classes`: the release's class list (`release_classes`); None: from the reference or the canary devices'
    before-windows. Raises `CannotJudge` on impossible input (`judge_safely` turns it into a halt).
    """
    canary, control = prepare(evidence, gate)
    if classes is None:
        classes = release_classes(None, reference, [d.dist for d in (w.before for w in evidence.canary) if d])
    cells = tuple(classes)
    metrics = [
        shift_metric("latency", changes(canary, control, "latency", latency_change, gate), gate,
                     latency_floor(gate), final=final),
        error_metric(canary, control, gate, final),
        swap_metric(canary, gate),
        shift_metric("class_mix_control", changes(canary, control, "classes", mix_change(cells, "classes"), gate),
                     gate, excess_floor(gate.max_class_divergence, "JS"), scale=cube_root, final=final),
        reference_metric("class_mix_reference", reference, sum(reference.class_counts().values()) if reference
                         else 0, gate, lambda usable: shift_metric(
                             "class_mix_reference", changes(canary, (), "classes",
                                                            reference_mix_drift(cells, usable), gate),
                             gate, plain_floor(gate.max_reference_divergence, "JS drift"), with_controls=False,
                             final=final)),
        shift_metric("score_control", changes(canary, control, "score", score_change, gate), gate,
                     plain_floor(gate.max_score_drop, "drop"), final=final),
        reference_metric("score_reference", reference, sum(reference.score_counts().values()) if reference
                         else 0, gate, lambda usable: shift_metric(
                             "score_reference", changes(canary, (), "score", reference_score_drift(usable),
                                                        gate),
                             gate, plain_floor(gate.max_reference_score_drop, "drop below ref"),
                             with_controls=False, final=final)),
    ]
    if detector:
        per_frame = tuple(range(DETECTIONS_MAX + 1))
        metrics.append(shift_metric("detections_control", changes(canary, control, "detections",
                                                                  mix_change(per_frame, "detections"), gate),
                                    gate, excess_floor(gate.max_class_divergence, "JS"), scale=cube_root,
                                    final=final))
    used = sum(1 for d in control if d.before is not None and d.after is not None)
    described = f"{evidence.control_kind} ({used} control devices)" if used else evidence.control_kind
    return decide(metrics, gate, control=described, final=final)


def judge_safely(evidence: WaveEvidence, reference: Distributions | None, gate: CanaryGate, **options) -> Verdict:  # noqa: ANN003
    """`judge`, except that a judge that cannot judge (impossible input, or any error of its own) fails the
    verdict, so the wave halts and rolls back as on a failed verdict instead of crashing mid-wave."""
    try:
        return judge(evidence, reference, gate, **options)
    except Exception as error:  # noqa: BLE001 - every failure of the judge is a halt, named in the verdict
        return cannot_judge(gate, f"{type(error).__name__}: {error}")
