"""What one simulated device does, pure: which version it follows after a pointer read, and what its model
reports over a telemetry window. No I/O here; `edgefleet.local.simfleet.runner` carries it out.

The pointer decision is the agent's own: `edgefleet.device.trust.pointers.assess_pointer` (signature, counter,
expiry, floor, the side of a staged rollout by `edgefleet.device.staged`), then
`edgefleet.device.pull_plan.next_step`, then `edgefleet.device.trust.pointers.accepted` for the channel record.
A simulated device does not download or verify model files (it is light): taking a version is the decision
the agent would carry out.

The model's behaviour is drawn per window from the device's own traits (its scene's class mix, its host's
speed, its usual score and error ratio: `bench.fleet_model.Device` has these) changed by the profile of the
version it runs (good, slow, erroring, collapsed scores).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

import numpy as np

from edgefleet.device.pull_plan import Installed, StoreState, next_step
from edgefleet.device.telemetry.builder import InferenceRecord
from edgefleet.device.trust.pointers import ChannelRecord, accepted, assess_pointer, version_identity
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.telemetry import ModelRef, ResultItem
from edgefleet.kernel.trust.release_keyring import Keyring

BASE_LATENCY_MS = 8.0
"""A small classifier's latency on an average host (each host scales it by its own speed)."""
FRAME_LATENCY_SIGMA = 0.2
"""Log-normal spread of one frame's latency around the window's."""
SCORE_SPREAD = 0.08
"""Spread of one frame's top-1 score around the window's."""
MAX_SCORE = 0.999
RESULTS_PER_FRAME = 1


@dataclass(frozen=True)
class Profile:
    """How a version's model behaves on every device, relative to the device's usual behaviour."""

    name: str
    latency_factor: float = 1.0
    extra_errors: float = 0.0
    score_drop: float = 0.0
    collapse: float = 0.0
    """Share of frames whose top-1 class collapses to class 0."""


PROFILES = {
    "good": Profile("good"),
    "slow": Profile("slow", latency_factor=3.0),
    "erroring": Profile("erroring", extra_errors=0.2),
    "collapsed": Profile("collapsed", score_drop=0.4, collapse=0.9),
}


class Traits(Protocol):
    """A device's own behaviour (`bench.fleet_model.Device` fits): class mix, host speed, score, errors."""

    mix: np.ndarray
    latency_scale: float
    score: float
    error_ratio: float


@dataclass(frozen=True)
class DeviceState:
    """What a simulated device runs and remembers of its channel (its store, in memory)."""

    version: str
    manifest_sha256: str
    record: ChannelRecord
    installed: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class PollOutcome:
    state: DeviceState
    action: str
    """next_step's action ('keep', 'activate', 'download', ...) or 'refused' when the pointer was refused."""

    @property
    def changed(self) -> bool:
        return self.action in ("activate", "download")


def first_state(version: str, manifest_sha256: str) -> DeviceState:
    """A device installed on `version` (as deploy-agent leaves it), before its first poll."""
    return DeviceState(version, manifest_sha256, ChannelRecord(highest_version=version),
                       frozenset({(version, manifest_sha256)}))


def decide_poll(key: Keyring, pointer: ChannelPointer, state: DeviceState, *, device_id: str, now: datetime,
                source: str) -> PollOutcome:
    """What the agent's `pull_channel_once` decides for this pointer, this device and its state."""
    judgement = assess_pointer(key, pointer, state.record, floor=None, now=now, source=source,
                               running=version_identity(state.version, state.manifest_sha256), device_id=device_id)
    if judgement.verdict != "accept" or judgement.target is None:
        return PollOutcome(state, "refused")
    target = judgement.target
    wanted = (target.version, target.manifest_sha256)
    installed = next((Installed(*item) for item in state.installed if item[0] == target.version), None)
    step = next_step(target, StoreState(current=Installed(state.version, state.manifest_sha256), installed=installed,
                                        floor=state.record.highest_version, refusal=None))
    record = accepted(state.record, pointer, target)
    if step.action in ("keep", "lower_floor"):
        return PollOutcome(replace(state, record=record), step.action)
    if step.action in ("activate", "download"):
        return PollOutcome(DeviceState(target.version, target.manifest_sha256, record, state.installed | {wanted}),
                           step.action)
    return PollOutcome(state, step.action)


def window_records(rng: np.random.Generator, traits: Traits, profile: Profile, model: ModelRef, *,
                   start: float, end: float, fps: float) -> list[InferenceRecord]:
    """The inferences of one device between `start` and `end` (epoch seconds) at `fps`, as the agent's loop
    hands them to the telemetry builder."""
    count = int(fps * max(end - start, 0.0))
    if count == 0:
        return []
    mix = (1 - profile.collapse) * traits.mix + profile.collapse * np.eye(len(traits.mix))[0]
    latency_ms = BASE_LATENCY_MS * traits.latency_scale * profile.latency_factor
    errors = rng.random(count) < min(1.0, traits.error_ratio + profile.extra_errors)
    latencies = latency_ms * rng.lognormal(0, FRAME_LATENCY_SIGMA, count)
    scores = np.clip(rng.normal(traits.score - profile.score_drop, SCORE_SPREAD, count), 0.0, MAX_SCORE)
    classes = rng.choice(len(mix), size=count, p=mix / mix.sum())
    step = (end - start) / count
    return [InferenceRecord(time=start + (i + 1) * step, model=model, latency_ms=0.0, error="simulated error")
            if errors[i] else
            InferenceRecord(time=start + (i + 1) * step, model=model, latency_ms=float(latencies[i]),
                            results=(ResultItem(id=int(classes[i]), label=f"class-{int(classes[i])}",
                                                score=float(scores[i])),))
            for i in range(count)]
