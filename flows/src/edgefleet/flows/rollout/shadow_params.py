"""The shadow wave's schedule (issue 25): a field of the rollout's parameters (`RolloutParams.shadow`, and the
pull rollout's `PullRolloutParams.shadow`). Plain typed data: whether there is a shadow wave and how long it
waits. Its thresholds are the one gate's (`params.CanaryGate`: `min_shadow_agreement`, `max_class_divergence`,
`max_score_drop`, `max_error_ratio`, `alpha`, `min_samples`, `max_device_samples`); the judgement is
`shadow.py`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ShadowWave(BaseModel):
    """Before any device acts on the new version, the first wave's devices run it as a shadow beside their
    current model (their agents need `shadow.share` above 0) and the pairs of answers are judged with the one
    gate's thresholds (the rollout's `canary` section). A failed shadow wave halts the rollout before the first
    activation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=False, description="start the rollout with a shadow wave on the first wave's "
                                                     "devices (their agents must have shadow.share > 0)")
    timeout_s: float = Field(default=300.0, gt=0, description="longest wait for every device's pairs")
    poll_interval_s: float = Field(default=2.0, gt=0, description="how often the devices' pairs are read")
    max_report_age_s: float = Field(default=30.0, gt=0, description="a device's shadow report its agent was not "
                                    "seen rewriting for longer than this (on the rollout's own clock, never the "
                                    "device's; agents rewrite it every shadow.report_interval_s, 2 s by default) "
                                    "is not judged: its agent has stopped writing it")
