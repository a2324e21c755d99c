"""The capture -> inference hand-over (issue 24): in order, bounded, and the capture stage woken per half queue."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from edgefleet.device.agent.handoff import FrameQueue

WAIT_S = 30.0
BLOCKED_S = 3600.0  # what a blocked call is given: only a wake-up ends it within WAIT_S (its own timeout never)


def wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_frames_come_out_in_order_and_a_full_queue_refuses_after_its_timeout() -> None:
    frames: FrameQueue[int] = FrameQueue(3)
    assert all(frames.put(n, 0.0) for n in (1, 2, 3))
    assert not frames.put(4, 0.01)  # full: nothing added, nothing dropped
    assert [frames.get(0.0) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(queue.Empty):
        frames.get(0.01)


def test_a_producer_that_met_a_full_queue_resumes_when_half_of_it_was_taken() -> None:
    frames: FrameQueue[int] = FrameQueue(4)
    for n in range(1, 5):
        assert frames.put(n, 0.0)
    added: list[bool] = []
    put = threading.Thread(target=lambda: added.append(frames.put(5, BLOCKED_S)), daemon=True)
    put.start()
    assert frames.get(0.0) == 1
    time.sleep(0.2)
    assert len(frames) == 3 and put.is_alive()  # three left: above half, the producer sleeps on
    assert frames.get(0.0) == 2
    put.join(WAIT_S)  # two left: it is woken and adds its frame
    assert not put.is_alive() and added == [True]
    assert [frames.get(0.0) for _ in range(3)] == [3, 4, 5]


def test_a_waiting_consumer_gets_the_next_frame() -> None:
    frames: FrameQueue[str] = FrameQueue(2)
    got: list[str] = []
    consumer = threading.Thread(target=lambda: got.append(frames.get(BLOCKED_S)), daemon=True)
    consumer.start()
    wait_until(lambda: consumer.is_alive(), "the consumer to wait")
    assert frames.put("frame", 0.0)
    consumer.join(WAIT_S)
    assert got == ["frame"]
