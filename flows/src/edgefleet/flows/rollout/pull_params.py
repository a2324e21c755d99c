"""The parameters of a pull rollout: a staged rollout of a channel to pull-mode devices (no SSH), wave by wave.

Two schedules, as the device-management systems people know them:
- `shares`: the cumulative share of the fleet after each wave (hawkBit's groups by percentage), e.g.
  `["1%", "10%", "50%", "100%"]`;
- `exponential`: AWS IoT Jobs' `exponentialRate` (`baseRatePerMinute`, `incrementFactor`,
  `rateIncreaseCriteria`) capped by `maximumPerMinute`: each wave (one minute at least) moves `rate` more
  devices; the rate is multiplied by `increment_factor` after a wave that met the criteria.
Every default lives here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgefleet.device.window import MaintenanceWindow
from edgefleet.flows.rollout.params import CanaryGate
from edgefleet.flows.rollout.shadow_params import ShadowWave
from edgefleet.flows.trust.signing_params import SigningParams
from edgefleet.kernel.contracts.names import ChannelName, ModelName, ModelVersion, SafeName

DEFAULT_SHARES = ("1%", "10%", "50%", "100%")
SECONDS_PER_MINUTE = 60.0
STRAGGLERS_MAX_WAIT_S = 6 * 3600.0
"""How long the straggler watch waits at most (6 h). The pull-rollout deployment runs one rollout at a time
(`concurrency_limit: 1`, prefect.yaml): a watch waiting for a night (or weekly) window would hold every other pull
rollout for up to a day (a week). 6 h covers a rollout started in the evening whose stragglers have a night window
(e.g. 02:00-04:00 plus the report timeout) and is the longest a queued rollout waits; stragglers whose time in their
window is not over by then are left unwatched (`pull_stragglers.unwatched`) and a re-run of the same rollout judges
them."""


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _percent(value: object) -> str:
    text = str(value).strip()
    try:
        percent = float(text.rstrip("%"))
    except ValueError:
        raise ValueError(f"share {value!r} is not a percentage (e.g. '10%')") from None
    if not text.endswith("%") or not 0 < percent <= 100:  # noqa: PLR2004 - percent bounds
        raise ValueError(f"share {value!r} must be a percentage above 0% and at most 100%, e.g. '10%'")
    return text


class ShareSchedule(_Config):
    """Waves by cumulative share of the fleet (increasing, the last one 100%)."""

    kind: Literal["shares"] = "shares"
    shares: tuple[str, ...] = Field(default=DEFAULT_SHARES, min_length=1,
                                    description="cumulative share after each wave, e.g. ['1%', '10%', '100%']")

    @field_validator("shares", mode="before")
    @classmethod
    def _shares(cls, value: object) -> object:
        if isinstance(value, (list, tuple)):
            return tuple(_percent(item) for item in value)
        return value

    @model_validator(mode="after")
    def _increasing_to_all(self) -> ShareSchedule:
        numbers = [float(share.rstrip("%")) for share in self.shares]
        if numbers != sorted(set(numbers)) or numbers[-1] != 100:  # noqa: PLR2004 - the whole fleet
            raise ValueError(f"shares {list(self.shares)} must increase and end at '100%'")
        return self


class RateIncreaseCriteria(_Config):
    """When the rate grows (AWS IoT Jobs' `rateIncreaseCriteria`, judged per wave): the wave notified (moved)
    or succeeded on (reported the new version) at least this many devices. Neither set: after every passed wave."""

    number_of_notified_things: int | None = Field(default=None, ge=1)
    number_of_succeeded_things: int | None = Field(default=None, ge=1)


class ExponentialRate(_Config):
    """AWS IoT Jobs' exponential rollout rate, in devices per wave of at least `minute_s` seconds."""

    kind: Literal["exponential"] = "exponential"
    base_rate_per_minute: int = Field(default=1, ge=1, description="devices moved in the first wave")
    increment_factor: float = Field(default=2.0, gt=1, le=5, description="rate multiplier after a wave that met "
                                                                          "the criteria (AWS allows 1.1..5)")
    rate_increase_criteria: RateIncreaseCriteria = RateIncreaseCriteria()
    maximum_per_minute: int = Field(default=1000, ge=1, description="the cap on the rate (AWS maximumPerMinute)")
    minute_s: float = Field(default=SECONDS_PER_MINUTE, gt=0, description="a wave lasts at least this long")


class GroupWindow(_Config):
    """A device group's maintenance window, as its agents have it (`registry.window` of the group's agent.yaml):
    the rollout reads it to tell a device waiting for its window from a silent one (`pull_windows.py`). The
    group: the devices named in `ids` plus those carrying any of `tags` in the fleet monitor (`edgefleet fleet
    tag`); every device when both are empty."""

    ids: tuple[str, ...] = Field(default=(), description="device ids of the group")
    tags: tuple[str, ...] = Field(default=(), description="monitor tags of the group's devices (any of them)")
    window: MaintenanceWindow = Field(description="the group's window: cron, timezone, duration_minutes")


Schedule = Annotated[ShareSchedule | ExponentialRate, Field(discriminator="kind")]


class PullRolloutParams(_Config):
    """One staged rollout of a channel to the pull-mode devices that follow it."""

    registry: str = Field(description="gs://BUCKET[/PREFIX] or a registry directory")
    model: ModelName
    version: ModelVersion = Field(description="the version to roll out (published and signed)")
    channel: ChannelName = Field(default="stable", description="the channel the devices follow")
    rollout_id: SafeName | None = Field(default=None, description="default <model>-<version>; re-running resumes it")
    schedule: Schedule = Field(default=ShareSchedule(), description="shares, or an exponential rate")
    first_wave_min: int = Field(default=3, ge=1, description="devices in the first wave at least (its share is "
                                "raised until the hash includes this many); as the SSH rollout's: one device never "
                                "decides a wave")
    monitor_config: str = Field(description="the fleet monitor's YAML: pull-mode devices are seen only there")
    canary: CanaryGate = CanaryGate()
    shadow: ShadowWave = Field(default=ShadowWave(), description="a shadow wave on the first wave's devices before "
                               "any device activates the version (issue 25; off by default; their agents need "
                               "shadow.share > 0), judged with the `canary` gate's thresholds")
    report_timeout_s: float = Field(default=600.0, gt=0, description="how long a wave waits for each device to "
                                    "report the new version (or refuse it), counted inside the device's "
                                    "maintenance window (`windows`)")
    windows: tuple[GroupWindow, ...] = Field(
        default=(), description="the device groups' maintenance windows (the first group a device is in gives its "
        "window; a device in none has none: any time). A wave's devices whose window has not opened are waiting "
        "for it, not silent; the wave is judged once `first_wave_min` of its devices reported and no device in its "
        "window is still due")
    watch_stragglers: bool = Field(
        default=True, description="after the last wave, watch and judge (as a wave) the devices still waiting for "
        "their maintenance window, until each had report_timeout_s inside its window: the rollout completes only "
        "then (a night window keeps the flow running until it closed). false: it completes at the last wave and "
        "they take the version unwatched; re-running the rollout with true watches and judges them then")
    stragglers_max_wait_s: float = Field(
        default=STRAGGLERS_MAX_WAIT_S, gt=0, description="the straggler watch waits at most this long (the deployment "
        "runs one pull rollout at a time: a watch for a night or weekly window would hold the others); stragglers "
        "whose time in their window is not over by then stay pending, unwatched, and the rollout completes with a "
        "warning naming them: re-run the same rollout_id to judge them")
    poll_interval_s: float = Field(default=5.0, gt=0, description="how often the monitor's state is read")
    failure_threshold: float = Field(default=0.0, ge=0, lt=1, description="share of a wave's devices that may "
                                                                          "refuse the version without a halt")
    stale_after_s: float = Field(default=300.0, gt=0, description="a device silent this long is not in the fleet")
    public_key: str = Field(description="the release public key: the version is verified before it is staged")
    signing: SigningParams = Field(default=SigningParams(), description="the release key that signs each share")
