"""Simulated heterogeneous fleets for the canary judge (issue 21): each camera its own scene, each host its
own speed, and windows that drift (300 frames of one device are far from 300 independent observations).

A fleet model draws, per device: a class mix from a Dirichlet around a base mix (`mix_concentration`;
None: every device the same), a latency scale per host (log-normal, `host_sigma`), a median top-1 score
(`score_sigma`) and an error ratio. Each window of a device then drifts: its own class mix from a Dirichlet
around the device's (`window_concentration`), a latency factor (`window_sigma`), shared load across the fleet
(`fleet_sigma`) and a score shift. Frames are drawn inside the window. Pure numpy, seeded by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgefleet.flows.rollout.verdict import DeviceWindows, Sample, WaveEvidence
from edgefleet.kernel.contracts import distributions as d
from edgefleet.kernel.contracts.telemetry import MAX_RELEASE_CLASSES

CLASSES = 10
BASE_LATENCY_MS = 8.0
FRAME_SIGMA = 0.2
SCORE_SPREAD = 0.08


@dataclass(frozen=True)
class FleetModel:
    name: str
    mix_concentration: float | None
    host_sigma: float
    score_sigma: float
    window_concentration: float | None
    window_sigma: float
    fleet_sigma: float
    window_score_sigma: float


MODELS = {
    "identical": FleetModel("identical", None, 0.0, 0.0, None, 0.0, 0.0, 0.0),
    "modest": FleetModel("modest", 20.0, 0.1, 0.03, 300.0, 0.03, 0.02, 0.01),
    "camera": FleetModel("camera", 1.0, 0.3, 0.08, 30.0, 0.08, 0.05, 0.03),
}


@dataclass(frozen=True)
class Fault:
    """What the new version does differently on a canary device."""

    latency_factor: float = 1.0
    extra_errors: float = 0.0
    score_drop: float = 0.0
    collapse: float = 0.0
    """Share of frames whose top-1 class collapses to class 0."""


@dataclass
class Device:
    mix: np.ndarray
    latency_scale: float
    score: float
    error_ratio: float


@dataclass
class Fleet:
    model: FleetModel
    devices: list[Device] = field(default_factory=list)
    top_k: int = MAX_RELEASE_CLASSES
    """Classes one window lists: every one (telemetry 3), or `CLASS_TOP_K` and the rest in other (schema 2)."""


def make_fleet(rng: np.random.Generator, model: FleetModel, size: int, classes: int = CLASSES,
               top_k: int = MAX_RELEASE_CLASSES) -> Fleet:
    base = np.full(classes, 1 / classes)
    devices = []
    for _ in range(size):
        mix = base if model.mix_concentration is None else rng.dirichlet(base * classes * model.mix_concentration)
        devices.append(Device(mix=mix, latency_scale=float(rng.lognormal(0, model.host_sigma)) if model.host_sigma
                              else 1.0, score=float(np.clip(rng.normal(0.8, model.score_sigma), 0.3, 0.97)),
                              error_ratio=float(rng.uniform(0, 0.004))))
    return Fleet(model, devices, top_k)


def _counts(values: np.ndarray) -> dict[int, int]:
    keys, numbers = np.unique(values, return_counts=True)
    return {int(k): int(n) for k, n in zip(keys, numbers, strict=True)}


@dataclass(frozen=True)
class WindowState:
    """What holds over one window of one device: its scene's class mix, its speed, its scores, its errors."""

    mix: np.ndarray
    latency_ms: float
    score: float
    error_ratio: float


def window_state(rng: np.random.Generator, model: FleetModel, device: Device, load: float,
                 fault: Fault | None = None) -> WindowState:
    fault = fault or Fault()
    classes = len(device.mix)
    mix = device.mix if model.window_concentration is None else \
        rng.dirichlet(device.mix * classes * model.window_concentration + 1e-3)
    if fault.collapse:
        mix = (1 - fault.collapse) * mix + fault.collapse * np.eye(classes)[0]
    drift = float(rng.lognormal(0, model.window_sigma)) if model.window_sigma else 1.0
    shift = float(rng.normal(0, model.window_score_sigma)) if model.window_score_sigma else 0.0
    return WindowState(mix=mix / mix.sum(),
                       latency_ms=BASE_LATENCY_MS * device.latency_scale * load * fault.latency_factor * drift,
                       score=device.score - fault.score_drop + shift,
                       error_ratio=min(1.0, device.error_ratio + fault.extra_errors))


def frames(rng: np.random.Generator, state: WindowState, n: int, top_k: int = MAX_RELEASE_CLASSES) -> Sample:
    """n inferences drawn inside one window, its classes cut to `top_k` as the agent sends them."""
    errors = int(rng.binomial(n, state.error_ratio))
    ok = n - errors
    latency = state.latency_ms * rng.lognormal(0, FRAME_SIGMA, ok)
    scores = np.clip(rng.normal(state.score, SCORE_SPREAD, ok), 0, 0.999)
    classes = rng.choice(len(state.mix), size=ok, p=state.mix)
    buckets = np.array([d.latency_bucket(float(v)) for v in latency], dtype=int)
    return Sample(inferences=n, errors=errors,
                  dist=d.build(latency=_counts(buckets), score=_counts((scores * d.SCORE_BUCKETS).astype(int)),
                               classes=_counts(classes), top_k=top_k))


def added(a: Sample | None, b: Sample) -> Sample:
    """Two samples of one window, summed (a look later) as the monitor sums them: every listed class kept."""
    if a is None:
        return b
    return Sample(inferences=a.inferences + b.inferences, errors=a.errors + b.errors,
                  dist=d.merge([a.dist, b.dist], top_k=d.MAX_CLASS_ID))


def looks(rng: np.random.Generator, fleet: Fleet, canary: list[int], control: list[int], chunks: list[int],
          fault: Fault | None = None, before_n: int = 300):
    """The evidence of one wave at each look: every device's before window (`before_n`), and its after window
    growing by `chunks` (the judge looks after each chunk). A generator of `WaveEvidence`."""
    model = fleet.model
    loads = [float(rng.lognormal(0, model.fleet_sigma)) if model.fleet_sigma else 1.0 for _ in range(2)]
    devices = [(i, fault) for i in canary] + [(i, None) for i in control]
    before = {i: frames(rng, window_state(rng, model, fleet.devices[i], loads[0]), before_n, fleet.top_k)
              for i, _ in devices}
    states = {i: window_state(rng, model, fleet.devices[i], loads[1], f) for i, f in devices}
    after: dict[int, Sample | None] = dict.fromkeys(states)
    for chunk in chunks:
        for i in states:
            after[i] = added(after[i], frames(rng, states[i], chunk, fleet.top_k))
        yield WaveEvidence(
            canary=tuple(DeviceWindows(device=f"d{i}", before=before[i], after=after[i]) for i in canary),
            control=tuple(DeviceWindows(device=f"d{i}", before=before[i], after=after[i]) for i in control),
            control_kind="concurrent" if control else "before-activation")
