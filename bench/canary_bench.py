"""Canary analysis benchmark (issue 10): false halts under load, catches, time to a verdict. Seeded.

1. False halts, for real: the demo's stack (Pub/Sub emulator, fleet monitor, 3 simulated devices each with a
   real sshd and a real agent at 20 fps), a busy loop on every core, and N rollouts (default 20) of good
   releases in waves [1, "100%"], alternating between two good models (the demo's trainer, seeds 0 and 1).
   Goal: 0 halts. Each wave's verdict and its time from activation are recorded.
2. Catches:
   (i) shuffled labels, for real: the demo's model trained on shuffled labels, released as a Keras model and
       rolled out; it must halt in the first wave, with only the first device rolled back.
   (ii) 3x slower, (iii) 5% inference errors, (iv) collapsed top-1 scores: simulated at agent rates from the
       distributions the real agents reported in step 1 (canary 1 device at 20 fps, 2 control devices at
       20 fps each, each with a minute of before-activation history, judged every second as the rollout
       does), 20 seeded trials each. Goal: every trial
       caught; the time to the verdict is reported.

Run: `python -m bench.canary_bench [--rollouts N] [--no-busy]` (needs sshd and Java; about 15 minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

SEED = 20261130
TRIALS = 20
CANARY_FPS = 20  # the demo's agents
CONTROL_FPS = 40
BEFORE_S = 60  # seconds of before-activation history per device


def _spin() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


@contextmanager
def busy_loops(enabled: bool) -> Iterator[int]:
    """One busy process per core while the block runs (the CI machines' load)."""
    processes = []
    if enabled:
        for _ in range(os.cpu_count() or 1):
            process = multiprocessing.Process(target=_spin, daemon=True)
            process.start()
            processes.append(process)
    try:
        yield len(processes)
    finally:
        for process in processes:
            process.terminate()
            process.join(5)


# --- simulated cases: draw inferences from the real agents' distributions ------------------------------
def _pmf(counts: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.array(sorted(counts))
    weights = np.array([counts[k] for k in keys], dtype=float)
    return keys, weights / weights.sum()


def draw(rng: np.random.Generator, base, n: int, *, latency_factor: float = 1.0, error_ratio: float = 0.0,
         score_shift: int = 0):
    """n inferences like `base` (a Distributions), with one fault applied; returns a Sample."""
    from edgefleet.flows.rollout.verdict import Sample
    from edgefleet.kernel.contracts import distributions as d

    errors = int(rng.binomial(n, error_ratio)) if error_ratio else 0
    ok = n - errors
    latency_keys, latency_p = _pmf(base.latency_counts())
    shift = round(math.log10(latency_factor) * d.LATENCY_BUCKETS_PER_DECADE)
    latency = np.clip(rng.choice(latency_keys, ok, p=latency_p) + shift, 0, d.LATENCY_BUCKETS - 1)
    score_keys, score_p = _pmf(base.score_counts())
    score = np.clip(rng.choice(score_keys, ok, p=score_p) - score_shift, 0, d.SCORE_BUCKETS - 1)
    class_keys, class_p = _pmf(base.class_counts())
    classes = rng.choice(class_keys, ok, p=class_p)

    def counts(values: np.ndarray) -> dict[int, int]:
        unique, number = np.unique(values, return_counts=True)
        return {int(k): int(v) for k, v in zip(unique, number, strict=True)}

    return Sample(inferences=n, errors=errors,
                  dist=d.build(latency=counts(latency), score=counts(score), classes=counts(classes)))


def simulate(case: str, base, reference, gate, rng: np.random.Generator, fault: dict) -> tuple[float | None, str]:
    """Seconds until the verdict at agent rates (None: never failed within the gate's timeout), and why.

    The canary device and two control devices each have a before-window of `BEFORE_S` seconds at their rate;
    after the activation their after-windows grow every second and the judge looks."""
    from bench.fleet_model import added
    from edgefleet.flows.rollout.canary import judge_safely
    from edgefleet.flows.rollout.verdict import DeviceWindows, WaveEvidence

    rates = {"sim-1": CANARY_FPS, "sim-2": CONTROL_FPS // 2, "sim-3": CONTROL_FPS // 2}
    before = {device: draw(rng, base, fps * BEFORE_S) for device, fps in rates.items()}
    after: dict = dict.fromkeys(rates)
    for second in range(1, int(gate.timeout_s) + 1):
        for device, fps in rates.items():
            after[device] = added(after[device], draw(rng, base, fps, **(fault if device == "sim-1" else {})))
        windows = {device: DeviceWindows(device=device, before=before[device], after=after[device])
                   for device in rates}
        evidence = WaveEvidence(canary=(windows["sim-1"],), control=(windows["sim-2"], windows["sim-3"]),
                                control_kind="concurrent")
        verdict = judge_safely(evidence, reference, gate, final=second >= gate.timeout_s)
        if verdict.result == "fail":
            return float(second), ", ".join(verdict.halted_by)
        if verdict.result == "pass":
            return None, f"passed ({verdict.reason})"
    return None, "no verdict"


SIMULATED = {
    "3x slower": {"latency_factor": 3.0},
    "5% inference errors": {"error_ratio": 0.05},
    "collapsed top-1 scores": {"score_shift": 10},
}


# --- the real part ------------------------------------------------------------------------------------
def run(rollouts: int, busy: bool, workdir: Path) -> dict:
    from edgefleet.demo import Demo, DemoSettings, _env_defaults
    from edgefleet.flows.registry import open_registry_writer
    from edgefleet.flows.rollout.params import CanaryGate
    from edgefleet.flows.rollout.record import RecordStore
    from edgefleet.flows.trust.release_key import public_key_path
    from edgefleet.monitor import load_monitor_config, open_fleet_store
    from edgefleet.monitor.windows import version_window

    settings = DemoSettings(workdir=workdir)
    _env_defaults(settings)
    demo = Demo(settings)
    registry = open_registry_writer(demo.registry_dir)
    good: list[dict] = []
    with busy_loops(busy) as spinning, ExitStack() as stack:
        demo.start_prefect(stack)
        demo.start_stack(stack)
        demo.start_monitor(stack)
        monitor_yaml = demo.work / "monitor.yaml"
        demo.release("1.0.0", settings.epochs_v2, channel=None, seed=0)
        fleet = demo.start_fleet(stack, public_key_path(demo.signing_key))
        demo.rollout(fleet, "1.0.0", [1, "100%"], monitor_yaml)
        for number in range(1, rollouts + 1):
            version = f"1.1.{number}"
            demo.release(version, settings.epochs_v2, channel=None, seed=number % 2)
            started = time.monotonic()
            result = demo.rollout(fleet, version, [1, "100%"], monitor_yaml, expect_halt=True)
            record = RecordStore(registry, result.rollout_id).load()
            good.append({"version": version, "outcome": result.state, "halted_by": list(result.halted_by),
                         "seconds": round(time.monotonic() - started, 1),
                         "verdict_s": [round(v.seconds_after_activation, 1) for v in record.verdicts]})
        # What the real agents reported for the last good version: the base of the simulated cases.
        config = load_monitor_config(monitor_yaml)
        with open_fleet_store(config, create=False) as store:
            window = version_window(store, list(fleet.devices), settings.model, f"1.1.{rollouts}",
                                    record.started_at)
        manifest = registry.read_manifest(settings.model, f"1.1.{rollouts}").manifest
        bad = demo.release("1.2.0", settings.epochs_bad, channel=None, keras_model=demo.train_bad_model())
        result = demo.rollout(fleet, bad.version, [1, "100%"], monitor_yaml, expect_halt=True)
        bad_record = RecordStore(registry, result.rollout_id).load()
    shuffled = {"outcome": result.state, "halted_by": list(result.halted_by),
                "wave": bad_record.halted.wave if bad_record.halted else None,
                "rolled_back": sorted(d.device_id for d in bad_record.devices.values() if d.state == "rolled_back"),
                "verdict_s": [round(v.seconds_after_activation, 1) for v in bad_record.verdicts]}

    gate = CanaryGate()
    rng = np.random.default_rng(SEED)
    reference = manifest.reference.distributions if manifest.reference else None
    simulated = {}
    for case, fault in SIMULATED.items():
        trials = [simulate(case, window.dist, reference, gate, rng, fault) for _ in range(TRIALS)]
        caught = [seconds for seconds, _ in trials if seconds is not None]
        simulated[case] = {"caught": len(caught), "trials": TRIALS,
                           "median_s": statistics.median(caught) if caught else None,
                           "max_s": max(caught) if caught else None, "by": trials[0][1]}
    false_control = [simulate("good", window.dist, reference, gate, rng, {}) for _ in range(TRIALS)]
    verdict_times = [t for item in good for t in item["verdict_s"]]
    return {
        "busy_processes": spinning,
        "good_rollouts": len(good), "false_halts": sum(item["outcome"] == "halted" for item in good),
        "false_halt_details": [item for item in good if item["outcome"] == "halted"],
        "good_verdict_s_median": statistics.median(verdict_times) if verdict_times else None,
        "good_verdict_s_max": max(verdict_times) if verdict_times else None,
        "good_rollout_s_median": statistics.median(item["seconds"] for item in good) if good else None,
        "shuffled_labels": shuffled,
        "simulated": simulated,
        "simulated_good_false_halts": sum(seconds is not None for seconds, _ in false_control),
        "base_inferences": window.inferences,
    }


def report(results: dict) -> int:
    print(json.dumps(results, indent=2))
    shuffled = results["shuffled_labels"]
    checks: list[tuple[str, Callable[[], bool]]] = [
        ("no false halt in the good rollouts", lambda: results["false_halts"] == 0),
        ("shuffled labels halted in wave 1, only sim-1 rolled back",
         lambda: shuffled["outcome"] == "halted" and shuffled["wave"] == 1 and shuffled["rolled_back"] == ["sim-1"]),
        *[(f"{case}: caught in every trial", lambda case=case: results["simulated"][case]["caught"] == TRIALS)
          for case in SIMULATED],
        ("simulated good canaries: no false halt", lambda: results["simulated_good_false_halts"] == 0),
    ]
    failed = 0
    for what, check in checks:
        ok = check()
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=20)
    parser.add_argument("--no-busy", action="store_true", help="without the busy loop on every core")
    args = parser.parse_args(argv if argv is not None else [])
    with tempfile.TemporaryDirectory(prefix="edgefleet-canary-bench-") as tmp:
        return report(run(args.rollouts, not args.no_busy, Path(tmp) / "work"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
