"""The shadow wave's arithmetic on the device (issue 25): which frames the candidate also runs on, and what the
pairs of answers add up to. Pure (no I/O, no threads of its own); `ShadowTally` takes a lock because the shadow
thread adds to it while the telemetry writer and the status loop read it.

A pair is one frame both models answered: the primary's results (what the device acted on) and the candidate's
(never acted on). It counts in `ShadowSummary` (telemetry schema 3): top-1 agreement, both models'
distributions on the same frames, and the histogram of the candidate's top-1 score minus the primary's.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.kernel.contracts.distributions import BucketCount, DistributionAccumulator
from edgefleet.kernel.contracts.status import BootClock
from edgefleet.kernel.contracts.telemetry import MAX_RELEASE_CLASSES, ModelRef, ShadowSummary, score_delta_bucket

SHADOW_REPORT_FILE = "shadow.json"
"""In the agent root: the candidate's cumulative shadow summary since it was loaded (the rollout reads it)."""
SHADOW_REPORT_SCHEMA = "edgefleet.shadow/1"
MAX_PENDING_PAIRS = 10_000
"""Pairs waiting for a telemetry window, at most (the oldest go first): a bound for mode `every`, whose messages
carry no shadow block and so never take them."""
SHARE_RESOLUTION = 10_000
"""The share is kept in basis points (integer arithmetic: no float drift over millions of frames)."""
MIN_SHARE = 1 / SHARE_RESOLUTION
"""The smallest share above 0 (one frame in 10,000)."""


def check_share(share: float) -> float:
    """`share` when a sampler can take it (0, or 1/`SHARE_RESOLUTION`..1); else ValueError naming the fix."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"shadow share must be within 0..1, got {share}")
    if 0.0 < share < MIN_SHARE:
        raise ValueError(f"shadow share {share} is below the sampler's resolution {MIN_SHARE}: no frame would ever "
                         "be sampled (set 0 to turn the shadow off)")
    return share


class ShareSampler:
    """Chooses `share` of the frames, evenly spread (every 10th at 0.1): deterministic, a float add per frame.

    Evenly spaced rather than random so a short window holds its share, and nothing on the inference thread
    draws random numbers."""

    def __init__(self, share: float) -> None:
        self.share = check_share(share)
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
        # every class, as the telemetry builder keeps (a cut to each side's own top 32 made classes in one
        # side's list and not the other's look like disagreement)
        self.primary = DistributionAccumulator(top_k=MAX_RELEASE_CLASSES)
        self.candidate = DistributionAccumulator(top_k=MAX_RELEASE_CLASSES)
        self.deltas: Counter[int] = Counter()

    def add(self, primary: Sequence[object], primary_ms: float, candidate: Sequence[object], candidate_ms: float,
            detector: bool) -> None:
        self.frames += 1
        (primary_id, primary_score), (candidate_id, candidate_score) = top1(primary), top1(candidate)
        self.agree += primary_id == candidate_id
        self.primary.add(primary_ms, primary, detector=detector)
        self.candidate.add(candidate_ms, candidate, detector=detector)
        self.deltas[score_delta_bucket(candidate_score - primary_score)] += 1

    def add_pair(self, pair: _Pair) -> None:
        if pair.candidate is None:
            self.frames += 1
            self.errors += 1
        else:
            self.add(pair.primary, pair.primary_ms, pair.candidate, pair.candidate_ms, pair.detector)

    def summary(self, model: ModelRef) -> ShadowSummary:
        answered = self.frames > self.errors
        return ShadowSummary(
            model=model, frames=self.frames, errors=self.errors, top1_agree=self.agree,
            primary=self.primary.snapshot() if answered else None,
            candidate=self.candidate.snapshot() if answered else None,
            score_delta=[BucketCount(i=i, n=n) for i, n in sorted(self.deltas.items())])


class _Pair(NamedTuple):
    """One sampled frame as the candidate left it: both answers, or `candidate` None when it failed."""

    primary: Sequence[object]
    primary_ms: float
    candidate: Sequence[object] | None
    candidate_ms: float
    detector: bool


class ShadowTally:
    """Pairs of one candidate: per telemetry window (`take_window`) and in total (`total`).

    The total is counted as each pair arrives. A window's pairs wait as they are (a few tuples: at most the
    share of one telemetry window plus the shadow queue) until the telemetry writer takes at most as many as
    its window has frames, so a window never states more pairs than frames, and pairs the candidate finished
    late (it lags the primary by its queue) go into the next window instead of holding every later one back."""

    def __init__(self, model: ModelRef) -> None:
        self.model = model
        self._lock = threading.Lock()
        self._pending: deque[_Pair] = deque(maxlen=MAX_PENDING_PAIRS)
        self._total = _Counts()

    def add(self, primary: Sequence[object], primary_ms: float, candidate: Sequence[object], candidate_ms: float,
            *, detector: bool) -> None:
        """One frame both models answered."""
        self._keep(_Pair(primary, primary_ms, candidate, candidate_ms, detector))

    def add_error(self) -> None:
        """One sampled frame the candidate failed on."""
        self._keep(_Pair((), 0.0, None, 0.0, False))

    def _keep(self, pair: _Pair) -> None:
        with self._lock:
            self._pending.append(pair)
            self._total.add_pair(pair)

    def take_window(self, max_frames: int) -> ShadowSummary | None:
        """The summary of the oldest pending pairs, at most `max_frames` of them (the frame count of the
        telemetry window it goes into); None when none are pending. The rest wait for the next window."""
        with self._lock:
            taken = [self._pending.popleft() for _ in range(min(max_frames, len(self._pending)))]
        if not taken:
            return None
        window = _Counts()
        for pair in taken:
            window.add_pair(pair)
        return window.summary(self.model)

    def total(self) -> ShadowSummary:
        with self._lock:
            return self._total.summary(self.model)


class ShadowReport(BaseModel):
    """`<root>/shadow.json`: what the candidate did since it was loaded, for the rollout's shadow wave (which reads
    it as `edgefleet-agent shadow MODEL --json` prints it, `boot` left out)."""

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
    boot: BootClock | None = Field(
        default=None, description="this write on the boot's monotonic clock, with the boot id (issue 24: what "
        "`edgefleet-agent shadow` ages it by; absent from reports of earlier agents and where there is no boot id). "
        "On the device only: the shadow command's JSON leaves it out of `report` (rollouts read shadow/1 there)")
