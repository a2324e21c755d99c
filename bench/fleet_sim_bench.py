"""A pull rollout to a simulated fleet (issue 23, item 3): the real `pull-rollout` flow, the real fleet monitor
(its CLI, in processes of its own), the Pub/Sub emulator, and N simulated devices in one asyncio process
(`edgefleet.local.simfleet`), each with its own enrolled key, class mix and speed (`bench.fleet_model`).

    python -m bench.fleet_sim_bench --devices 10000 [--shares 1%,10%,50%,100%] [--dwell-s 30] [--bad slow]

Two rollouts in one run: a good version to 100 % in four waves (wall time from the flow's start to its
completed result), then a bad one (profile `--bad`: slow, erroring, collapsed) that must be halted in its
first wave: the share of the fleet that ran it, and how many polls each exposed device took to go back after
the signed share 0 (goals: <= 1 % exposed, back within 2 polls). `--replicas` monitors share the subscription.
Goals (the issue): 10,000 devices, 30 s dwell, 100 % in under 5 minutes of wall time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from bench.fleet_model import MODELS, make_fleet  # noqa: E402
from edgefleet.local.simfleet import FleetSpec, SimFleet, SimSettings, enrol_fleet  # noqa: E402
from edgefleet.local.simfleet.runner import lateness_summary  # noqa: E402
from edgefleet.local.simfleet.world import SimWorld, make_world  # noqa: E402

OLD, GOOD, BAD = "1.0.0", "1.1.0", "1.2.0"
SEEN_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
SIM_STOP_TIMEOUT_S = 600.0
"""The simulated devices flush their publisher's backlog when stopped: minutes at 10,000 devices on a loaded
machine (a 60 s wait lost a run's history)."""
GOAL_WALL_S = 300.0
GOAL_EXPOSED = 0.01
GOAL_POLLS_BACK = 2


@dataclass(frozen=True)
class Scenario:
    devices: int
    shares: tuple[str, ...] = ("1%", "10%", "50%", "100%")
    dwell_s: float = 30.0
    bad: str = "slow"
    poll_interval_s: float = 5.0
    window_s: float = 5.0
    fps: float = 10.0
    replicas: int = 1
    sim_processes: int = 1
    seen_timeout_s: float = SEEN_TIMEOUT_S
    """Processes the simulated devices are dealt over (each one asyncio loop)."""
    report_timeout_s: float = 120.0
    """How long a moved device may take to report the version (a wave ends as soon as all did)."""
    seed: int = 7
    min_samples: int = 100
    """Inferences a device's window needs to count (the canary gate's default; fewer makes the class-mix
    change of a short after-window look larger than a control's: a good release can fail)."""
    min_error_samples: int = 300
    fleet_model: str = "camera"


@dataclass(frozen=True)
class Outcome:
    good_state: str
    good_wall_s: float
    good_done: int
    bad_state: str
    bad_wave: int | None
    first_wave: int
    """Devices the bad rollout's first wave moved (the flow's record)."""
    exposed: int
    exposed_share: float
    max_polls_back: int | None
    not_back: int
    devices: int
    poll_lateness_s: tuple[float, float, float]
    """p50, p95, max of how late the simulated devices polled after their planned time (the simulator's
    process keeping up: it should stay near 0)."""


def _sim_process(spec: FleetSpec, stop: threading.Event, report: str) -> None:
    fleet = SimFleet(spec)
    fleet.run(stop)
    Path(report).write_text(json.dumps({"devices": {d: {"polls": h.polls, "changes": h.changes}
                                                    for d, h in fleet.history.items()},
                                        "lateness": fleet.lateness}))


@contextmanager
def monitors(world: SimWorld, replicas: int) -> Iterator[None]:
    """`edgefleet monitor` processes on the world's subscription (stopped with SIGTERM)."""
    processes = [subprocess.Popen([sys.executable, "-m", "edgefleet.cli", "monitor", "--config",
                                   str(world.monitor_config), "--log-level", "WARNING"],
                                  stdout=subprocess.DEVNULL, stderr=open(world.base / f"monitor-{i}.log", "w"))
                 for i in range(replicas)]
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(STOP_TIMEOUT_S)


@contextmanager
def simulated_fleet(world: SimWorld, scenario: Scenario) -> Iterator[tuple[FleetSpec, list[Path]]]:
    """Enrols the devices, runs them in `scenario.sim_processes` processes of their own (devices dealt in
    turn); yields their spec and the history files (written when they stop)."""
    from edgefleet.flows.registry import open_registry_writer
    from edgefleet.kernel.trust.signatures import load_private_key

    traits = make_fleet(np.random.default_rng(scenario.seed), MODELS[scenario.fleet_model], scenario.devices).devices
    devices = enrol_fleet(open_registry_writer(world.registry), load_private_key(world.enrolment_key), "sim", traits)
    settings = SimSettings(model=world.model, channel=world.channel, poll_interval_s=scenario.poll_interval_s,
                           window_s=scenario.window_s, fps=scenario.fps, profiles={BAD: scenario.bad},
                           seed=scenario.seed)
    spec = FleetSpec(registry=str(world.registry), public_key=str(world.release_public), project=world.project,
                     topic=world.topic, devices=devices, settings=settings)
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    parts = max(1, scenario.sim_processes)
    reports = [world.base / f"history-{part}.json" for part in range(parts)]
    processes = [context.Process(target=_sim_process, args=(replace(spec, devices=devices[part::parts]), stop,
                                                             str(report)), daemon=True)
                 for part, report in enumerate(reports)]
    for process in processes:
        process.start()
    try:
        yield spec, reports
    finally:
        stop.set()
        for process in processes:
            process.join(SIM_STOP_TIMEOUT_S)


def read_reports(reports: list[Path]) -> tuple[dict[str, dict[str, list]], dict[int, int]]:
    """The devices' histories and the poll lateness histogram of every simulator process, merged."""
    history: dict[str, dict[str, list]] = {}
    lateness: dict[int, int] = {}
    for report in reports:
        written = json.loads(report.read_text())
        history.update(written["devices"])
        for step, count in written["lateness"].items():
            lateness[int(step)] = lateness.get(int(step), 0) + count
    return history, lateness


def wait_seen(world: SimWorld, count: int, timeout_s: float = SEEN_TIMEOUT_S) -> None:
    """Until the monitor has seen `count` devices (their first telemetry window: minutes at 10,000 devices
    on a loaded machine; `--seen-timeout-s`)."""
    from edgefleet.flows.rollout.pull_tasks import MonitorView

    view, deadline = MonitorView(str(world.monitor_config), world.model), time.monotonic() + timeout_s
    while len(seen := _seen(view)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the monitor saw {len(seen)} of {count} simulated devices in {timeout_s:.0f} s")
        time.sleep(1.0)


def _seen(view) -> dict:  # noqa: ANN001 - a MonitorView
    """The devices the monitor has seen; none while the monitor process has not made its fleet state yet (it
    starts beside this one, and on a loaded machine the first look came before its file)."""
    from edgefleet.monitor.errors import FleetStateError

    try:
        return view.versions(SEEN_TIMEOUT_S)
    except FleetStateError:
        return {}


def rollout_params(world: SimWorld, scenario: Scenario, version: str):  # -> PullRolloutParams
    from edgefleet.flows.rollout.pull_params import PullRolloutParams

    return PullRolloutParams.model_validate({
        "registry": str(world.registry), "model": world.model, "version": version, "channel": world.channel,
        "schedule": {"kind": "shares", "shares": list(scenario.shares)}, "first_wave_min": 1,
        "monitor_config": str(world.monitor_config), "public_key": str(world.release_public),
        "signing": {"key_file": str(world.release_key)},
        "canary": {"min_samples": scenario.min_samples, "min_error_samples": scenario.min_error_samples,
                   "timeout_s": scenario.dwell_s},
        "report_timeout_s": max(scenario.report_timeout_s, 10 * scenario.poll_interval_s), "poll_interval_s": 1.0,
        "stale_after_s": SEEN_TIMEOUT_S})


def polls_back(history: dict[str, dict[str, list]], halted_at: float) -> tuple[set[str], int | None, int]:
    """The devices that ran BAD, the most polls one of them took after `halted_at` to go back, and how many did
    not go back."""
    exposed = {d for d, h in history.items() if any(to == BAD for _, _, to in h["changes"])}
    worst, missing = None, 0
    for device in exposed:
        back = [t for t, frm, _ in history[device]["changes"] if frm == BAD and t >= halted_at]
        if not back:
            missing += 1
            continue
        polls = sum(1 for t in history[device]["polls"] if halted_at <= t <= back[0])
        worst = polls if worst is None else max(worst, polls)
    return exposed, worst, missing


def run_scenario(world: SimWorld, scenario: Scenario) -> Outcome:
    """Both rollouts against a running monitor (the caller provides a Prefect API)."""
    from edgefleet.flows.registry import open_registry_writer
    from edgefleet.flows.rollout.flow import RolloutHalted
    from edgefleet.flows.rollout.pull_flow import pull_rollout
    from edgefleet.flows.rollout.record import RecordStore

    with simulated_fleet(world, scenario) as (_, reports):
        wait_seen(world, scenario.devices, scenario.seen_timeout_s)
        started = time.monotonic()
        try:
            good = pull_rollout(rollout_params(world, scenario, GOOD))
        except RolloutHalted as halted:
            good = halted.result
        good_wall = time.monotonic() - started
        world.publish(BAD)
        try:
            bad = pull_rollout(rollout_params(world, scenario, BAD))
        except RolloutHalted as halted:
            bad = halted.result
        writer = open_registry_writer(world.registry)
        record = RecordStore(writer, f"{world.model}-{BAD}").load()
        halted_at = writer.read_channel(world.model, world.channel).pointer.updated_at.timestamp()
        time.sleep(3 * scenario.poll_interval_s)  # every device polls again at least twice
    history, histogram = read_reports(reports)
    lateness = lateness_summary(histogram)
    exposed, worst, missing = polls_back(history, halted_at)
    return Outcome(good.state, good_wall, good.done, bad.state, record.halted.wave if record.halted else None,
                   len(record.waves[0]) if record.waves else 0, len(exposed), len(exposed) / scenario.devices,
                   worst, missing, scenario.devices, lateness)


def _table(scenario: Scenario, outcome: Outcome, command: str) -> str:
    rows = [
        ("devices / waves / dwell", f"{scenario.devices} / {','.join(scenario.shares)} / {scenario.dwell_s:g} s",
         "10,000 / 4 / 30 s"),
        ("good release: state, devices done", f"{outcome.good_state}, {outcome.good_done}", "completed, all"),
        ("good release: wall time to 100 %", f"{outcome.good_wall_s:.0f} s", f"< {GOAL_WALL_S:.0f} s"),
        (f"bad release ({scenario.bad}): state, halted in wave", f"{outcome.bad_state}, {outcome.bad_wave}",
         "halted, 1"),
        ("bad release: fleet exposed", f"{outcome.exposed} = {100 * outcome.exposed_share:.2f} %",
         f"<= {100 * GOAL_EXPOSED:g} %"),
        ("bad release: polls to go back (worst), not back", f"{outcome.max_polls_back}, {outcome.not_back}",
         f"<= {GOAL_POLLS_BACK}, 0"),
        ("simulator: poll lateness p50 / p95 / max", " / ".join(f"{value:.1f} s" for value in
                                                                 outcome.poll_lateness_s), "near 0"),
    ]
    lines = [f"command: {command}", f"poll {scenario.poll_interval_s:g} s (+-20 % jitter), telemetry window "
             f"{scenario.window_s:g} s at {scenario.fps:g} fps, canary min_samples {scenario.min_samples}, "
             f"{scenario.replicas} monitor(s) on SQLite, {scenario.sim_processes} simulator process(es)",
             "| measure | result | goal |", "|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])


@contextmanager
def _workdir(path: str | None) -> Iterator[str]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=False)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="fleet-sim-") as tmp:
            yield tmp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--shares", default="1%,10%,50%,100%")
    parser.add_argument("--dwell-s", type=float, default=30.0)
    parser.add_argument("--bad", default="slow", choices=("slow", "erroring", "collapsed"))
    parser.add_argument("--poll-s", type=float, default=5.0)
    parser.add_argument("--window-s", type=float, default=5.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--min-samples", type=int, default=100, help="the canary gate's min_samples")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--sim-processes", type=int, default=1, help="processes the simulated devices run in")
    parser.add_argument("--seen-timeout-s", type=float, default=SEEN_TIMEOUT_S,
                        help="how long the monitor may take to see every device before the rollouts start")
    parser.add_argument("--workdir", default=None, help="keep everything here (default: a temporary directory)")
    args = parser.parse_args(argv)
    scenario = Scenario(devices=args.devices, shares=tuple(args.shares.split(",")), dwell_s=args.dwell_s,
                        bad=args.bad, poll_interval_s=args.poll_s, window_s=args.window_s, fps=args.fps,
                        replicas=args.replicas, min_samples=args.min_samples, sim_processes=args.sim_processes,
                        seen_timeout_s=args.seen_timeout_s)
    from prefect.testing.utilities import prefect_test_harness

    from edgefleet.local.emulators import PubSubEmulator

    with _workdir(args.workdir) as tmp, PubSubEmulator(
            log_path=Path(tmp) / "pubsub.log") as emulator:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        coral = Path(os.environ.get("EDGEFLEET_CORAL_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared"
                     / "coral-test-data")
        world = make_world(Path(tmp) / "world", coral, project=emulator.project, topic="sim-telemetry",
                           subscription="sim-monitor", monitor={"count_bucket_s": 1.0})
        world.publish(OLD, promote=True)
        world.publish(GOOD)
        with monitors(world, scenario.replicas), prefect_test_harness(server_startup_timeout=120):
            outcome = run_scenario(world, scenario)
    print(_table(scenario, outcome, "python -m bench.fleet_sim_bench " + " ".join(sys.argv[1:] if argv is None
                                                                                    else argv)))


if __name__ == "__main__":
    main()
