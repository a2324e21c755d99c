"""One monitor-like writer process for the concurrency tests: delivers every message of a small fleet to the
fleet state in its own shuffled order and batch sizes, through `process_batch` (the monitor's path: apply,
commit, then ack), after telling it is ready and waiting for a start signal, so that two writers really race.

Run: python race_writer.py STORE_URL GO_FILE SEED DEVICES SEQS; prints a JSON object of outcome counts.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import telemetry  # noqa: E402

from edgefleet.monitor.batch import process_batch  # noqa: E402
from edgefleet.monitor.store import open_store  # noqa: E402

LATENCY_WINDOW = 1000  # larger than the messages of a device: every sample stays
MAX_BATCH = 8
START_POLL_S = 0.01
NEW_VERSION = "1.1.0"  # the last seq of each device moves it to this version


@dataclass
class Delivery:
    """A delivered Pub/Sub message as `process_batch` uses it: body, id, attributes, ack/nack recorded."""

    data: bytes
    message_id: str
    attributes: dict[str, str]
    settled: list[str] = field(default_factory=list)

    def ack(self) -> None:
        self.settled.append("ack")

    def nack(self) -> None:
        self.settled.append("nack")


def fleet_messages(devices: int, seqs: int) -> list[Delivery]:
    deliveries = []
    for device in range(devices):
        for seq in range(1, seqs + 1):
            message = telemetry(f"race-{device}", seq, version=NEW_VERSION if seq == seqs else "1.0.0")
            deliveries.append(Delivery(message.to_json_bytes(), f"m-{device}-{seq}", message.attributes()))
    return deliveries


def main(url: str, go_file: str, seed: int, devices: int, seqs: int) -> None:
    rng = random.Random(seed)
    deliveries = fleet_messages(devices, seqs)
    rng.shuffle(deliveries)
    outcomes: Counter[str] = Counter()
    with open_store(url, latency_window=LATENCY_WINDOW, count_bucket_s=60.0) as store:
        Path(f"{go_file}.ready-{seed}").touch()  # imports done, connected: the race can start
        while not Path(go_file).exists():
            time.sleep(START_POLL_S)
        while deliveries:
            size = rng.randint(1, MAX_BATCH)
            batch, deliveries = deliveries[:size], deliveries[size:]
            for outcome in process_batch(store, batch, time.time()):
                outcomes[outcome.status.value] += 1
            outcomes.update(settled for delivery in batch for settled in delivery.settled)
    sys.stdout.write(json.dumps(outcomes) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
