"""Loop statistics: latency percentiles and frame rate over a sliding window. Pure maths, no I/O."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

from edgefleet.kernel.contracts.distributions import DistributionAccumulator, Distributions


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
    version: str | None = None
    version_frames: int = 0
    version_errors: int = 0
    dist: Distributions | None = None


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
        # Since the running version started: what the rollout reads over SSH when no fleet monitor is there.
        self._version: str | None = None
        self._version_frames = 0
        self._version_errors = 0
        self._dist = DistributionAccumulator()

    def _switch(self, version: str | None) -> None:
        if version != self._version:
            self._version, self._version_frames, self._version_errors = version, 0, 0
            self._dist.reset()

    def record(self, finished_at: float, latency_ms: float, results: Sequence[object] = (),
               version: str | None = None, *, detector: bool = False) -> None:
        with self._lock:
            self.frames += 1
            self._latencies.append(latency_ms)
            self._times.append(finished_at)
            self._switch(version)
            self._version_frames += 1
            self._dist.add(latency_ms, results, detector=detector)

    def record_error(self, version: str | None = None) -> None:
        with self._lock:
            self.errors += 1
            self._switch(version)
            self._version_errors += 1

    def snapshot(self) -> LoopSnapshot:
        with self._lock:
            latencies = sorted(self._latencies)
            times = list(self._times)
            frames, errors = self.frames, self.errors
            version, version_frames, version_errors = self._version, self._version_frames, self._version_errors
            dist = self._dist.snapshot() if version is not None else None
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        fps = (len(times) - 1) / span if span > 0 else 0.0
        return LoopSnapshot(frames, errors, fps, percentile(latencies, 0.5), percentile(latencies, 0.95),
                            latencies[-1] if latencies else 0.0, version, version_frames, version_errors, dist)
