"""The canary verdict's types: what each side did (`Sample`), one metric's row, the wave's verdict.

Plain typed data (no statistics library), so the rollout record and `rollout show` read it without SciPy;
the judgement itself is `canary.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.flows.rollout.params import MetricName
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
