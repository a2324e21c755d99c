"""One device's drift detection: its baseline from its first blocks, then its blocks one by one. Pure.

`fit_device(blocks, config, blocks_per_day)` fits the baseline (the first `baseline_blocks` blocks after the
version's activation on this device) and plans its CUSUMs; `advance(device, state, blocks)` feeds further
blocks and returns the new state and the drifts that alarmed. The caller keeps the state (and a drift as the
device's state until it re-baselines, e.g. after an operator accepts the new scene).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgefleet.kernel.contracts.distributions import Distributions
from edgefleet.monitor.drift import blocks as b
from edgefleet.monitor.drift.config import DriftConfig, DriftError, MetricName
from edgefleet.monitor.drift.detector import Cusum, Direction, MetricBaseline, fit_metric, plan, scan


@dataclass(frozen=True)
class DeviceBaseline:
    """A device's baseline on one version: its class cells and mix, and its CUSUMs."""

    classes: tuple[int, ...]
    reference_mix: tuple[float, ...]
    block_frames: int
    cusums: tuple[Cusum, ...]
    is_detector: bool

    @property
    def metrics(self) -> tuple[MetricBaseline, ...]:
        return tuple(dict.fromkeys(c.baseline for c in self.cusums))


@dataclass(frozen=True)
class DeviceState:
    """Where each CUSUM of the device stands (same order as `DeviceBaseline.cusums`)."""

    s: tuple[float, ...]
    run_length: tuple[int, ...]
    run_sum: tuple[float, ...]
    blocks: int = 0
    """Blocks fed since the baseline ended."""


class Drift(BaseModel):
    """A drift alarm: which statistic moved, which way, by how much, and when (blocks after the baseline)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: MetricName
    direction: Direction
    alarm_block: int
    """The block that crossed the threshold (0: the first block after the baseline)."""
    onset_block: int
    """The CUSUM's estimate of where the change began (the start of its run)."""
    effect_sd: float
    """Mean shift since the onset, in the baseline's SDs of the block statistic (signed)."""
    effect: float
    """The same shift in natural units (score, detections per frame, JS divergence)."""
    baseline: float
    """The baseline's mean in natural units."""
    statistic: float
    threshold: float


def fit_device(blocks: Sequence[Distributions], config: DriftConfig, blocks_per_day: float) -> DeviceBaseline:
    """The baseline of the first `config.baseline_blocks` blocks (more are ignored; fewer: `DriftError`)."""
    if len(blocks) < config.baseline_blocks:
        raise DriftError(f"drift baseline: {len(blocks)} blocks, {config.baseline_blocks} needed",
                         "wait for more blocks after the activation, or lower drift.baseline_blocks")
    used = list(blocks[: config.baseline_blocks])
    classes = b.baseline_classes(used)
    mix, score, detections = b.count_matrices(used, classes)
    is_detector = bool(detections.sum() > 0)
    reference = mix.sum(axis=0)
    stats = b.baseline_statistics(mix, score, detections if is_detector else None, config.block_frames)
    fitted = [fit_metric(m, stats[m], config) for m in config.metrics if m in stats]
    baselines = [f for f in fitted if f is not None]
    if not baselines:
        raise DriftError("drift baseline: no block statistic varies", "check the device's telemetry distributions")
    cusums = plan(baselines, config, blocks_per_day)
    return DeviceBaseline(classes, tuple(float(x) for x in reference), config.block_frames, cusums, is_detector)


def start(device: DeviceBaseline) -> DeviceState:
    zeros = tuple(0.0 for _ in device.cusums)
    return DeviceState(zeros, tuple(0 for _ in device.cusums), zeros)


def statistics(device: DeviceBaseline, blocks: Sequence[Distributions]) -> b.Stats:
    mix, score, detections = b.count_matrices(blocks, device.classes)
    return b.block_statistics(mix, score, detections if device.is_detector else None,
                              np.asarray(device.reference_mix), device.block_frames)


def _drift(cusum: Cusum, at: int, run_length: float, run_sum: float, raw: np.ndarray | None = None) -> Drift:
    """The alarm; its shift is the mean of the raw statistic since the onset when `raw` holds those blocks
    (else the CUSUM's own estimate, which the clipping caps at `clip_sd` long-run SDs: a lower bound)."""
    base = cusum.baseline
    shift = (1 if cusum.direction == "up" else -1) * run_sum / run_length * cusum.spread
    if raw is not None and np.isfinite(raw).any():
        shift = float(np.nanmean(raw)) - base.mean
    natural_mean = float(b.natural(base.metric, np.array(base.mean)))
    moved = float(b.natural(base.metric, np.array(base.mean + shift))) - natural_mean
    return Drift(metric=base.metric, direction=cusum.direction, alarm_block=at, onset_block=at - int(run_length) + 1,
                 effect_sd=shift / base.sd, effect=moved, baseline=natural_mean,
                 statistic=run_sum - cusum.k * run_length, threshold=cusum.h)


def advance(device: DeviceBaseline, state: DeviceState,
            blocks: Sequence[Distributions]) -> tuple[DeviceState, tuple[Drift, ...]]:
    """Feeds `blocks` (in order) to every CUSUM: the new state and the drifts that alarmed, in block order."""
    if not blocks:
        return state, ()
    stats = statistics(device, blocks)
    s, lengths, sums, drifts = list(state.s), list(state.run_length), list(state.run_sum), []
    for index, cusum in enumerate(device.cusums):
        z = cusum.standardized(stats[cusum.baseline.metric])
        for offset, value in enumerate(z):
            step = scan(np.array([value]), cusum.k, cusum.h, np.array([s[index]]), np.array([lengths[index]]),
                        np.array([sums[index]]))
            if step.alarms[0]:
                onset = offset - int(step.first_run_length[0]) + 1
                raw = stats[cusum.baseline.metric][onset:offset + 1] if onset >= 0 else None
                drifts.append(_drift(cusum, state.blocks + offset, float(step.first_run_length[0]),
                                     float(step.first_run_sum[0]), raw))
            s[index], lengths[index], sums[index] = (float(step.s[0]), int(step.run_length[0]),
                                                     float(step.run_sum[0]))
    drifts.sort(key=lambda d: d.alarm_block)
    return DeviceState(tuple(s), tuple(lengths), tuple(sums), state.blocks + len(blocks)), tuple(drifts)


def blocks_per_day(frames_per_second: float, block_frames: int) -> float:
    """The block rate of a device running `frames_per_second` (its baseline's frames over its duration)."""
    if not (math.isfinite(frames_per_second) and frames_per_second > 0):
        raise DriftError(f"drift: frame rate {frames_per_second}", "measure the rate over the baseline's windows")
    return frames_per_second * 86_400 / block_frames


def baseline_to_dict(device: DeviceBaseline) -> dict:
    """The baseline as plain JSON-ready data (the monitor keeps it in its store)."""
    return asdict(device)


def baseline_from_dict(data: dict) -> DeviceBaseline:
    """The inverse of `baseline_to_dict`."""
    cusums = tuple(Cusum(baseline=metric_from_dict(c["baseline"]), direction=c["direction"], spread=c["spread"],
                         k=c["k"], h=c["h"]) for c in data["cusums"])
    return DeviceBaseline(classes=tuple(data["classes"]), reference_mix=tuple(data["reference_mix"]),
                          block_frames=int(data["block_frames"]), cusums=cusums, is_detector=bool(data["is_detector"]))


def metric_from_dict(data: dict) -> MetricBaseline:
    """A `MetricBaseline` from its `asdict` form (the sequences back to tuples; a baseline stored before the
    bootstrap's tail scales has none: the integrated threshold's plan)."""
    sequences = ("ranked_on", "tail_scales", "tail_log_ses", "tail_blocks")
    return MetricBaseline(**{**data, **{key: tuple(data.get(key, ())) for key in sequences}})


def state_to_dict(state: DeviceState) -> dict:
    return asdict(state)


def state_from_dict(data: dict) -> DeviceState:
    return DeviceState(s=tuple(data["s"]), run_length=tuple(data["run_length"]), run_sum=tuple(data["run_sum"]),
                       blocks=int(data["blocks"]))
