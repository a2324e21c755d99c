"""Monitor ingest with 2 replicas against 1, both on PostgreSQL (issue 23, item 3), fed by simulated devices.

    python -m bench.sim_ingest_bench [--devices 2000] [--seconds 20] [--replicas 1,2]

For each replica count: a fresh database on a throw-away PostgreSQL 15 (`edgefleet.local.postgres`), a fresh
topic and subscription on the Pub/Sub emulator; the simulated devices (`edgefleet.local.simfleet`, signed
schema 2 summaries) fill the subscription for `--seconds`, then that many `edgefleet monitor` processes start on
it and the applied messages (the sum of every device's highest seq: each message applied once) are counted until
all are in. Rate = messages applied per second between the first and the last applied (monitor start-up not
counted). The ratio 2 replicas / 1 is the result (goal: above 1, several monitors share one subscription).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.fleet_model import MODELS, make_fleet
from bench.fleet_sim_bench import OLD, Scenario, monitors
from edgefleet.flows.registry import open_registry_writer
from edgefleet.kernel.signing import load_private_key
from edgefleet.local.simfleet import FleetSpec, SimFleet, SimSettings, enrol_fleet
from edgefleet.local.simfleet.world import SimWorld, make_world

DRAIN_TIMEOUT_S = 600.0
LOOK_S = 0.5


def _applied(url: str) -> int:
    import psycopg

    try:
        with psycopg.connect(url) as connection:
            row = connection.execute("SELECT coalesce(sum(max_seq), 0) FROM devices").fetchone()
    except psycopg.Error:  # the first monitor has not created the tables yet
        return 0
    return int(row[0]) if row else 0


def fill(world: SimWorld, scenario: Scenario, seconds: float) -> int:
    """Runs the simulated devices for `seconds` (no monitor reading yet); the messages they published."""
    traits = make_fleet(np.random.default_rng(scenario.seed), MODELS[scenario.fleet_model], scenario.devices).devices
    devices = enrol_fleet(open_registry_writer(world.registry), load_private_key(world.enrolment_key), "ing", traits)
    fleet = SimFleet(FleetSpec(registry=str(world.registry), public_key=str(world.release_public),
                               project=world.project, topic=world.topic, devices=devices,
                               settings=SimSettings(model=world.model, channel=world.channel,
                                                    poll_interval_s=scenario.poll_interval_s,
                                                    window_s=scenario.window_s, fps=scenario.fps)))
    stop = threading.Event()
    runner = threading.Thread(target=fleet.run, args=(stop,))
    runner.start()
    time.sleep(seconds)
    stop.set()
    runner.join()
    return fleet.published


def drain(world: SimWorld, url: str, replicas: int, total: int) -> tuple[float, int]:
    """Starts `replicas` monitors; (messages per second applied, applied) once all `total` are in."""
    first: tuple[float, int] | None = None
    last = (time.monotonic(), 0)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    with monitors(world, replicas):
        while last[1] < total and time.monotonic() < deadline:
            time.sleep(LOOK_S)
            last = (time.monotonic(), _applied(url))
            if first is None and last[1] > 0:
                first = last
    if first is None or last[0] <= first[0]:
        return 0.0, last[1]
    return (last[1] - first[1]) / (last[0] - first[0]), last[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--replicas", default="1,2")
    args = parser.parse_args(argv)
    scenario = Scenario(devices=args.devices, poll_interval_s=30.0, window_s=2.0, fps=2.0)
    from edgefleet.local.emulators import PubSubEmulator
    from edgefleet.local.postgres import postgres_server

    coral = Path(os.environ.get("EDGEFLEET_CORAL_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared"
                 / "coral-test-data")
    rates = {}
    with tempfile.TemporaryDirectory(prefix="sim-ingest-") as tmp, PubSubEmulator(
            log_path=Path(tmp) / "pubsub.log") as emulator, postgres_server() as server:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        for replicas in (int(item) for item in args.replicas.split(",")):
            url = server.new_database()
            world = make_world(Path(tmp) / f"r{replicas}", coral, project=emulator.project,
                               topic=f"ingest-{replicas}", subscription=f"ingest-{replicas}-monitor", store_url=url)
            world.publish(OLD, promote=True)
            total = fill(world, scenario, args.seconds)
            rates[replicas], applied = drain(world, url, replicas, total)
            print(f"{replicas} monitor(s) on PostgreSQL: {applied} of {total} messages applied, "
                  f"{rates[replicas]:.0f} msg/s", flush=True)
    if 1 in rates and 2 in rates and rates[1] > 0:
        print(f"ratio 2 replicas / 1: {rates[2] / rates[1]:.2f}x ({args.devices} simulated devices, "
              f"command: python -m bench.sim_ingest_bench {' '.join(argv or [])})")


if __name__ == "__main__":
    main()
