"""The agent config's `spot_check:` section (issue 25): off unless `enabled`; frames leave the device only then."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_SHARE = 0.001
"""One frame in a thousand: at 10 fps about 36 an hour, which the hourly cap then bounds."""
DEFAULT_MAX_PER_DAY = 200
"""Sampled frames a device keeps per UTC day at most (the operator's `spotcheck pending` offers as many per device
per listing by default)."""
JPEG_MAX_QUALITY = 95  # Pillow: above 95 the file grows without a visible gain


class SpotCheckConfig(BaseModel):
    """The labelled spot check: a deterministic, unbiased `share` of the frames (chosen by a hash of the device
    id, the run and the frame's sequence number, never by the model's answer), at most `max_per_hour` and
    `max_per_day` of them, saved as JPEG with the model's answer in a bounded outbox under the agent root and
    uploaded to the registry bucket under `spotcheck/<device_id>/` for labelling. Privacy: off by default; the
    frames leave the device only while `enabled` is true."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, description="opt in: send a sample of this device's frames for labelling")
    share: float = Field(default=DEFAULT_SHARE, gt=0, le=1, description="share of the frames sampled (before the "
                         "caps), e.g. 0.001: one in a thousand")
    max_per_hour: int = Field(default=20, ge=1, description="sampled frames kept per clock hour at most; the rest "
                              "of the hour's sample is left out and counted")
    max_per_day: int = Field(default=DEFAULT_MAX_PER_DAY, ge=1, description="sampled frames kept per UTC day at most")
    queue: int = Field(default=4, ge=1, description="sampled frames waiting for JPEG encoding; a sampled frame "
                       "that finds the queue full is left out and counted, never waited for")
    outbox_max_samples: int = Field(default=500, ge=1, description="samples waiting for upload on the device; "
                                    "beyond it the oldest are dropped and counted")
    outbox_max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024,
                                  description="bytes of samples waiting for upload; beyond it the oldest are dropped")
    jpeg_quality: int = Field(default=90, ge=1, le=JPEG_MAX_QUALITY)
    registry: str | None = Field(default=None, min_length=1, description="gs://bucket[/prefix] or a local "
                                    "directory to upload to; default: registry.uri (the model registry)")
    upload_interval_s: float = Field(default=10.0, gt=0, description="how often the outbox is uploaded")
    upload_batch: int = Field(default=20, ge=1, description="samples uploaded per turn at most")
    backoff_initial_s: float = Field(default=1.0, gt=0, description="first pause after a failed upload")
    backoff_max_s: float = Field(default=300.0, gt=0, description="longest pause between upload attempts")

    @model_validator(mode="after")
    def _consistent(self) -> SpotCheckConfig:
        if self.max_per_hour > self.max_per_day:
            raise ValueError(f"spot_check.max_per_hour ({self.max_per_hour}) is above spot_check.max_per_day "
                             f"({self.max_per_day}): make the daily cap at least the hourly one")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(f"spot_check.backoff_max_s ({self.backoff_max_s}) is below backoff_initial_s "
                             f"({self.backoff_initial_s}): make the maximum at least the initial backoff")
        return self
