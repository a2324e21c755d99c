"""The bounded queue between the capture and inference stages, waking the capture stage once per half queue.

With `queue.Queue`, a capture stage that is faster than inference blocks on a full queue and is woken after
every frame the inference stage takes: an OS wake-up and a GIL hand-over per frame, which at Edge TPU speed
(a frame every 0.3-3 ms) costs as much as the frame. Here a producer that met a full queue sleeps until the
queue is down to half, then refills it in a burst. Frames stay in order and none is dropped.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FrameQueue(Generic[T]):
    """A bounded FIFO for one producer and one consumer.

    Args:
        capacity: items held at most; a producer that finds it full waits until half of them are taken.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._resume_at = capacity // 2
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._producer_waiting = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, timeout_s: float) -> bool:
        """Appends `item`; when the queue is full, first waits (up to `timeout_s`) until half of it was taken.

        Returns:
            False when the queue was still full after `timeout_s` (nothing was added).
        """
        with self._lock:
            if len(self._items) >= self._capacity:
                self._producer_waiting = True
                try:
                    self._not_full.wait_for(lambda: len(self._items) <= self._resume_at, timeout_s)
                finally:
                    self._producer_waiting = False
                if len(self._items) >= self._capacity:
                    return False
            self._items.append(item)
            self._not_empty.notify()  # a no-op unless the consumer waits
            return True

    def get(self, timeout_s: float) -> T:
        """Takes the oldest item, waiting up to `timeout_s` for one.

        Raises:
            queue.Empty: nothing came within `timeout_s`.
        """
        with self._lock:
            if not self._items and not self._not_empty.wait_for(lambda: len(self._items) > 0, timeout_s):
                raise queue.Empty
            item = self._items.popleft()
            if self._producer_waiting and len(self._items) <= self._resume_at:
                self._producer_waiting = False  # one wake-up: the gets until it runs do not notify again
                self._not_full.notify()
            return item
