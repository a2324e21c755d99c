"""Which frames the spot check sends (pure; the agent's inference thread calls `SpotSampler.take` per frame).

A frame is in the sample when the hash of (device id, run, frame sequence) falls below the share: reproducible
(anyone with the ids can recompute the sample), spread over the run, and blind to the frame's content and to the
model's answer, so the labelled accuracy estimates the accuracy on all frames (the caps then keep the first
frames of the sample in each hour and day: a cap leaves out frames by time, never by answer, and says how many).
Per frame: a counter, one BLAKE2b of 8 bytes (continuing the run's hashed prefix), one integer comparison; the
clock is read only for a frame in the sample.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

HASH_BYTES = 8
HASH_SPACE = 1 << (8 * HASH_BYTES)
HOUR_S = 3600
DAY_S = 86400


def share_threshold(share: float) -> int:
    """The hash value below which a frame is sampled: `share` of the 64-bit hash space."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"spot check share must be within (0, 1], got {share}")
    return min(HASH_SPACE, round(share * HASH_SPACE))


SEQUENCE_BYTES = 8


def run_hasher(device_id: str, run: str) -> hashlib.blake2b:
    """BLAKE2b (8-byte digest) fed `<device id>/<run>/`: each frame's hash continues a copy of it."""
    return hashlib.blake2b(f"{device_id}/{run}/".encode(), digest_size=HASH_BYTES)


def frame_hash(hasher: hashlib.blake2b, sequence: int) -> int:
    """The frame's 64-bit hash: BLAKE2b of `<device id>/<run>/` and the sequence as 8 big-endian bytes, the same
    for the same (device, run, sequence) everywhere."""
    frame = hasher.copy()
    frame.update(sequence.to_bytes(SEQUENCE_BYTES, "big"))
    return int.from_bytes(frame.digest(), "big")


def in_sample(device_id: str, run: str, sequence: int, threshold: int) -> bool:
    """Whether frame `sequence` of `run` on `device_id` is in the sample (`threshold`: `share_threshold`)."""
    return frame_hash(run_hasher(device_id, run), sequence) < threshold


@dataclass
class RateCap:
    """At most `per_hour` frames in each clock hour and `per_day` in each UTC day (epoch seconds in)."""

    per_hour: int
    per_day: int
    _hour: int = -1
    _day: int = -1
    _in_hour: int = 0
    _in_day: int = 0

    def admit(self, now_s: float) -> bool:
        """True (and counted) when one more frame fits in the hour and the day of `now_s`."""
        hour, day = int(now_s // HOUR_S), int(now_s // DAY_S)
        if hour != self._hour:
            self._hour, self._in_hour = hour, 0
        if day != self._day:
            self._day, self._in_day = day, 0
        if self._in_hour >= self.per_hour or self._in_day >= self.per_day:
            return False
        self._in_hour += 1
        self._in_day += 1
        return True


class SpotSampler:
    """Numbers the frames of one run and says which go to the spot check (one thread calls `take`)."""

    def __init__(self, device_id: str, run: str, share: float, cap: RateCap) -> None:
        self.device_id, self.run = device_id, run
        self._hasher = run_hasher(device_id, run)
        self.threshold = share_threshold(share)
        self.cap = cap
        self.sequence = -1  # the last frame's number
        self.capped = 0  # frames in the sample the caps left out

    def take(self, now_s: float | None = None) -> int | None:
        """Numbers the next frame; its sequence when it is in the sample and the caps admit it, else None.

        `now_s`: epoch seconds for the caps (read from the clock only for a frame in the sample, when None)."""
        self.sequence += 1
        if frame_hash(self._hasher, self.sequence) >= self.threshold:
            return None
        if not self.cap.admit(time.time() if now_s is None else now_s):
            self.capped += 1
            return None
        return self.sequence
