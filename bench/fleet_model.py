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


def make_fleet(rng: np.random.Generator, model: FleetModel, size: int) -> Fleet:
    base = np.full(CLASSES, 1 / CLASSES)
    devices = []
    for _ in range(size):
        mix = base if model.mix_concentration is None else rng.dirichlet(base * CLASSES * model.mix_concentration)
        devices.append(Device(mix=mix, latency_scale=float(rng.lognormal(0, model.host_sigma)) if model.host_sigma
                              else 1.0, score=float(np.clip(rng.normal(0.8, model.score_sigma), 0.3, 0.97)),
                              error_ratio=float(rng.uniform(0, 0.004))))
    return Fleet(model, devices)


def _counts(values: np.ndarray) -> dict[int, int]:
    keys, numbers = np.unique(values, return_counts=True)
    return {int(k): int(n) for k, n in zip(keys, numbers, strict=True)}


def window(rng: np.random.Generator, model: FleetModel, device: Device, n: int, load: float,
           fault: Fault | None = None) -> Sample:
    """n inferences of `device` in one window (a shared `load` factor), with `fault` if on the new version."""
    fault = fault or Fault()
    mix = device.mix if model.window_concentration is None else \
        rng.dirichlet(device.mix * CLASSES * model.window_concentration + 1e-3)
    if fault.collapse:
        mix = (1 - fault.collapse) * mix + fault.collapse * np.eye(CLASSES)[0]
    errors = int(rng.binomial(n, min(1.0, device.error_ratio + fault.extra_errors)))
    ok = n - errors
    scale = BASE_LATENCY_MS * device.latency_scale * load * fault.latency_factor \
        * (float(rng.lognormal(0, model.window_sigma)) if model.window_sigma else 1.0)
    latency = scale * rng.lognormal(0, FRAME_SIGMA, ok)
    score_mean = device.score - fault.score_drop + (rng.normal(0, model.window_score_sigma)
                                                    if model.window_score_sigma else 0.0)
    scores = np.clip(rng.normal(score_mean, SCORE_SPREAD, ok), 0, 0.999)
    classes = rng.choice(CLASSES, size=ok, p=mix / mix.sum())
    latency_buckets = np.array([d.latency_bucket(v) for v in latency])
    return Sample(inferences=n, errors=errors,
                  dist=d.build(latency=_counts(latency_buckets), score=_counts((scores * d.SCORE_BUCKETS).astype(int)),
                               classes=_counts(classes)))


def evidence(rng: np.random.Generator, fleet: Fleet, canary: list[int], control: list[int], n: int,
             fault: Fault | None = None) -> WaveEvidence:
    """One wave's evidence: every device's before and after window (n inferences each)."""
    model = fleet.model
    before_load = float(rng.lognormal(0, model.fleet_sigma)) if model.fleet_sigma else 1.0
    after_load = float(rng.lognormal(0, model.fleet_sigma)) if model.fleet_sigma else 1.0

    def windows(index: int, faulty: Fault | None) -> DeviceWindows:
        device = fleet.devices[index]
        return DeviceWindows(device=f"d{index}", before=window(rng, model, device, n, before_load),
                             after=window(rng, model, device, n, after_load, faulty))
    return WaveEvidence(canary=tuple(windows(i, fault) for i in canary),
                        control=tuple(windows(i, None) for i in control),
                        control_kind="concurrent" if control else "before-activation")
