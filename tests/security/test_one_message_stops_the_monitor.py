"""Finding 4, one message stops the monitor: a schema-valid message with `inference.count = 2^63 - 1` raised
OverflowError at commit; nothing was rolled back or nacked, the next good batch failed too, and redelivery
crashed it again. Every number of the contract is now bounded, and a batch that fails for any reason but a
transient store error is rolled back and retried message by message: only the bad message is refused.

The messages go through the monitor's real batch path (`process_batch`) into a real SQLite fleet state;
the Pub/Sub message objects are minimal stand-ins recording ack/nack (the emulator would add minutes for
10,000 messages and nothing to what is tested here)."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgefleet.kernel.contracts.telemetry import (
    Health,
    InferenceSummary,
    ModelRef,
    ResultItem,
    TelemetryMessage,
)
from edgefleet.monitor.batch import process_batch
from edgefleet.monitor.ingest import Status
from edgefleet.monitor.store import FleetStore, open_store

T0 = datetime(2026, 11, 30, tzinfo=UTC)
GOOD_DEVICES = [f"good-{index}" for index in range(8)]
FUZZ_MESSAGES = 10_000
BATCH = 50


@dataclass
class FakeMessage:
    """What `process_batch` uses of a Pub/Sub message; records every ack and nack."""

    data: bytes
    message_id: str
    attributes: dict[str, str]
    good: bool = False
    acks: int = 0
    nacks: int = 0

    def ack(self) -> None:
        self.acks += 1

    def nack(self) -> None:
        self.nacks += 1


def message(device_id: str, seq: int) -> TelemetryMessage:
    return TelemetryMessage(
        device_id=device_id,
        seq=seq,
        time=T0 + timedelta(seconds=seq),
        kind="inference",
        model=ModelRef(name="mobilenet", version="1.0.0", variant="cpu", backend="cpu"),
        inference=InferenceSummary(
            count=3, errors=0, latency_ms_p50=5.0, latency_ms_p95=6.0, latency_ms_max=7.0, fps=30.0,
            window_s=10.0, top=[ResultItem(id=1, label="cat", score=0.9)],
        ),
        health=Health(uptime_s=100.0 + seq, cpu_temp_c=50.0, mem_total_mb=1024.0, load_1m=0.5),
    )


HOSTILE_VALUES: list[object] = [
    2**63 - 1, 2**63, 2**64, 2**70, -(2**63) - 1, -1, 10**30, 1e308, -1e308, float("nan"), float("inf"),
    "x" * 100_000, "", None, [], {}, [[[[]]]], True, "1e400", 0.5, "\u0000", {"a": 1},
]
NUMERIC_PATHS = [
    ("seq",), ("schema",), ("inference", "count"), ("inference", "errors"), ("inference", "fps"),
    ("inference", "latency_ms_p50"), ("inference", "latency_ms_p95"), ("inference", "latency_ms_max"),
    ("inference", "window_s"), ("health", "uptime_s"), ("health", "spool_depth"), ("health", "spool_dropped"),
    ("health", "cpu_temp_c"), ("health", "mem_total_mb"), ("health", "load_1m"), ("model", "version"),
    ("device_id",), ("time",), ("kind",), ("inference", "top"),
]


def mutate(rng: random.Random, base: dict) -> bytes:
    """One hostile message derived from a valid one (it names a device of its own, never a good one)."""
    document = copy.deepcopy(base)
    choice = rng.randrange(6)
    if choice <= 2:
        for _ in range(rng.randint(1, 3)):
            *parents, leaf = rng.choice(NUMERIC_PATHS)
            target = document
            for part in parents:
                target = target.setdefault(part, {}) if isinstance(target, dict) else {}
            if isinstance(target, dict):
                target[leaf] = rng.choice(HOSTILE_VALUES)
        if document.get("device_id") in GOOD_DEVICES:
            document["device_id"] = "fuzz"
        return json.dumps(document, allow_nan=True, default=str).encode()
    if choice == 3:
        raw = bytearray(json.dumps(document).encode())
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw).replace(b"good-", b"fuzz-")
    if choice == 4:
        return json.dumps(document).encode()[: rng.randrange(1, 200)]
    return rng.choice([b"", b"null", b"[]", b"{}", b"[" * 5000, b'{"seq": ' + b"9" * 5000 + b"}", bytes(range(256))])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FleetStore]:
    with open_store(tmp_path / "fleet.sqlite", latency_window=4, count_bucket_s=60.0) as opened:
        # A message the store refuses whatever its content (as a full disk for one row, or a bug would):
        # a real SQLite trigger, so the commit-error path is exercised without patching the monitor.
        opened.connection.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON devices WHEN NEW.device_id = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'this row cannot be stored'); END"
        )
        opened.connection.commit()
        yield opened


def test_a_huge_count_is_refused_alone_and_the_monitor_goes_on(store: FleetStore) -> None:
    huge = json.loads(message("fuzz", 1).to_json_bytes())
    huge["inference"]["count"] = 2**63 - 1
    batch = [
        FakeMessage(message("good-0", 1).to_json_bytes(), "m1", {"device_id": "good-0"}, good=True),
        FakeMessage(json.dumps(huge).encode(), "m2", {"device_id": "fuzz"}),
        FakeMessage(message("good-0", 2).to_json_bytes(), "m3", {"device_id": "good-0"}, good=True),
    ]
    outcomes = process_batch(store, batch, 1.0)
    assert [o.status for o in outcomes] == [Status.APPLIED, Status.MALFORMED, Status.APPLIED]
    assert [(m.acks, m.nacks) for m in batch] == [(1, 0), (0, 1), (1, 0)]
    again = FakeMessage(message("good-0", 3).to_json_bytes(), "m4", {"device_id": "good-0"})
    assert process_batch(store, [again], 2.0)[0].status is Status.APPLIED  # the next batch is fine


def test_a_message_the_store_cannot_take_is_refused_alone_and_the_rest_of_its_batch_applied(
    store: FleetStore,
) -> None:
    batch = [
        FakeMessage(message("good-1", 1).to_json_bytes(), "a", {"device_id": "good-1"}),
        FakeMessage(message("poison", 1).to_json_bytes(), "b", {"device_id": "poison"}),
        FakeMessage(message("good-1", 2).to_json_bytes(), "c", {"device_id": "good-1"}),
    ]
    outcomes = process_batch(store, batch, 1.0)
    assert [o.status for o in outcomes] == [Status.APPLIED, Status.MALFORMED, Status.APPLIED]
    assert [(m.acks, m.nacks) for m in batch] == [(1, 0), (0, 1), (1, 0)]
    row = store.connection.execute("SELECT messages, max_seq FROM devices WHERE device_id = 'good-1'").fetchone()
    assert tuple(row) == (2, 2)
    (count,) = store.connection.execute("SELECT COUNT(*) FROM malformed WHERE message_id = 'b'").fetchone()
    assert count == 1


def test_fuzz_ten_thousand_hostile_messages_interleaved_with_good_ones(store: FleetStore) -> None:
    rng = random.Random(11)
    base = json.loads(message("fuzz", 1).to_json_bytes())
    hostile = [FakeMessage(mutate(rng, base), f"x{index}", {"device_id": "fuzz"}) for index in range(FUZZ_MESSAGES)]
    hostile += [
        FakeMessage(message("poison", index + 1).to_json_bytes(), f"p{index}", {"device_id": "poison"})
        for index in range(20)
    ]
    seqs = dict.fromkeys(GOOD_DEVICES, 0)
    good: list[FakeMessage] = []
    for index in range(len(hostile) // 5):
        device = GOOD_DEVICES[index % len(GOOD_DEVICES)]
        seqs[device] += 1
        good.append(FakeMessage(message(device, seqs[device]).to_json_bytes(), f"g{index}",
                                {"device_id": device}, good=True))
    stream = hostile + good
    rng.shuffle(stream)
    # good messages of one device keep their order (as one publisher's would mostly arrive)
    by_device: dict[str, list[FakeMessage]] = {device: [] for device in GOOD_DEVICES}
    for item in good:
        by_device[item.attributes["device_id"]].append(item)
    positions = {device: iter(items) for device, items in by_device.items()}
    stream = [next(positions[m.attributes["device_id"]]) if m.good else m for m in stream]

    for start in range(0, len(stream), BATCH):
        process_batch(store, stream[start : start + BATCH], float(start))  # never raises

    assert all((m.acks, m.nacks) == (1, 0) for m in good)
    assert all(m.acks + m.nacks == 1 for m in hostile)
    for device, count in seqs.items():
        row = store.connection.execute(
            "SELECT messages, max_seq, duplicates, lost FROM devices WHERE device_id = ?", (device,)
        ).fetchone()
        assert tuple(row) == (count, count, 0, 0), device
    (poisoned,) = store.connection.execute("SELECT COUNT(*) FROM devices WHERE device_id = 'poison'").fetchone()
    assert poisoned == 0
