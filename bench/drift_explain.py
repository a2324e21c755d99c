"""Why a scene change is slow on some cameras (issue 25): per camera of the `bench.drift_scenes` fleet, how far
the change moves each watched statistic, in the long-run SDs its CUSUM works in, against what any detector
needs to alarm within the target at the budget.

The fleet is the one `bench.drift_scenes` builds for the same `--scenes`, `--seed` and `--devices` (the
cameras, their baselines and plans come first off the seeded generator, before any false-alarm day).
`--blocks` blocks of the change are simulated per camera (after `WARMUP_BLOCKS` quiet blocks, as there); for
each CUSUM the mean increment over them (clipped, standardized: what the CUSUM adds before k) is the shift
it sees. Its expected delay is h / (shift - k) blocks (0 below k: never).

Any detector: Lorden's bound says a procedure with in-control run length ARL0 needs at least log(ARL0) / I
blocks on average, I the Kullback-Leibler information per block; for a Gaussian shift of d long-run SDs it is
d^2 / 2 (a long-run SD is the honest unit on correlated blocks), so the target of `TARGET_FRAMES` frames is
out of reach of any detector when d < sqrt(2 log(ARL0) / target blocks) on every statistic.

`python -m bench.drift_explain [--scenes demo] [--seed 20261207] [--change fog] [--devices 100]`. Seeded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from bench.drift_scenes import (
    CHANGES,
    SEED,
    TARGET_FRAMES,
    WARMUP_BLOCKS,
    Fleet,
    Outputs,
    fit_fleet,
    outputs,
    run,
    simulate,
    statistics,
)
from bench.scene_bank import make_bank
from edgefleet.monitor.drift.config import DriftConfig
from edgefleet.monitor.drift.detector import DAYS_PER_BUDGET

MODEL_CLASSES = 1_001
SECONDS_PER_DAY = 86_400


def shifts(rng: np.random.Generator, fleet: Fleet, out: Outputs, change: str, blocks: int, phi: float,
           config: DriftConfig) -> np.ndarray:
    """Per camera and CUSUM (devices x CUSUMs): the mean increment over `blocks` blocks of the change."""
    run(rng, fleet, out, "normal", WARMUP_BLOCKS, phi, config)  # the scene state where the change starts
    found = statistics(fleet, *simulate(rng, fleet, out, change, blocks, phi, config.block_frames),
                       config.block_frames)
    cusums = fleet.cusums or []
    return np.array([[float(np.nanmean(c.standardized(found[c.baseline.metric][:, d]))) for c in own]
                     for d, own in enumerate(cusums)])


def explain(fleet: Fleet, moved: np.ndarray, config: DriftConfig, fps: float) -> list[dict]:
    """Per camera: each CUSUM's shift, k, h, expected delay (frames), and the shift any detector needs."""
    per_day = fps * SECONDS_PER_DAY / config.block_frames
    rows = []
    for d, own in enumerate(fleet.cusums or []):
        arl0 = len(own) * per_day * DAYS_PER_BUDGET / config.false_alarms_per_100_device_days
        target_blocks = TARGET_FRAMES / config.block_frames
        needed = math.sqrt(2 * math.log(arl0) / target_blocks)
        cusums = []
        for c, shift in zip(own, moved[d], strict=True):
            unit = c.spread / c.baseline.long_run_sd  # long-run SDs per increment (the widening)
            blocks = c.h / (shift - c.k) if shift > c.k else math.inf
            cusums.append({"cusum": f"{c.baseline.metric} {c.direction}", "shift": round(shift, 3),
                           "shift_long_run_sd": round(shift * unit, 3), "k": round(c.k, 3), "h": round(c.h, 2),
                           "tail_scale": round(c.baseline.tail(c.direction).scale, 3),
                           "expected_frames": blocks * config.block_frames})
        best = min(cusums, key=lambda x: x["expected_frames"])
        rows.append({"camera": d, "weights": [round(float(w), 3) for w in fleet.weights[d]],
                     "best": best["cusum"], "expected_frames": best["expected_frames"],
                     "largest_shift_long_run_sd": max(abs(x["shift_long_run_sd"]) for x in cusums),
                     "any_detector_needs_long_run_sd": round(needed, 3), "cusums": cusums})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", choices=("photos", "demo"), default="demo")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--change", choices=CHANGES, default="fog")
    parser.add_argument("--blocks", type=int, default=200, help="blocks of the change simulated per camera")
    parser.add_argument("--phi", type=float, default=0.5)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--guard", type=float, default=None, help="override DriftConfig.estimation_guard")
    parser.add_argument("--threshold", choices=("bootstrap", "integrated"), default=None)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--slowest", type=int, default=8, help="cameras shown (the slowest expected)")
    args = parser.parse_args(argv if argv is not None else [])
    overrides = {"estimation_guard": args.guard, "threshold": args.threshold}
    config = DriftConfig(**{key: value for key, value in overrides.items() if value is not None})
    rng = np.random.default_rng(args.seed)
    bank = make_bank(rng, args.scenes)
    out = outputs(bank, rng.permutation(MODEL_CLASSES))
    fleet = fit_fleet(rng, args.devices, len(bank.scenes), out, config, args.phi, args.fps)
    rows = explain(fleet, shifts(rng, fleet, out, args.change, args.blocks, args.phi, config), config, args.fps)
    rows.sort(key=lambda r: -r["expected_frames"])
    late = sum(r["expected_frames"] > TARGET_FRAMES for r in rows)
    hopeless = sum(r["largest_shift_long_run_sd"] < r["any_detector_needs_long_run_sd"] for r in rows)
    print(f"{args.change} on {args.scenes} (seed {args.seed}): {late} of {len(rows)} cameras expected later than "  # noqa: T201
          f"{TARGET_FRAMES} frames; {hopeless} move no statistic far enough for any detector at the budget")
    for r in rows[: args.slowest]:
        print(json.dumps(r))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
