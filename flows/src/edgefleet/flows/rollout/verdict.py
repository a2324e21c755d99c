"""The canary verdict's types: what each side did (`Sample`), one metric's row, the wave's verdict.

Plain typed data (no statistics library), so the rollout record and `rollout show` read it without SciPy;
the judgement itself is `canary.py`; the verdict from its rows (`decide`) is here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.flows.rollout.params import CanaryGate, MetricName
from edgefleet.kernel.contracts.distributions import Distributions

MetricResult = Literal["pass", "fail", "nodata"]
VerdictResult = Literal["pass", "fail", "wait"]
ControlKind = Literal["concurrent", "before-activation", "none"]


class Sample(BaseModel):
    """What one side (canary, control or reference) did: counts and distributions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    inferences: int = Field(ge=0)
    errors: int = Field(default=0, ge=0)
    swap_failures: int = Field(default=0, ge=0)
    devices: tuple[str, ...] = ()
    dist: Distributions = Distributions()


class DeviceWindows(BaseModel):
    """One device over the judged windows: the old version before the activation, and since the activation
    (the new version on a canary device, the old one on a control device)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: str
    before: Sample | None = None
    after: Sample | None = None


class WaveEvidence(BaseModel):
    """What the judge sees of one wave: each canary device and each control device, over the same windows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    canary: tuple[DeviceWindows, ...]
    control: tuple[DeviceWindows, ...] = ()
    control_kind: ControlKind = "none"
    notes: tuple[str, ...] = ()
    """Why some numbers are missing (a device's stale status), for the verdict's reason."""


class Metric(BaseModel):
    """One row of the verdict table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: MetricName
    critical: bool
    canary: str
    control: str
    test: str
    statistic: float | None = Field(description="p-value, or divergence, or count")
    threshold: str
    result: MetricResult
    detail: str = ""
    waiting: bool = False
    """nodata that more time can cure (too few samples yet), as opposed to nothing to compare with at all."""


class Verdict(BaseModel):
    """The judgement of one wave."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    result: VerdictResult
    score: float | None
    pass_score: float
    control: str
    """Which controls were used: "concurrent", "before-activation", "none", or "X; behaviour: Y"."""
    metrics: tuple[Metric, ...]
    halted_by: tuple[str, ...] = ()
    reason: str

    def table(self) -> list[dict[str, str]]:
        """Rows for a table artifact / the rollout record / `rollout show`."""
        return [{"metric": m.name + (" (critical)" if m.critical else ""), "canary": m.canary,
                 "control": m.control, "test": m.test,
                 "p / divergence": "" if m.statistic is None else f"{m.statistic:.3g}",
                 "threshold": m.threshold, "result": m.result} for m in self.metrics]


def cannot_judge(gate: CanaryGate, why: str) -> Verdict:
    """The failed verdict of a judge that could not judge (its one row says why)."""
    row = Metric(name="judge", critical=True, canary="-", control="-", test="input checks", statistic=None,
                 threshold="judgeable input", result="fail", detail=why)
    return Verdict(result="fail", score=None, pass_score=gate.pass_score, control="-", metrics=(row,),
                   halted_by=("judge",), reason=f"the canary judge cannot judge: {why}")


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
