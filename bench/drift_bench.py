"""Drift detection on simulated heterogeneous fleets with correlated blocks (issue 25, item 1): false alarms
per 100 device-days without a shift, and the detection delay (frames) of planted shifts, with 95% intervals.

Devices come from `bench/fleet_model.py` (the camera-fleet model: each device its own class mix from a
Dirichlet and its own median score). Blocks of 100 frames at `--fps` frames per second (10); the scene of a device
drifts from block to block as an AR(1) process with correlation `--phi` (0: independent blocks): its score
centre (SD `window_score_sigma`), its class mix (logistic-normal with the spread of the model's
`window_concentration` Dirichlet), and its detections per frame (log-rate, SD `DETECTION_BLOCK_SIGMA`;
devices are detectors, so all five CUSUMs run). Frames are drawn inside each block (multinomial class and
score-bucket counts, Poisson detections). Each device's baseline is its first `baseline_blocks` blocks, fitted
and planned by `edgefleet.monitor.drift` (`fit_metric`, `plan`, `scan`: the product's functions).

- False alarms: every device runs `--days` days after its baseline; alarms restart the CUSUM. Rate per 100
  device-days with Garwood's exact Poisson interval, and an interval from resampling devices (devices differ).
- Delay: after the baseline and `WARMUP_BLOCKS` quiet blocks, the shift starts at a block boundary; the delay
  is the frames from the change to the device's first alarm (any statistic), its median and mean with
  bootstrap intervals, and the share caught within 2,000 and 2,500 frames. A "1 SD" shift moves the block
  statistic by one baseline SD (its marginal SD, not the long-run one), planted in the scene (the score
  centre, the detection rate), so a device at the score ceiling (0.97: its median saturates in the top
  bucket) sees about half of it: those are the few slow or missed devices. The Siegmund column is the
  detector's own prediction for that CUSUM.

`python -m bench.drift_bench [--devices N] [--days D] [--phi P ...] [--out results.json]`. Seeded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
from scipy import special, stats
from scipy.signal import lfilter

from bench.fleet_model import CLASSES, MODELS, SCORE_SPREAD, make_fleet
from bench.report import finish
from edgefleet.kernel.contracts.distributions import SCORE_BUCKETS
from edgefleet.monitor.drift.blocks import block_statistics, held_out_divergence
from edgefleet.monitor.drift.config import DriftConfig
from edgefleet.monitor.drift.detector import Cusum, fit_metric, plan, scan
from edgefleet.monitor.drift.threshold import siegmund_arl

SEED = 20261207
FPS = 10.0
"""Frames per second of every simulated device (`--fps`): with the block size, the blocks a day holds."""
MODEL = "camera"
DETECTION_RATE = 2.0
DETECTION_DEVICE_SIGMA = 0.5
DETECTION_BLOCK_SIGMA = 0.1
MAX_SCENE_LOG_SD = 3.0
"""A class's share varies by at most this SD in log space from block to block (a Dirichlet's rarest classes
would make it unbounded)."""
MIN_SHARE = 1e-12
WARMUP_BLOCKS = 1_000
MAX_DELAY_BLOCKS = 2_000
CHUNK_BLOCKS = 2_160
"""Blocks simulated at a time (a quarter of a day at 10 fps): bounds the memory."""
BOOTSTRAP = 2_000
SHIFTS = {"score median -1 SD": ("score_median", -1.0), "score median -0.5 SD": ("score_median", -0.5),
          "score median -2 SD": ("score_median", -2.0), "detections +1 SD": ("detections", 1.0),
          "class mix: 10% of frames to one class": ("collapse", 0.1),
          "class mix: 30% of frames to one class": ("collapse", 0.3)}
SCORE_EDGES = np.concatenate([[-np.inf], np.arange(1, SCORE_BUCKETS) / SCORE_BUCKETS, [np.inf]])


@dataclass(frozen=True)
class Sim:
    """A fleet's devices as arrays (D devices)."""

    mix: np.ndarray
    mix_sd: np.ndarray
    score: np.ndarray
    detection_rate: np.ndarray
    window_score_sigma: float
    phi: float
    fps: float


@dataclass(frozen=True)
class Shift:
    score: np.ndarray | float = 0.0
    log_detections: np.ndarray | float = 0.0
    collapse: float = 0.0


def make_sim(rng: np.random.Generator, devices: int, phi: float, fps: float) -> Sim:
    model = MODELS[MODEL]
    fleet = make_fleet(rng, model, devices)
    mix = np.array([d.mix for d in fleet.devices])
    alpha = mix * CLASSES * model.window_concentration + 1e-3
    return Sim(mix=mix, mix_sd=np.minimum(np.sqrt(special.polygamma(1, alpha)), MAX_SCENE_LOG_SD),
               score=np.array([d.score for d in fleet.devices]),
               detection_rate=DETECTION_RATE * rng.lognormal(0, DETECTION_DEVICE_SIGMA, devices),
               window_score_sigma=model.window_score_sigma, phi=phi, fps=fps)


def ar1(rng: np.random.Generator, previous: np.ndarray, phi: float, blocks: int) -> np.ndarray:
    """`blocks` steps of a unit-variance AR(1) per series, continuing from `previous`."""
    noise = rng.standard_normal((blocks, *previous.shape)) * math.sqrt(1 - phi**2)
    return lfilter([1.0], [1.0, -phi], noise, axis=0, zi=(phi * previous)[None])[0]


def simulate(rng: np.random.Generator, sim: Sim, state: list[np.ndarray], blocks: int,
             shift: Shift | None = None) -> dict[str, np.ndarray]:
    """`blocks` blocks of every device: the block statistics (blocks x devices); `state` (the latent AR(1)
    scene) is advanced in place."""
    shift = shift or Shift()
    u, v, w = (ar1(rng, s, sim.phi, blocks) for s in state)
    state[:] = [u[-1], v[-1], w[-1]]
    mix = special.softmax(np.log(np.maximum(sim.mix, MIN_SHARE)) + sim.mix_sd * v, axis=-1)
    if shift.collapse:
        mix = (1 - shift.collapse) * mix + shift.collapse * np.eye(CLASSES)[0]
    centre = sim.score + sim.window_score_sigma * u + shift.score
    cdf = stats.norm.cdf((SCORE_EDGES[None, None, :] - centre[..., None]) / SCORE_SPREAD)
    frames = int(DriftConfig().block_frames)
    classes = rng.multinomial(frames, mix.reshape(-1, CLASSES))
    scores = rng.multinomial(frames, np.diff(cdf, axis=-1).reshape(-1, SCORE_BUCKETS))
    rate = sim.detection_rate * np.exp(DETECTION_BLOCK_SIGMA * w + shift.log_detections)
    detections = rng.poisson(frames * rate) / frames
    return {"classes": classes.reshape(blocks, -1, CLASSES), "score": scores, "detections": detections}


def statistics(raw: dict[str, np.ndarray], reference: np.ndarray) -> dict[str, np.ndarray]:
    blocks, devices = raw["detections"].shape
    out = block_statistics(raw["classes"], raw["score"], None, reference, DriftConfig().block_frames)
    return {"class_mix": out["class_mix"], "score_median": out["score_median"].reshape(blocks, devices),
            "detections": raw["detections"]}


@dataclass(frozen=True)
class Fleet:
    """The devices after their baselines: the CUSUMs of every device, stacked."""

    sim: Sim
    state: list[np.ndarray]
    reference: np.ndarray
    cusums: list[list[Cusum]]

    def slots(self) -> tuple[list[tuple[int, Cusum]], np.ndarray, np.ndarray]:
        flat = [(device, c) for device, own in enumerate(self.cusums) for c in own]
        return flat, np.array([c.k for _, c in flat]), np.array([c.h for _, c in flat])


def baseline_fleet(rng: np.random.Generator, devices: int, phi: float, config: DriftConfig, fps: float) -> Fleet:
    sim = make_sim(rng, devices, phi, fps)
    state = [rng.standard_normal(devices), rng.standard_normal((devices, CLASSES)), rng.standard_normal(devices)]
    raw = simulate(rng, sim, state, config.baseline_blocks)
    reference = raw["classes"].sum(axis=0).astype(float)
    stats_ = statistics(raw, reference)
    stats_["class_mix"] = held_out_divergence(raw["classes"].astype(float), config.block_frames)  # as fit_device
    per_day = fps * 86_400 / config.block_frames
    cusums = []
    for device in range(devices):
        fitted = [fit_metric(m, stats_[m][:, device], config) for m in config.metrics]
        cusums.append(list(plan([f for f in fitted if f is not None], config, per_day)))
    return Fleet(sim, state, reference, cusums)


def standardized(fleet: Fleet, stats_: dict[str, np.ndarray]) -> np.ndarray:
    flat, _, _ = fleet.slots()
    return np.stack([c.standardized(stats_[c.baseline.metric][:, device]) for device, c in flat], axis=1)


def per_device(fleet: Fleet, values: np.ndarray, combine) -> np.ndarray:  # noqa: ANN001
    flat, _, _ = fleet.slots()
    owners = np.array([device for device, _ in flat])
    return np.array([combine(values[owners == d]) for d in range(len(fleet.cusums))])


def false_alarms(rng: np.random.Generator, devices: int, days: float, phi: float, config: DriftConfig,
                 fps: float) -> dict:
    fleet = baseline_fleet(rng, devices, phi, config, fps)
    flat, k, h = fleet.slots()
    blocks = int(days * fps * 86_400 / config.block_frames)
    s, length, total = None, None, None
    alarms = np.zeros(len(flat), dtype=int)
    for start in range(0, blocks, CHUNK_BLOCKS):
        raw = simulate(rng, fleet.sim, fleet.state, min(CHUNK_BLOCKS, blocks - start))
        result = scan(standardized(fleet, statistics(raw, fleet.reference)), k, h, s, length, total)
        s, length, total, alarms = result.s, result.run_length, result.run_sum, alarms + result.alarms
    counts = per_device(fleet, alarms, np.sum)
    by_metric: dict[str, int] = {}
    for (_, c), n in zip(flat, alarms, strict=True):
        name = f"{c.baseline.metric} {c.direction}"
        by_metric[name] = by_metric.get(name, 0) + int(n)
    device_days = devices * blocks * config.block_frames / fps / 86_400
    hits = int(counts.sum())
    low = stats.chi2.ppf(0.025, 2 * hits) / 2 if hits else 0.0
    high = stats.chi2.ppf(0.975, 2 * hits + 2) / 2
    boot = rng.choice(counts, (BOOTSTRAP, len(counts))).sum(axis=1) / device_days * 100
    return {"kind": "false alarms per 100 device-days", "phi": phi, "fps": fps, "alarms": hits,
            "device_days": device_days,
            "rate": hits / device_days * 100, "low": low / device_days * 100, "high": high / device_days * 100,
            "boot_low": float(np.percentile(boot, 2.5)), "boot_high": float(np.percentile(boot, 97.5)),
            "devices_alarming": int((counts > 0).sum()), "by_metric": by_metric}


def planted(fleet: Fleet, kind: str, size: float) -> tuple[Shift, list[Cusum]]:
    """The shift of every device and the CUSUM whose prediction is shown (the shifted statistic's)."""
    if kind == "collapse":
        return Shift(collapse=size), [next(c for c in own if c.baseline.metric == "class_mix") for own in fleet.cusums]
    chosen = [next(c for c in own if c.baseline.metric == kind and c.direction == ("up" if size > 0 else "down"))
              for own in fleet.cusums]
    natural = np.array([size * c.baseline.sd for c in chosen])
    if kind == "score_median":
        return Shift(score=natural), chosen
    rates = fleet.sim.detection_rate
    return Shift(log_detections=np.log1p(natural / rates)), chosen


def delays(rng: np.random.Generator, devices: int, phi: float, config: DriftConfig, name: str, fps: float) -> dict:
    kind, size = SHIFTS[name]
    fleet = baseline_fleet(rng, devices, phi, config, fps)
    flat, k, h = fleet.slots()
    quiet = scan(standardized(fleet, statistics(simulate(rng, fleet.sim, fleet.state, WARMUP_BLOCKS),
                                                fleet.reference)), k, h)
    early = per_device(fleet, quiet.alarms, np.sum) > 0
    shift, chosen = planted(fleet, kind, size)
    moved = scan(standardized(fleet, statistics(simulate(rng, fleet.sim, fleet.state, MAX_DELAY_BLOCKS, shift),
                                                fleet.reference)), k, h, quiet.s, quiet.run_length, quiet.run_sum)
    first = np.where(moved.first_alarm >= 0, moved.first_alarm, np.iinfo(np.int64).max)
    caught = per_device(fleet, first, np.min)
    frames = np.where(caught < MAX_DELAY_BLOCKS, (caught + 1) * config.block_frames, np.inf)[~early]
    boot = rng.choice(frames, (BOOTSTRAP, len(frames)))
    finite = np.isfinite(frames).all()
    predicted = [siegmund_arl(c.h, c.k, abs(size) * c.baseline.sd_per_long_run_sd * c.baseline.long_run_sd / c.spread)
                 for c in chosen] if kind != "collapse" else []
    return {"kind": f"delay: {name}", "phi": phi, "fps": fps, "devices": int(len(frames)),
            "early_alarms": int(early.sum()),
            "median": float(np.median(frames)), "median_low": float(np.percentile(np.median(boot, 1), 2.5)),
            "median_high": float(np.percentile(np.median(boot, 1), 97.5)),
            "mean": float(frames.mean()) if finite else math.inf,
            "mean_low": float(np.percentile(boot.mean(1), 2.5)) if finite else math.inf,
            "mean_high": float(np.percentile(boot.mean(1), 97.5)) if finite else math.inf,
            "within_2000": float(np.mean(frames <= 2000)), "within_2500": float(np.mean(frames <= 2500)),
            "missed": int(np.isinf(frames).sum()),
            "siegmund_frames": float(np.median(predicted)) * config.block_frames if predicted else None}


def table(rows: list[dict]) -> str:
    lines = ["| measure | phi | fps | result | 95% interval | n | notes |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"].startswith("false"):
            lines.append(f"| {r['kind']} | {r['phi']:g} | {r['fps']:g} | {r['rate']:.2f} ({r['alarms']} alarms) | "
                         f"{r['low']:.2f} - {r['high']:.2f} (Poisson); {r['boot_low']:.2f} - {r['boot_high']:.2f} "
                         f"(devices resampled) | {r['device_days']:.0f} device-days | {r['devices_alarming']} "
                         f"devices alarmed; {r['by_metric']} |")
        else:
            predicted = f"; Siegmund predicts {r['siegmund_frames']:.0f}" if r["siegmund_frames"] else ""
            lines.append(f"| {r['kind']} (median frames) | {r['phi']:g} | {r['fps']:g} | "
                         f"{r['median']:.0f} (mean {r['mean']:.0f}) | "
                         f"{r['median_low']:.0f} - {r['median_high']:.0f} (mean {r['mean_low']:.0f} - "
                         f"{r['mean_high']:.0f}) | {r['devices']} devices | within 2,000: {r['within_2000']:.0%}, "
                         f"2,500: {r['within_2500']:.0%}; missed {r['missed']}{predicted} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--days", type=float, default=2.0, help="days per device for the false alarms")
    parser.add_argument("--phi", type=float, action="append", help="block autocorrelation(s); default 0 and 0.5")
    parser.add_argument("--shift", choices=tuple(SHIFTS), action="append", help="default all")
    parser.add_argument("--guard", type=float, default=None, help="override DriftConfig.estimation_guard")
    parser.add_argument("--threshold", choices=("bootstrap", "integrated"), default=None,
                        help="override DriftConfig.threshold (main's plan before the bootstrap: "
                             "--threshold integrated --guard 1)")
    parser.add_argument("--baseline-blocks", type=int, default=None, help="override DriftConfig.baseline_blocks")
    parser.add_argument("--long-run-variance", choices=("ar1", "batch_means", "larger"), default=None)
    parser.add_argument("--transform", choices=("normal_scores", "linear"), default=None)
    parser.add_argument("--no-false-alarms", action="store_true")
    parser.add_argument("--fps", type=float, default=FPS, help="frames per second of every device")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out")
    args = parser.parse_args(argv if argv is not None else [])
    overrides = {"estimation_guard": args.guard, "threshold": args.threshold,
                 "long_run_variance": args.long_run_variance,
                 "baseline_blocks": args.baseline_blocks, "transform": args.transform}
    config = DriftConfig(**{key: value for key, value in overrides.items() if value is not None})
    rng = np.random.default_rng(args.seed)
    started, rows = time.monotonic(), []
    print(f"fps {args.fps:g}, {config!r}", flush=True)  # noqa: T201
    for phi in args.phi or [0.0, 0.5]:
        if not args.no_false_alarms:
            rows.append(false_alarms(rng, args.devices, args.days, phi, config, args.fps))
            print(json.dumps(rows[-1]), flush=True)  # noqa: T201
        for name in args.shift or SHIFTS:
            rows.append(delays(rng, args.devices, phi, config, name, args.fps))
            print(json.dumps(rows[-1]), flush=True)  # noqa: T201
    return finish(table(rows), started, args.out, rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
