"""The parameters of a rollout and of the scheduled promotion: pydantic models the Prefect UI renders as
forms and `edgefleet rollout run --config rollout.yaml` reads from YAML. Every default lives here.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgefleet.flows.rollout.shadow_params import ShadowWave
from edgefleet.flows.trust.signing_params import SigningParams
from edgefleet.kernel.configfile import load
from edgefleet.kernel.contracts.names import ChannelName, ModelName, ModelVersion, SafeName

MetricName = Literal["latency", "errors", "swap_failures", "class_mix_control", "class_mix_reference",
                     "score_control", "score_reference", "detections_control", "detections_reference", "judge"]
WaveSize = int | str
DEFAULT_WAVES: tuple[WaveSize, ...] = (1, "10%", "50%", "100%")
DEFAULT_WORK_DIR = "~/.edgefleet/rollouts"
MISSING_PUBLIC_KEY = (
    "public_key is missing: a rollout verifies the channel pointer and the version against the release public key "
    "before it sends anything; set public_key to the release public key file (e.g. "
    "~/.edgefleet/keys/release-signing.key.pub for the development key, or the release.pub the devices hold)"
)


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Target(_Config):
    """Which devices: those named in `ids` plus those carrying any of `tags`; everything when both are empty."""

    ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


class HealthGate(_Config):
    """How the rollout waits for each device to come up on the new version (until `timeout_s`): it runs it and
    infers, and did not refuse or roll it back. Its thresholds (`min_live_inferences`, `max_swap_failures`) are
    the one gate's (`CanaryGate`, the rollout's `canary` section): whether the version is worse than the old
    one is the canary judge's call, per wave, with the same thresholds."""

    timeout_s: float = Field(default=120.0, gt=0, description="longest wait for the device to come up")
    poll_interval_s: float = Field(default=1.0, gt=0)
    status_max_age_s: float = Field(default=15.0, gt=0,
                                    description="agent status older than this means the agent is not alive")
    source: Literal["auto", "monitor", "agent"] = Field(
        default="auto", description="auto: the fleet monitor for devices it knows, the agent's own status "
                                    "(over SSH) for the others; monitor / agent: only that source")


class CanaryGate(_Config):
    """The one gate (issue 21): every threshold of a device's liveness check, of the canary judge's verdict
    per wave, of the shadow wave's verdict (issue 25: the candidate's pairs against the current model on the
    same frames, `shadow.py`) and of the promotion (`promote-canary` judges with it too). The rollout's `canary`
    section, the pull rollout's `canary` and the promotion's `judge` are this model; every default is here.
    The shadow judge reads the per-device thresholds of the canary judge (`alpha`, `min_samples` pairs,
    `max_device_samples`, `max_class_divergence`, `max_score_drop`, `max_error_ratio`) and its own
    `min_shadow_agreement`."""

    min_live_inferences: int = Field(
        default=5, ge=1, description="liveness: successful inferences a device runs on the new version before "
                                     "it counts as up (was health.min_inferences)")
    min_promotion_inferences: int = Field(
        default=100, ge=1, description="promotion: inferences of the canary devices together over healthy_for_s "
                                       "(was the promotion's min_inferences)")

    alpha: float = Field(default=0.01, gt=0, lt=0.5, description="significance level of every test")
    min_samples: int = Field(default=100, ge=10,
                             description="inferences one device's window needs before it counts in a metric")
    max_device_samples: int = Field(
        default=2000, ge=10, description="what one device's window contributes at most (its counts are scaled "
                                         "down to this): one device never decides by volume")
    min_control_devices: int = Field(
        default=3, ge=2, description="control devices with both windows needed to compare the canary devices' "
                                     "change with theirs; fewer: each canary device against its own before")
    max_control_devices: int = Field(default=30, ge=2, description="control devices read per look, at most")
    min_reference_samples: int = Field(default=30, ge=1,
                                       description="held-out images the release's reference needs to be used")
    max_latency_increase_ratio: float = Field(default=1.5, gt=1,
                                              description="canary median latency / control median, at most")
    min_latency_increase_ms: float = Field(default=0.1, ge=0,
                                           description="a latency regression must also add this much to the median")
    max_error_ratio: float = Field(default=0.01, ge=0, le=0.5,
                                   description="inference errors / inferences allowed above the control's ratio")
    error_detectable_increase: float = Field(
        default=0.01, gt=0, le=0.5, description="the sequential error test's alternative: this much above the "
                                                "allowed ratio (smaller: more inferences to decide)")
    min_error_samples: int = Field(default=300, ge=10,
                                   description="canary inferences before the error test may pass (it may fail "
                                               "earlier)")
    error_beta: float = Field(default=0.05, gt=0, lt=0.5,
                              description="the sequential error test's miss rate at the alternative")
    max_swap_failures: int = Field(default=0, ge=0, description="swap_failed + rollback events of the new version "
                                                                "(a device's liveness and the judge alike)")
    max_class_divergence: float = Field(default=0.05, gt=0, le=1,
                                        description="Jensen-Shannon divergence (base 2) of the top-1 class mix, "
                                                    "a device's after against its own before (median device)")
    max_score_drop: float = Field(default=0.15, gt=0, le=1,
                                  description="fall of the median top-1 score against the device's own before "
                                              "(a confidence collapse: wrong normalization, a miscompiled model)")
    max_reference_score_drop: float = Field(
        default=0.25, gt=0, le=1, description="how much further below the release's held-out reference the new "
                                              "version's median score falls than the old one's, same devices")
    max_reference_divergence: float = Field(
        default=0.25, gt=0, le=1, description="how much further from the release's reference class mix the new "
                                              "version moves than the old one did, same devices (JS)")
    pass_score: float = Field(default=0.75, gt=0, le=1, description="metrics passing / metrics judged, at least")
    critical: tuple[MetricName, ...] = Field(
        default=("latency", "errors", "swap_failures", "score_control", "class_mix_control"),
        description="metrics that fail the verdict alone")
    min_shadow_agreement: float = Field(
        default=0.9, gt=0, le=1, description="shadow wave: top-1 agreement of the candidate with the current "
                                             "model on the same frames, per device, at least")
    timeout_s: float = Field(default=180.0, gt=0, description="longest wait for enough data after activation")
    control_lookback_s: float = Field(default=600.0, gt=0,
                                      description="before-activation windows: this long before the activation")


class LivenessCheck(HealthGate):
    """What a device's liveness check reads: the wait (`HealthGate`) and the one gate's thresholds for it
    (`RolloutParams.liveness`); not a section of the parameters."""

    min_live_inferences: int = Field(default=5, ge=1)
    max_swap_failures: int = Field(default=0, ge=0)


DEPRECATED_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("health", "min_inferences"): ("canary", "min_live_inferences"),
    ("health", "max_swap_failures"): ("canary", "max_swap_failures"),
    ("", "min_inferences"): ("judge", "min_promotion_inferences"),
}
"""Keys of earlier parameters -> their place in the one gate: (section, key), "" for the top level."""


def translate_deprecated(data: object, sections: tuple[str, ...]) -> object:
    """Parameters written before the one gate (issue 21), read with a `FutureWarning` naming the new key:
    each deprecated key of `sections` moved to its place in the gate. The same key given both ways with
    different values is refused (which one was meant is not known)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for (section, key), (target, new_key) in DEPRECATED_KEYS.items():
        if section not in sections:
            continue
        source = out if not section else out.get(section)
        if not isinstance(source, dict) or key not in source:
            continue
        old_name, new_name = f"{section + '.' if section else ''}{key}", f"{target}.{new_key}"
        source = dict(source)
        value = source.pop(key)
        if section:
            out[section] = source
        else:
            out.pop(key)
        gate = out.get(target)
        gate = dict(gate) if isinstance(gate, dict) else (gate.model_dump() if isinstance(gate, BaseModel) else {})
        if new_key in gate and gate[new_key] != value:
            raise ValueError(f"{old_name} ({value}) and {new_name} ({gate[new_key]}) are both given: "
                             f"{old_name} is deprecated, keep only {new_name}")
        gate[new_key] = value
        out[target] = gate
        warnings.warn(f"parameter {old_name} is deprecated: read as {new_name} (one gate for liveness, the "
                      f"canary judge and promotion); write {new_name} instead", FutureWarning, stacklevel=2)
    return out


def _check_wave(value: WaveSize) -> WaveSize:
    if isinstance(value, bool):
        raise ValueError("a wave is a device count (e.g. 1) or a percentage (e.g. '10%')")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"wave size {value} must be at least 1")
        return value
    text = str(value).strip()
    if not text.endswith("%"):
        raise ValueError(f"wave size {value!r} must be a device count (e.g. 1) or a percentage (e.g. '10%')")
    try:
        percent = float(text[:-1])
    except ValueError:
        raise ValueError(f"wave size {value!r} is not a percentage") from None
    if not 0 < percent <= 100:
        raise ValueError(f"wave size {value!r} must be above 0% and at most 100%")
    return text


class WaveSelection(_Config):
    """Which devices go first. Random by default (seeded, the seed kept in the rollout record so a re-run
    plans the same waves): inventory order would put the same cameras first in every rollout."""

    order: Literal["random", "inventory"] = "random"
    seed: int | None = Field(default=None, description="the shuffle's seed; default: drawn on the first run and "
                                                       "recorded")
    first_wave_min: int = Field(default=3, ge=1, description="devices in the first wave at least, where the fleet "
                                                             "still keeps enough control devices outside it")
    holdback: int = Field(default=0, ge=0, description="devices kept on the old version until the last wave: "
                                                       "every earlier wave has them as concurrent controls")


class RolloutParams(_Config):
    """One rollout: which version goes to which devices, in which waves, gated how."""

    inventory: str = Field(description="fleet.yaml (devices, known_hosts)")
    registry: str = Field(description="gs://BUCKET[/PREFIX] or a registry directory")
    model: ModelName
    version: ModelVersion | None = Field(default=None,
                                         description="the version to roll out; default: what `channel` names")
    channel: ChannelName | None = Field(
        default=None, description="with `version`: moved to it when the last wave passes; without: the channel "
                                  "whose version is rolled out")
    target: Target = Target()
    waves: tuple[WaveSize, ...] = Field(default=DEFAULT_WAVES, min_length=1,
                                        description="cumulative sizes: 1 device, then up to 10% of the target...")
    wave_selection: WaveSelection = WaveSelection()
    max_parallel: int = Field(default=8, ge=1, le=256, description="devices worked on at once")
    health: HealthGate = HealthGate()
    canary: CanaryGate = CanaryGate()
    shadow: ShadowWave = Field(default=ShadowWave(), description="a shadow wave on the first wave's devices before "
                               "any device activates the version (issue 25; off by default), judged with the "
                               "`canary` gate's thresholds")
    failure_threshold: float = Field(default=0.0, ge=0, lt=1,
                                     description="share of a wave whose devices may fail hard (unreachable, "
                                                 "refused, crashed) without halting the rollout")
    rollback_policy: Literal["failed", "all"] = Field(
        default="failed", description="on halt, roll back the failed devices, or everything this rollout changed")
    approve_after_canary: bool = Field(default=False, description="pause for a person after the first wave")
    approval_timeout_s: int = Field(default=3600, ge=1)
    rollout_id: SafeName | None = Field(default=None, description="default <model>-<version>; re-running resumes it")
    monitor_config: str | None = Field(default=None, description="the fleet monitor's YAML (its SQLite state)")
    public_key: str = Field(description="the release public key (release.pub) or keyring directory (<key id>.pub "
                                        "files, while a key is rotated): the channel pointer and the version "
                                        "are verified against it before anything is sent (required)")
    work_dir: str = Field(default=DEFAULT_WORK_DIR, description="downloaded versions are kept here")
    disk_headroom: float = Field(default=2.0, ge=1,
                                 description="free space needed on a device: version size times this")
    signing: SigningParams = Field(default=SigningParams(),
                                   description="the release key that signs the channel pointer when it is moved")

    @model_validator(mode="before")
    @classmethod
    def _public_key_given(cls, data: object) -> object:
        # before the field check, so a missing key gets this message rather than "Field required"
        if isinstance(data, dict) and not data.get("public_key"):
            raise ValueError(MISSING_PUBLIC_KEY)
        return translate_deprecated(data, ("health",))

    @property
    def liveness(self) -> LivenessCheck:
        """The per-device liveness check: `health`'s wait with the one gate's thresholds."""
        return LivenessCheck(**self.health.model_dump(), min_live_inferences=self.canary.min_live_inferences,
                             max_swap_failures=self.canary.max_swap_failures)

    @field_validator("public_key")
    @classmethod
    def _expand_public_key(cls, value: str) -> str:
        return str(Path(os.path.expandvars(value)).expanduser())

    @field_validator("waves", mode="before")
    @classmethod
    def _waves(cls, value: object) -> object:
        # before pydantic's coercion, which would turn True into 1
        if isinstance(value, (list, tuple)):
            return tuple(_check_wave(item) for item in value)
        return value

    @model_validator(mode="after")
    def _version_or_channel(self) -> RolloutParams:
        if self.version is None and self.channel is None:
            raise ValueError("give a version to roll out, or a channel whose version is rolled out")
        return self


class PromotionParams(_Config):
    """The scheduled promotion: `from_channel` -> `to_channel` when the canary devices were healthy long enough."""

    inventory: str
    registry: str
    model: ModelName
    monitor_config: str = Field(description="the fleet monitor's YAML: health comes from the monitor")
    from_channel: ChannelName = "canary"
    to_channel: ChannelName = "stable"
    canary: Target = Target(tags=("canary",))
    healthy_for_s: float = Field(default=3600.0, gt=0, description="canary devices ran the version this long")
    judge: CanaryGate = Field(default=CanaryGate(), description="the one gate, as in a rollout: the canary "
                                                                 "devices against the stable devices (errors and "
                                                                 "swap failures included), at least "
                                                                 "min_promotion_inferences over healthy_for_s")
    stale_after_s: float = Field(default=120.0, gt=0, description="a device silent this long blocks promotion")
    signing: SigningParams = Field(default=SigningParams(), description="the release key that signs the pointer")

    @model_validator(mode="before")
    @classmethod
    def _deprecated_keys(cls, data: object) -> object:
        return translate_deprecated(data, ("",))


def load_yaml_params(model: type[_Config], path: str | os.PathLike[str], **overrides: object) -> _Config:
    """Reads parameters of `model` from a YAML file; relative `inventory`/`registry`/... stay as written.

    Raises:
        ConfigError: missing file, bad YAML, or wrong keys (named).
    """
    return load(model, Path(path), what="parameters file", overrides=overrides,
                missing_fix="pass the path of your YAML with --config")
