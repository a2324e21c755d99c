"""The shadow wave's arithmetic on the device (issue 25): which frames the candidate also runs on, and what the
pairs of answers add up to. Pure (no I/O, no threads of its own); `ShadowTally` takes a lock because the shadow
thread adds to it while the telemetry writer and the status loop read it.

A pair is one frame both models answered: the primary's results (what the device acted on) and the candidate's
(never acted on). It counts in `ShadowSummary` (telemetry schema 3): top-1 agreement, both models'
distributions on the same frames, and the histogram of the candidate's top-1 score minus the primary's.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.kernel.contracts.distributions import BucketCount, DistributionAccumulator
from edgefleet.kernel.contracts.telemetry import ModelRef, ShadowSummary, score_delta_bucket

SHADOW_REPORT_FILE = "shadow.json"
"""In the agent root: the candidate's cumulative shadow summary since it was loaded (the rollout reads it)."""
SHADOW_REPORT_SCHEMA = "edgefleet.shadow/1"
SHARE_RESOLUTION = 10_000
"""The share is kept in basis points (integer arithmetic: no float drift over millions of frames)."""


class ShareSampler:
    """Chooses `share` of the frames, evenly spread (every 10th at 0.1): deterministic, a float add per frame.

    Evenly spaced rather than random so a short window holds its share, and nothing on the inference thread
    draws random numbers."""

    def __init__(self, share: float) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"shadow share must be within 0..1, got {share}")
        self.share = share
        self._parts = round(share * SHARE_RESOLUTION)  # integers: exactly the share over any whole period
        self._seen = 0

    def take(self) -> bool:
        """True when this frame is one of the share."""
        before = self._seen * self._parts // SHARE_RESOLUTION
        self._seen += 1
        return self._seen * self._parts // SHARE_RESOLUTION > before


def top1(results: Sequence[object]) -> tuple[int | None, float]:
    """(class id, score) of the best result (results come best first); (None, 0) when there is none."""
    if not results:
        return None, 0.0
    best = results[0]
    return best.id, float(best.score)  # type: ignore[attr-defined]


class _Counts:
    """The pairs of one span (a telemetry window, or everything since the candidate was loaded)."""

    def __init__(self) -> None:
        self.frames = 0
        self.errors = 0
        self.agree = 0
        self.primary = DistributionAccumulator()
        self.candidate = DistributionAccumulator()
        self.deltas: Counter[int] = Counter()

    def add(self, primary: Sequence[object], primary_ms: float, candidate: Sequence[object], candidate_ms: float,
            detector: bool) -> None:
        self.frames += 1
        (primary_id, primary_score), (candidate_id, candidate_score) = top1(primary), top1(candidate)
        self.agree += primary_id == candidate_id
        self.primary.add(primary_ms, primary, detector=detector)
        self.candidate.add(candidate_ms, candidate, detector=detector)
        self.deltas[score_delta_bucket(candidate_score - primary_score)] += 1

    def summary(self, model: ModelRef) -> ShadowSummary:
        answered = self.frames > self.errors
        return ShadowSummary(
            model=model, frames=self.frames, errors=self.errors, top1_agree=self.agree,
            primary=self.primary.snapshot() if answered else None,
            candidate=self.candidate.snapshot() if answered else None,
            score_delta=[BucketCount(i=i, n=n) for i, n in sorted(self.deltas.items())])


class ShadowTally:
    """Pairs of one candidate: per telemetry window (`take_window`) and in total (`total`)."""

    def __init__(self, model: ModelRef) -> None:
        self.model = model
        self._lock = threading.Lock()
        self._window = _Counts()
        self._total = _Counts()

    def add(self, primary: Sequence[object], primary_ms: float, candidate: Sequence[object], candidate_ms: float,
            *, detector: bool) -> None:
        """One frame both models answered."""
        with self._lock:
            for counts in (self._window, self._total):
                counts.add(primary, primary_ms, candidate, candidate_ms, detector)

    def add_error(self) -> None:
        """One sampled frame the candidate failed on."""
        with self._lock:
            for counts in (self._window, self._total):
                counts.frames += 1
                counts.errors += 1

    def take_window(self, max_frames: int) -> ShadowSummary | None:
        """The window's summary, then a new window; None when it is empty, or holds more frames than the
        telemetry window it goes into (`max_frames`, its count: the candidate lags the primary by its queue),
        in which case it is kept for the next one."""
        with self._lock:
            frames = self._window.frames
            if frames == 0 or frames > max_frames:
                return None
            summary = self._window.summary(self.model)
            self._window = _Counts()
        return summary

    def total(self) -> ShadowSummary:
        with self._lock:
            return self._total.summary(self.model)


class ShadowReport(BaseModel):
    """`<root>/shadow.json`: what the candidate did since it was loaded, for the rollout's shadow wave."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: str = Field(default=SHADOW_REPORT_SCHEMA, alias="schema")
    device_id: str
    model: str
    candidate: str | None = Field(default=None, description="the version named as the shadow; None: none")
    primary: str | None = Field(default=None, description="the primary version the pairs were made with")
    share: float = Field(ge=0, le=1)
    since: datetime | None = None
    updated_at: datetime
    dropped: int = Field(default=0, ge=0, description="sampled frames dropped: the candidate was behind")
    summary: ShadowSummary | None = None
    error: str | None = Field(default=None, description="why the candidate does not run, when it does not")
