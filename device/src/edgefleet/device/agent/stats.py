"""Loop statistics: latency percentiles and frame rate over a sliding window. Pure maths, no I/O."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence

from edgefleet.kernel.contracts.distributions import DistributionAccumulator
from edgefleet.kernel.contracts.status import LoopCounters
from edgefleet.kernel.contracts.telemetry import MAX_RELEASE_CLASSES


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


class LoopSnapshot(LoopCounters):
    """The loop's counters now (the status's `LoopCounters`), with the version they count and the worst latency."""

    version: str | None = None
    """The version `version_frames`, `version_errors` and `dist` count (the last one that ran)."""
    latency_ms_max: float = 0.0

    def status_counters(self, running: str | None) -> LoopCounters:
        """What the status reports while `running` is the active version: the per-version counts only when they
        are its own (right after a swap they still count the previous version), values rounded for reading."""
        own = self.version == running
        return LoopCounters(
            frames=self.frames, errors=self.errors, fps=round(self.fps, 2),
            latency_ms_p50=round(self.latency_ms_p50, 3), latency_ms_p95=round(self.latency_ms_p95, 3),
            version_frames=self.version_frames if own else 0, version_errors=self.version_errors if own else 0,
            dist=self.dist if own else None)


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
        self._dist = DistributionAccumulator(top_k=MAX_RELEASE_CLASSES)  # every class, as telemetry 3

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
        return LoopSnapshot(frames=frames, errors=errors, fps=fps, latency_ms_p50=percentile(latencies, 0.5),
                            latency_ms_p95=percentile(latencies, 0.95), version_frames=version_frames,
                            version_errors=version_errors, dist=dist, version=version,
                            latency_ms_max=latencies[-1] if latencies else 0.0)
