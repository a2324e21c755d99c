"""Telemetry batched by time (issue 24): the spool sees a transaction per flush interval or per full batch."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edgefleet.device.telemetry.batching import RESERVED_ROOM, FlushClock, RecordBuffer
from edgefleet.device.telemetry.config import TelemetryConfig
from edgefleet.device.telemetry.service import TelemetryService
from edgefleet.kernel.contracts.telemetry import ModelRef, TelemetryMessage

MODEL = ModelRef(name="mobilenet", version="2.0.1", variant="cpu", backend="cpu")
NEVER_S = 3600.0  # a flush interval no test outlives: only full batches and stop() spool
WAIT_S = 30.0
QUIET_S = 0.5  # how long a wake-up that must not come is waited for


def test_flush_clock_spools_everything_when_due_and_only_full_batches_before() -> None:
    clock = FlushClock(interval_s=1.0, batch_size=3)
    assert clock.take([1, 2], now=10.0) == ([[1, 2]], [])  # the first flush is due at once
    assert clock.wait_s(10.25) == pytest.approx(0.75)
    assert clock.take([3, 4, 5, 6, 7], now=10.5) == ([[3, 4, 5]], [6, 7])  # not due: the full batch only
    assert clock.take([6, 7], now=10.9) == ([], [6, 7])
    assert clock.take([6, 7, 8, 9], now=11.0) == ([[6, 7, 8], [9]], [])  # due: all, in batches
    assert clock.wait_s(12.5) == 0.0
    assert clock.take([10], now=11.1, final=True) == ([[10]], [])  # stop: all, whatever the clock says


def test_a_buffer_full_of_ordinary_records_still_takes_reserved_ones_in_order() -> None:
    buffer: RecordBuffer[str] = RecordBuffer(capacity=2, wake_at=2)
    assert [buffer.put(r) for r in ("frame-1", "frame-2", "frame-3")] == [True, True, False]
    assert buffer.put("rollback", reserved=True)  # a lifecycle event behind a stalled writer is kept...
    assert not buffer.put("frame-4")  # ...and its room is never taken by ordinary records
    assert sum(buffer.put(f"event-{n}", reserved=True) for n in range(RESERVED_ROOM + 5)) == RESERVED_ROOM - 1
    drained = buffer.drain()
    assert drained[:3] == ["frame-1", "frame-2", "rollback"] and len(drained) == 2 + RESERVED_ROOM


def test_record_buffer_is_bounded_ordered_and_wakes_on_a_full_batch() -> None:
    buffer: RecordBuffer[int] = RecordBuffer(capacity=5, wake_at=3)
    woke = threading.Event()

    def consumer() -> None:
        buffer.wait(NEVER_S)
        woke.set()

    thread = threading.Thread(target=consumer, daemon=True)
    thread.start()
    assert buffer.put(1) and buffer.put(2)
    assert not woke.wait(QUIET_S)  # two records wake nobody (a buffer that woke on every record would, by now)...
    assert buffer.put(3)
    assert woke.wait(WAIT_S)  # ...a full batch does
    assert [buffer.put(n) for n in (4, 5, 6)] == [True, True, False]  # bounded: the sixth is refused
    assert buffer.drain() == [1, 2, 3, 4, 5] and len(buffer) == 0
    thread.join(WAIT_S)


def test_a_full_batch_is_spooled_without_waiting_for_the_interval(tmp_path: Path, wait) -> None:
    config = TelemetryConfig(mode="every", flush_interval_s=NEVER_S, append_batch_size=4, idle_poll_s=0.1)
    service = TelemetryService(config, tmp_path / "spool.sqlite", "dev-b").start()
    wait(lambda: service.stats().last_seq == 1, what="`started`, spooled by the first flush")
    for latency in range(6):
        assert service.record_inference(MODEL, float(latency))
    wait(lambda: service.stats().last_seq == 5, what="the full batch of four to be spooled")
    stats = service.stop(drain_timeout_s=10.0)
    assert stats.last_seq == 8  # stop() spools the two that waited for the interval, then `stopped`
    messages = [TelemetryMessage.from_json_bytes(line)
                for line in (tmp_path / "telemetry.jsonl").read_bytes().splitlines()]
    assert [message.seq for message in messages] == list(range(1, 9))
    assert [message.inference.latency_ms_max for message in messages if message.kind == "inference"] == [
        0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # in the order recorded


def test_flush_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="flush_interval_s"):
        TelemetryConfig(flush_interval_s=0)


def test_a_batch_that_fails_to_build_is_logged_and_telemetry_goes_on(tmp_path: Path, wait) -> None:
    calls = []

    def signer(data: bytes, device_id: str, epoch: int) -> dict[str, str]:
        calls.append(device_id)
        if len(calls) == 1:
            raise RuntimeError("a bug in the first batch")
        return {"signature": "test"}

    config = TelemetryConfig(mode="every", flush_interval_s=NEVER_S, idle_poll_s=0.1)
    service = TelemetryService(config, tmp_path / "spool.sqlite", "dev-c", signer=signer).start()
    wait(lambda: len(calls) == 1, what="the first batch (`started`) to fail")
    assert service.record_inference(MODEL, 1.0)
    stats = service.stop(drain_timeout_s=10.0)
    messages = [TelemetryMessage.from_json_bytes(line)
                for line in (tmp_path / "telemetry.jsonl").read_bytes().splitlines()]
    assert [(message.seq, message.kind) for message in messages] == [(1, "inference"), (2, "event")]
    assert stats.last_seq == 2  # the failed batch used no seq: no gap
