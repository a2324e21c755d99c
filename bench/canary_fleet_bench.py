"""The canary judge on simulated heterogeneous fleets (issue 21): false halts and power, with 95% intervals.

Fleets of 100 devices (`bench/fleet_model.py`: identical, modest, camera-fleet), 300 inferences per device
and window, the judge looking after every 100 (as `await_verdict` does, stopping at the first pass or fail).
- False halts of good releases: per wave 1 (1, 3, 10 canary devices against up to `max_control_devices`
  devices not yet reached, chosen at random) and per rollout (waves [k, 10%, 50%, 100%], random order, a
  holdback of 10 control devices until the last wave; a rollout halts when any wave fails).
- Power in wave 1 (camera-fleet and modest models): latency x1.5 / x2, errors +1% / +2%, median score drop
  0.15 / 0.25, 10% / 30% of the frames collapsing to one class.
Intervals: Wilson score 95% (`scipy.stats.binomtest(...).proportion_ci`). Seeded; pure simulation (no
processes): `python -m bench.canary_fleet_bench [--trials N] [--rollouts N] [--out results.json]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator

import numpy as np
from scipy import stats

from bench.fleet_model import CLASSES, MODELS, Fault, Fleet, looks, make_fleet
from bench.report import finish
from edgefleet.flows.rollout.canary import judge_safely
from edgefleet.flows.rollout.judgement import control_order
from edgefleet.flows.rollout.params import CanaryGate
from edgefleet.flows.rollout.verdict import Verdict
from edgefleet.flows.rollout.waves import plan_waves
from edgefleet.kernel.contracts.distributions import CLASS_TOP_K
from edgefleet.kernel.contracts.telemetry import MAX_RELEASE_CLASSES

SEED = 20261207
FLEET = 100
CHUNKS = [100, 100, 100]
CANARIES = (1, 3, 10)
WAVES = ["10%", "50%", "100%"]
HOLDBACK = 10
FAULTS = {
    "latency x1.5": Fault(latency_factor=1.5), "latency x2": Fault(latency_factor=2.0),
    "errors +1%": Fault(extra_errors=0.01), "errors +2%": Fault(extra_errors=0.02),
    "score drop 0.15": Fault(score_drop=0.15), "score drop 0.25": Fault(score_drop=0.25),
    "class collapse 10%": Fault(collapse=0.1), "class collapse 30%": Fault(collapse=0.3),
}
POWER_MODELS = ("modest", "camera")


def judged_wave(rng: np.random.Generator, fleet: Fleet, canary: list[int], control: list[int], gate: CanaryGate,
                fault: Fault | None = None) -> Verdict:
    """The wave's verdict as the rollout reaches it: a look per chunk, the first pass or fail ends it."""
    verdict = None
    for number, evidence in enumerate(looks(rng, fleet, canary, control, CHUNKS, fault), 1):
        verdict = judge_safely(evidence, None, gate, classes=tuple(range(len(fleet.devices[0].mix))),
                               final=number == len(CHUNKS))
        if verdict.result != "wait":
            break
    assert verdict is not None
    return verdict


def first_wave(rng: np.random.Generator, fleet: Fleet, k: int, gate: CanaryGate) -> tuple[list[int], list[int]]:
    order = [int(i) for i in rng.permutation(len(fleet.devices))]
    canary, rest = order[:k], order[k:]
    names = control_order([f"d{i}" for i in rest], str(rng.integers(1 << 30)))[:gate.max_control_devices]
    return canary, [int(name[1:]) for name in names]


def rollout_halts(rng: np.random.Generator, fleet: Fleet, k: int, gate: CanaryGate) -> int | None:
    """The wave a good release's rollout halts in (None: completed)."""
    order = [f"d{int(i)}" for i in rng.permutation(len(fleet.devices))]
    plan = plan_waves(order, [k, *WAVES], holdback=HOLDBACK, keep_outside=gate.min_control_devices)
    reached: set[str] = set()
    for number, wave in enumerate(plan, 1):
        reached |= set(wave)
        others = control_order([d for d in order if d not in reached], str(number))[:gate.max_control_devices]
        verdict = judged_wave(rng, fleet, [int(d[1:]) for d in wave], [int(d[1:]) for d in others], gate)
        if verdict.result == "fail":
            return number
    return None


def rate(hits: int, n: int) -> dict:
    interval = stats.binomtest(hits, n).proportion_ci(0.95, method="wilson")
    return {"hits": hits, "n": n, "rate": hits / n, "low": float(interval.low), "high": float(interval.high)}


def measure(trials: int, rollouts: int, seed: int = SEED, parts: tuple[str, ...] = ("halts", "power"),
            models: tuple[str, ...] = tuple(MODELS), shape: tuple[int, int] = (CLASSES, MAX_RELEASE_CLASSES),
            faults: tuple[str, ...] = tuple(FAULTS)) -> Iterator[dict]:
    """`shape`: (classes of the release, classes one window lists: every one, or schema 2's top 32)."""
    if "halts" in parts:
        yield from false_halts(trials, rollouts, np.random.default_rng(seed), models, shape)
    if "power" in parts:
        yield from power(trials, np.random.default_rng(seed + 1), shape, faults)


def false_halts(trials: int, rollouts: int, rng: np.random.Generator, models: tuple[str, ...],
                shape: tuple[int, int]) -> Iterator[dict]:
    gate = CanaryGate()
    for name in models:
        model = MODELS[name]
        for k in CANARIES:
            halted, why = 0, {}
            for _ in range(trials):
                fleet = make_fleet(rng, model, FLEET, *shape)
                verdict = judged_wave(rng, fleet, *first_wave(rng, fleet, k, gate), gate)
                halted += verdict.result == "fail"
                for metric in verdict.halted_by:
                    why[metric] = why.get(metric, 0) + 1
            yield {"kind": "false halts per wave 1", "model": name, "canaries": k, **rate(halted, trials),
                   "halted_by": why}
        for k in CANARIES:
            waves = [rollout_halts(rng, make_fleet(rng, model, FLEET, *shape), k, gate) for _ in range(rollouts)]
            yield {"kind": "false halts per rollout", "model": name, "canaries": k,
                   **rate(sum(w is not None for w in waves), rollouts),
                   "halted_in_wave": sorted(w for w in waves if w is not None)}


def power(trials: int, rng: np.random.Generator, shape: tuple[int, int], faults: tuple[str, ...]) -> Iterator[dict]:
    gate = CanaryGate()
    for name in POWER_MODELS:
        for fault_name in faults:
            fault = FAULTS[fault_name]
            for k in CANARIES:
                caught = 0
                for _ in range(trials):
                    fleet = make_fleet(rng, MODELS[name], FLEET, *shape)
                    caught += judged_wave(rng, fleet, *first_wave(rng, fleet, k, gate), gate, fault).result == "fail"
                yield {"kind": f"power: {fault_name}", "model": name, "canaries": k, **rate(caught, trials)}


def table(rows: list[dict]) -> str:
    lines = ["| measure | fleet | canary devices | rate | 95% interval | n |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['kind']} | {row['model']} | {row['canaries']} | {row['rate']:.1%} | "
                     f"{row['low']:.1%} - {row['high']:.1%} | {row['n']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="wave-1 verdicts per cell")
    parser.add_argument("--rollouts", type=int, default=200, help="rollouts per cell")
    parser.add_argument("--out", help="also write the rows as JSON here")
    parser.add_argument("--model", choices=tuple(MODELS), action="append",
                        help="false halts only on this fleet model; default all")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--part", choices=("halts", "power"), action="append",
                        help="only this part (false halts, or power); default both")
    parser.add_argument("--classes", type=int, default=CLASSES, help="the release's classes (labels)")
    parser.add_argument("--schema", type=int, choices=(2, 3), default=3,
                        help="telemetry schema of the agents: 3 lists every class, 2 each window's top 32")
    parser.add_argument("--fault", choices=tuple(FAULTS), action="append", help="power: only this fault")
    args = parser.parse_args(argv if argv is not None else [])
    shape = (args.classes, MAX_RELEASE_CLASSES if args.schema == 3 else CLASS_TOP_K)
    started = time.monotonic()
    rows = []
    for row in measure(args.trials, args.rollouts, args.seed, parts=tuple(args.part or ("halts", "power")),
                       models=tuple(args.model or MODELS), shape=shape, faults=tuple(args.fault or FAULTS)):
        rows.append(row)
        print(json.dumps(row), flush=True)  # noqa: T201
    return finish(table(rows), started, args.out, rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
