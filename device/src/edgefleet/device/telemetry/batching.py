"""The hand-over from the agent's loop to the telemetry writer, and when the writer spools.

The loop records one inference per frame; at Edge TPU speed that is a thousand or more a second. A
`queue.Queue` wakes its consumer on every put (a lock, a condition notify, a thread switch and a GIL
hand-over per frame); `RecordBuffer` does not: a put is a bounded deque append, and the writer sleeps until
its own deadline (`flush_interval_s`), a full batch (`append_batch_size` records waiting) or `wake()`.

`FlushClock` is the pure part: when the writer is due to append what it holds, so the spool sees at most one
transaction per flush interval (plus one per full batch), and a record waits at most one flush interval
before it is in the spool: the window a power cut can take.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# Room kept beyond a buffer's capacity for the rare records that must not be lost to a flood of frequent ones
# (the agent's lifecycle events behind a stalled writer's inference records): a put with `reserved=True` is
# refused only when this many of them wait beyond the capacity as well.
RESERVED_ROOM = 1_000


class RecordBuffer(Generic[T]):
    """A bounded FIFO for one producer at a time (callers serialize `put`) and one consumer (`drain`).

    Args:
        capacity: records held at most; `put` refuses beyond it.
        wake_at: the consumer is woken when this many records wait (a full batch).
    """

    def __init__(self, capacity: int, wake_at: int) -> None:
        if capacity < 1 or wake_at < 1:
            raise ValueError(f"capacity and wake_at must be at least 1, got {capacity} and {wake_at}")
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._wake_at = wake_at
        self._event = threading.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, *, reserved: bool = False) -> bool:
        """Appends `item` (never blocks, wakes nobody unless a batch is full); False when full. A `reserved`
        item may also take the `RESERVED_ROOM` beyond the capacity, which ordinary items never fill."""
        items = self._items
        if len(items) >= self._capacity + (RESERVED_ROOM if reserved else 0):
            return False
        items.append(item)
        if len(items) == self._wake_at:
            self._event.set()
        return True

    def wait(self, timeout_s: float) -> None:
        """Sleeps until `timeout_s` passed, a batch is full or `wake()` was called."""
        self._event.wait(timeout_s)
        self._event.clear()  # a wake lost here is harmless: the caller drains next, which sees its records

    def wake(self) -> None:
        self._event.set()

    def drain(self) -> list[T]:
        """Removes and returns every record waiting, oldest first."""
        pop = self._items.popleft
        return [pop() for _ in range(len(self._items))]


@dataclass
class FlushClock:
    """When the writer appends: once per `interval_s` (what it holds, in batches of `batch_size`) and, in
    between, only full batches. Times are `time.monotonic()` seconds."""

    interval_s: float
    batch_size: int
    last_flush: float = float("-inf")

    def wait_s(self, now: float) -> float:
        """How long the writer may sleep before the next flush is due (0: due now)."""
        return max(0.0, self.last_flush + self.interval_s - now)

    def take(self, pending: list[T], now: float, *, final: bool = False) -> tuple[list[list[T]], list[T]]:
        """Splits `pending` into the batches to append now and what waits for the next flush.

        Everything goes when the flush is due (or `final`); otherwise only full batches.
        """
        due = final or now >= self.last_flush + self.interval_s
        if due:
            self.last_flush = now
            cut = len(pending)
        else:
            cut = len(pending) - len(pending) % self.batch_size
        size = self.batch_size
        return [pending[start:min(start + size, cut)] for start in range(0, cut, size)], pending[cut:]
