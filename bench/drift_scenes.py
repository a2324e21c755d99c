"""Scene changes on real photographs through the real model (issue 25, item 3): detection delay in frames of a
camera darkened to night, fogged, moved/cropped and of a shuffled-labels model, and the false-alarm rate per
device-day of the same fleet left alone.

The outputs come from `bench.scene_bank` (Coral's test photographs, or the demo's shapes, rendered per
condition and run through the real TFLite interpreter as the agent runs them). A fleet of `--devices` cameras
at `--fps` (10) frames per second: each camera sees its own mix of the scenes (Dirichlet(0.7): cameras
differ), and its scene wanders from block to block as the drift benchmark's does (blocks of 100 frames,
correlated as an AR(1) with `--phi` 0.5): the mix of scenes (log-share SD 0.5) and the light level (which
fifth of the rendered frames, by brightness, a block draws from). A block's top-1 class and score counts are
drawn from those frames' outputs (class and score independently given the block's mix: each block statistic
uses one of them). Each camera is fitted on its own first 500 blocks and watched by the product's detector
(`edgefleet.monitor.drift`: `baseline_statistics`, `block_statistics`, `fit_metric`, `plan`, `scan`;
classifier: class mix and score median, three CUSUMs) at the default budget of 1 false alarm per 100
device-days.

- False alarms: `--days` days of every camera after its baseline, nothing changed: alarms per 100 device-days
  with Garwood's exact Poisson interval.
- Delays: after 300 quiet blocks, every camera's scene changes at a block boundary (night, fog, moved, or the
  model's labels shuffled); frames to its first alarm, median (bootstrap interval) and share within 2,000
  frames, up to 10,000 frames. Cameras that alarmed in the quiet blocks are left out (counted).

`python -m bench.drift_scenes [--scenes photos|demo] [--devices N] [--days D] [--out results.json]`. Seeded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from bench.drift_bench import ar1
from bench.report import finish
from bench.scene_bank import CONDITIONS, Bank, make_bank
from edgefleet.kernel.contracts.distributions import SCORE_BUCKETS, score_bucket
from edgefleet.monitor.drift.blocks import baseline_statistics, block_statistics
from edgefleet.monitor.drift.config import DriftConfig
from edgefleet.monitor.drift.detector import Cusum, fit_metric, plan, scan

SEED = 20261207
CHANGES = ("night", "fog", "moved", "shuffled")
SCENE_ALPHA = 0.7
SCENE_LOG_SD = 0.5
LEVELS = 5
PHI = 0.5
FPS = 10.0
WARMUP_BLOCKS = 300
CHANGE_BLOCKS = 100
CHUNK_BLOCKS = 432
BOOTSTRAP = 2_000
TARGET_FRAMES = 2_000
MODEL_CLASSES = 1_001
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Outputs:
    """Per condition (the bank's and `shuffled`), scene and light level: the top-1 class and score-bucket
    shares, over the class cells `classes` (every id the bank produced, and their shuffled ids)."""

    classes: np.ndarray
    class_share: dict[str, np.ndarray]
    score_share: dict[str, np.ndarray]


def outputs(bank: Bank, permutation: np.ndarray) -> Outputs:
    ids = np.unique(np.concatenate([bank.classes.ravel(), permutation[bank.classes.ravel()]]))
    column = {int(c): i for i, c in enumerate(ids)}
    order = np.argsort(bank.brightness, axis=-1)
    levels = np.array_split(np.arange(bank.classes.shape[-1]), LEVELS)
    class_share, score_share = {}, {}
    for c, condition in enumerate((*CONDITIONS, "shuffled")):
        source = CONDITIONS.index("normal") if condition == "shuffled" else c
        cs = np.zeros((len(bank.scenes), LEVELS, len(ids)))
        ss = np.zeros((len(bank.scenes), LEVELS, SCORE_BUCKETS))
        for s in range(len(bank.scenes)):
            for level, members in enumerate(levels):
                picked = order[s, source, members]
                for class_id, score in zip(bank.classes[s, source, picked], bank.scores[s, source, picked],
                                           strict=True):
                    cid = int(permutation[class_id]) if condition == "shuffled" else int(class_id)
                    cs[s, level, column[cid]] += 1
                    ss[s, level, score_bucket(float(score))] += 1
        class_share[condition] = cs / cs.sum(-1, keepdims=True)
        score_share[condition] = ss / ss.sum(-1, keepdims=True)
    return Outputs(ids, class_share, score_share)


@dataclass
class Fleet:
    weights: np.ndarray
    state: list[np.ndarray]
    reference: np.ndarray | None = None
    cusums: list[list[Cusum]] | None = None


def simulate(rng: np.random.Generator, fleet: Fleet, out: Outputs, condition: str, blocks: int,
             phi: float, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """`blocks` blocks of every camera: class counts (blocks x devices x cells), score counts
    (blocks*devices x SCORE_BUCKETS)."""
    u, v = ar1(rng, fleet.state[0], phi, blocks), ar1(rng, fleet.state[1], phi, blocks)
    fleet.state[:] = [u[-1], v[-1]]
    share = special.softmax(np.log(fleet.weights) + SCENE_LOG_SD * u, axis=-1)  # blocks x devices x scenes
    level = np.minimum((stats.norm.cdf(v) * LEVELS).astype(int), LEVELS - 1)  # blocks x devices
    p_class = np.einsum("bds,sbdc->bdc", share, out.class_share[condition][:, level])
    p_score = np.einsum("bds,sbdc->bdc", share, out.score_share[condition][:, level])
    classes = rng.multinomial(frames, p_class / p_class.sum(-1, keepdims=True))
    scores = rng.multinomial(frames, (p_score / p_score.sum(-1, keepdims=True)).reshape(-1, SCORE_BUCKETS))
    return classes, scores


def statistics(fleet: Fleet, classes: np.ndarray, scores: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    found = block_statistics(classes, scores, None, fleet.reference, frames)
    return {"class_mix": found["class_mix"], "score_median": found["score_median"].reshape(classes.shape[:2])}


def fit_fleet(rng: np.random.Generator, devices: int, scenes: int, out: Outputs, config: DriftConfig,
              phi: float, fps: float) -> Fleet:
    fleet = Fleet(rng.dirichlet(np.full(scenes, SCENE_ALPHA), devices) + 1e-6,
                  [rng.standard_normal((devices, scenes)), rng.standard_normal(devices)])
    classes, scores = simulate(rng, fleet, out, "normal", config.baseline_blocks, phi, config.block_frames)
    fleet.reference = classes.sum(axis=0).astype(float)
    found = baseline_statistics(classes.astype(float), scores, None, config.block_frames)  # as fit_device
    found["score_median"] = found["score_median"].reshape(classes.shape[:2])
    per_day = fps * SECONDS_PER_DAY / config.block_frames
    fleet.cusums = []
    started = time.process_time()
    for d in range(devices):
        fitted = [fit_metric(m, found[m][:, d], config) for m in ("class_mix", "score_median")]
        fleet.cusums.append(list(plan([f for f in fitted if f is not None], config, per_day)))
    print(f"fit and plan: {(time.process_time() - started) / devices * 1e3:.1f} ms CPU per device "  # noqa: T201
          f"({config.threshold} threshold)", flush=True)
    return fleet


def run(rng: np.random.Generator, fleet: Fleet, out: Outputs, condition: str, blocks: int, phi: float,
        config: DriftConfig, start=None):  # noqa: ANN001, ANN201 - a Scan state
    flat = [(d, c) for d, own in enumerate(fleet.cusums) for c in own]
    k, h = np.array([c.k for _, c in flat]), np.array([c.h for _, c in flat])
    result, first = start, np.full(len(flat), -1)
    for offset in range(0, blocks, CHUNK_BLOCKS):
        n = min(CHUNK_BLOCKS, blocks - offset)
        found = statistics(fleet, *simulate(rng, fleet, out, condition, n, phi, config.block_frames),
                           config.block_frames)
        z = np.stack([c.standardized(found[c.baseline.metric][:, d]) for d, c in flat], axis=1)
        state = (None, None, None) if result is None else (result.s, result.run_length, result.run_sum)
        previous = 0 if result is None or start is result else result.alarms
        result = scan(z, k, h, *state)
        result = type(result)(**{**result.__dict__, "alarms": result.alarms + previous})
        first = np.where((first < 0) & (result.first_alarm >= 0), result.first_alarm + offset, first)
    owners = np.array([d for d, _ in flat])
    return result, first, owners, [f"{c.baseline.metric} {c.direction}" for _, c in flat]


def false_alarms(rng, fleet, out, days, phi, config, fps) -> dict:  # noqa: ANN001
    blocks = int(days * fps * SECONDS_PER_DAY / config.block_frames)
    result, _, _, names = run(rng, fleet, out, "normal", blocks, phi, config)
    hits = int(result.alarms.sum())
    device_days = len(fleet.cusums) * blocks * config.block_frames / fps / SECONDS_PER_DAY
    low = stats.chi2.ppf(0.025, 2 * hits) / 2 if hits else 0.0
    high = stats.chi2.ppf(0.975, 2 * hits + 2) / 2
    by = Counter()
    for name, n in zip(names, result.alarms, strict=True):
        by[name] += int(n)
    return {"kind": "false alarms per 100 device-days", "alarms": hits, "device_days": device_days,
            "rate": hits / device_days * 100, "low": low / device_days * 100, "high": high / device_days * 100,
            "by_statistic": dict(by)}


def delays(rng, fleet, out, phi, config, quiet) -> list[dict]:  # noqa: ANN001
    rows = []
    quiet_scan, quiet_first, owners, names = quiet
    early = np.array([(quiet_first[owners == d] >= 0).any() for d in range(len(fleet.cusums))])
    saved = [s.copy() for s in fleet.state]
    for change in CHANGES:
        fleet.state[:] = [s.copy() for s in saved]
        _, first, _, _ = run(rng, fleet, out, change, CHANGE_BLOCKS, phi, config, start=quiet_scan)
        caught = np.array([np.min(np.where(first[owners == d] >= 0, first[owners == d], 10**9))
                           for d in range(len(fleet.cusums))])
        which = Counter(names[int(np.argmin(np.where(first[owners == d] >= 0, first[owners == d], 10**9)))
                               + int(np.flatnonzero(owners == d)[0])]
                        for d in range(len(fleet.cusums)) if caught[d] < 10**9 and not early[d])
        frames = np.where(caught < CHANGE_BLOCKS, (caught + 1) * config.block_frames, np.inf)[~early]
        boot = np.median(rng.choice(frames, (BOOTSTRAP, len(frames))), axis=1)
        rows.append({"kind": f"delay: {change}", "devices": int(len(frames)), "early_alarms": int(early.sum()),
                     "median": float(np.median(frames)), "median_low": float(np.percentile(boot, 2.5)),
                     "median_high": float(np.percentile(boot, 97.5)),
                     "within_2000": float(np.mean(frames <= TARGET_FRAMES)), "missed": int(np.isinf(frames).sum()),
                     "first_statistic": dict(which)})
    return rows


def plan_summary(fleet: Fleet) -> dict:
    """Per CUSUM (statistic and direction) over the fleet: the bootstrap's tail scale, its standard error and
    the threshold (5th, 50th, 95th percentiles)."""
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for own in fleet.cusums or []:
        for c in own:
            tail = c.baseline.tail(c.direction)
            rows.setdefault(f"{c.baseline.metric} {c.direction}", []).append((tail.scale, tail.log_se, c.h))
    return {name: {label: [round(float(q), 3) for q in np.percentile(np.array(v)[:, i], [5, 50, 95])]
                   for i, label in enumerate(("tail_scale", "tail_log_se", "h"))} for name, v in rows.items()}


def bank_summary(bank: Bank) -> dict:
    normal = CONDITIONS.index("normal")
    summary = {}
    for c, condition in enumerate(CONDITIONS):
        same = bank.classes[:, c] == np.array([np.bincount(bank.classes[s, normal]).argmax()
                                               for s in range(len(bank.scenes))])[:, None]
        summary[condition] = {"mean_top1_score": round(float(bank.scores[:, c].mean()), 3),
                              "top1_is_the_scenes_usual_class": round(float(same.mean()), 3)}
    return summary


def table(kind: str, rows: list[dict]) -> str:
    lines = [f"| {kind} | result | 95% interval | n | notes |", "|---|---|---|---|---|"]
    for r in rows:
        if r["kind"].startswith("false"):
            lines.append(f"| {r['kind']} | {r['rate']:.2f} ({r['alarms']} alarms) | {r['low']:.2f} - "
                         f"{r['high']:.2f} | {r['device_days']:.0f} device-days | {r['by_statistic']} |")
        else:
            lines.append(f"| {r['kind']} (median frames) | {r['median']:.0f} | {r['median_low']:.0f} - "
                         f"{r['median_high']:.0f} | {r['devices']} devices | within 2,000: {r['within_2000']:.0%}; "
                         f"missed {r['missed']}; first alarm on {r['first_statistic']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", choices=("photos", "demo"), default="photos")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--days", type=float, default=1.0, help="days per camera for the false alarms")
    parser.add_argument("--phi", type=float, default=PHI)
    parser.add_argument("--fps", type=float, default=FPS)
    parser.add_argument("--guard", type=float, default=None, help="override DriftConfig.estimation_guard")
    parser.add_argument("--threshold", choices=("bootstrap", "integrated"), default=None,
                        help="override DriftConfig.threshold (main's plan before the bootstrap: "
                             "--threshold integrated --guard 1)")
    parser.add_argument("--transform", choices=("normal_scores", "linear"), default=None,
                        help="override DriftConfig.transform")
    parser.add_argument("--baseline-blocks", type=int, default=None, help="override DriftConfig.baseline_blocks")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out")
    args = parser.parse_args(argv if argv is not None else [])
    overrides = {"estimation_guard": args.guard, "threshold": args.threshold,
                 "transform": args.transform, "baseline_blocks": args.baseline_blocks}
    config = DriftConfig(**{key: value for key, value in overrides.items() if value is not None})
    rng, started = np.random.default_rng(args.seed), time.monotonic()
    bank = make_bank(rng, args.scenes)
    out = outputs(bank, rng.permutation(MODEL_CLASSES))
    print(f"{args.scenes}: {bank.scenes} through {bank.model}; {json.dumps(bank_summary(bank))}", flush=True)  # noqa: T201
    fleet = fit_fleet(rng, args.devices, len(bank.scenes), out, config, args.phi, args.fps)
    print(f"plan: {json.dumps(plan_summary(fleet))}", flush=True)  # noqa: T201
    rows = [false_alarms(rng, fleet, out, args.days, args.phi, config, args.fps)]
    print(json.dumps(rows[-1]), flush=True)  # noqa: T201
    quiet = run(rng, fleet, out, "normal", WARMUP_BLOCKS, args.phi, config)
    rows += delays(rng, fleet, out, args.phi, config, quiet)
    return finish(table(f"{args.scenes}, phi {args.phi:g}, {args.fps:g} fps", rows), started, args.out,
                  {"scenes": args.scenes, "bank": bank_summary(bank), "rows": rows})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
