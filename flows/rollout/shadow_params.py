"""The shadow wave's parameters (issue 25): a field of the rollout's parameters (`RolloutParams.shadow`). Plain
typed data, no statistics library (the judgement is `shadow.py`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ShadowGate(BaseModel):
    """Before any device acts on the new version, the first wave's devices run it as a shadow beside their
    current model (their agents need `shadow.share` above 0) and the pairs of answers are judged, each device
    one unit: its top-1 agreement against a floor (one-sided binomial test, and the devices' p-values combined),
    the class mix of the candidate against the primary's on the same frames, the paired score deltas, the
    candidate's errors. A failed shadow wave halts the rollout before the first activation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=False, description="start the rollout with a shadow wave on the first wave's "
                                                     "devices (their agents must have shadow.share > 0)")
    min_agreement: float = Field(default=0.9, gt=0, le=1,
                                 description="top-1 agreement with the current model, per device, at least")
    max_class_divergence: float = Field(default=0.05, gt=0, le=1,
                                        description="Jensen-Shannon divergence (base 2) of the candidate's top-1 "
                                                    "class mix from the primary's on the same frames, per device")
    max_score_drop: float = Field(default=0.15, gt=0, le=1,
                                  description="median paired fall of the top-1 score (candidate minus primary), "
                                              "per device")
    max_error_ratio: float = Field(default=0.01, ge=0, lt=1, description="candidate failures / sampled frames")
    alpha: float = Field(default=0.01, gt=0, lt=0.5, description="significance level of every test")
    min_frames: int = Field(default=100, ge=10, description="pairs one device needs before it is judged")
    max_device_frames: int = Field(
        default=2000, ge=10, description="what one device's pairs contribute at most (scaled down to this): "
                                         "a device's frames share a scene, and one device never decides by volume")
    timeout_s: float = Field(default=300.0, gt=0, description="longest wait for every device's pairs")
    poll_interval_s: float = Field(default=2.0, gt=0, description="how often the devices' shadow reports are read")
