"""Loop statistics: latency percentiles and frame rate over a sliding window. Pure maths, no I/O."""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import NamedTuple


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for no values).

    Args:
        sorted_values: ascending values.
        fraction: 0..1, e.g. 0.95.
    """
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class LoopSnapshot(NamedTuple):
    """What the status file and telemetry report about the loop."""

    frames: int
    errors: int
    fps: float
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms_max: float


class LoopStats:
    """Thread-safe counters fed by the inference stage, read by the status writer.

    Args:
        window: how many recent inferences the percentiles and fps cover.
    """

    def __init__(self, window: int) -> None:
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=window)
        self._times: deque[float] = deque(maxlen=window)
        self.frames = 0
        self.errors = 0

    def record(self, finished_at: float, latency_ms: float) -> None:
        with self._lock:
            self.frames += 1
            self._latencies.append(latency_ms)
            self._times.append(finished_at)

    def record_error(self) -> None:
        with self._lock:
            self.errors += 1

    def snapshot(self) -> LoopSnapshot:
        with self._lock:
            latencies = sorted(self._latencies)
            times = list(self._times)
            frames, errors = self.frames, self.errors
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        fps = (len(times) - 1) / span if span > 0 else 0.0
        return LoopSnapshot(frames, errors, fps, percentile(latencies, 0.5), percentile(latencies, 0.95),
                            latencies[-1] if latencies else 0.0)
