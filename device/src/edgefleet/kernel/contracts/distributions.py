"""Mergeable distributions of what a model does: part of the telemetry (v2), the release manifest's
reference (v2) and the agent status.

Fixed buckets, so that two distributions from different devices, windows or the release's evaluation add
up bucket by bucket (the fleet monitor merges them per device, version and time bucket; the canary judge
pools a wave's devices). Sparse and Avro-friendly: lists of (index, count) records, not maps.

- latency: log-spaced buckets, `LATENCY_BUCKETS_PER_DECADE` per decade from `LATENCY_MIN_MS` up; bucket 0
  holds everything below the first edge and the last bucket everything above `LATENCY_MAX_MS`.
- top-1 score: `SCORE_BUCKETS` equal buckets over 0..1.
- classes: top-1 class counts (classifiers) or per-class detection counts (detectors), the `CLASS_TOP_K`
  most frequent ids, everything else summed in `class_other`. A 1,000-class model's summary stays at most
  K records (about 1.2 kB of Avro JSON at K=32).
- detections per frame (detectors): one bucket per count, the last one for `DETECTIONS_MAX` and more.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

LATENCY_MIN_MS = 0.05
LATENCY_MAX_MS = 10_000.0
LATENCY_BUCKETS_PER_DECADE = 10
SCORE_BUCKETS = 20
CLASS_TOP_K = 32
DETECTIONS_MAX = 32
MAX_CLASS_ID = 1_000_000
"""The largest class id (a model's label index) a distribution may name."""
MAX_BUCKET_COUNT = 2**53
"""The largest count of one bucket (JSON-safe); telemetry bounds it much lower by the inferences it covers."""

_DECADES = math.log10(LATENCY_MAX_MS / LATENCY_MIN_MS)
LATENCY_BUCKETS = int(math.ceil(_DECADES * LATENCY_BUCKETS_PER_DECADE)) + 2  # + underflow and overflow


DETECTION_BUCKETS = DETECTIONS_MAX + 1  # 0..DETECTIONS_MAX detections per frame (the last: that many or more)


def _check_indexes(name: str, indexes: list[int], size: int) -> None:
    if any(index >= size for index in indexes):
        raise ValueError(f"{name}: a bucket index is {max(indexes)}, the histogram has buckets 0..{size - 1}")
    if len(set(indexes)) != len(indexes):
        raise ValueError(f"{name}: a bucket index is listed more than once")


def latency_edges_ms() -> tuple[float, ...]:
    """Upper edges of the latency buckets 0..n-2 (the last bucket is open above)."""
    return tuple(LATENCY_MIN_MS * 10 ** (i / LATENCY_BUCKETS_PER_DECADE) for i in range(LATENCY_BUCKETS - 1))


def latency_bucket(latency_ms: float) -> int:
    """The bucket index of one latency."""
    if latency_ms < LATENCY_MIN_MS:
        return 0
    index = int(math.floor(math.log10(latency_ms / LATENCY_MIN_MS) * LATENCY_BUCKETS_PER_DECADE)) + 1
    return min(index, LATENCY_BUCKETS - 1)


def latency_bucket_mid_ms(index: int) -> float:
    """A representative latency of bucket `index` (geometric middle; the edge for the open buckets)."""
    if index <= 0:
        return LATENCY_MIN_MS
    low = LATENCY_MIN_MS * 10 ** ((index - 1) / LATENCY_BUCKETS_PER_DECADE)
    if index >= LATENCY_BUCKETS - 1:
        return low
    return low * 10 ** (0.5 / LATENCY_BUCKETS_PER_DECADE)


def score_bucket(score: float) -> int:
    """The bucket index of one top-1 score (scores outside 0..1, infinities too, are clamped; NaN is 0)."""
    if math.isnan(score):
        return 0
    return min(int(min(max(score, 0.0), 1.0) * SCORE_BUCKETS), SCORE_BUCKETS - 1)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BucketCount(_Frozen):
    """How many observations fell into bucket `i`."""

    i: int = Field(ge=0, le=MAX_CLASS_ID)
    n: int = Field(ge=0, le=MAX_BUCKET_COUNT)


class ClassCount(_Frozen):
    """How often class `id` was the top-1 class (classifier) or detected (detector)."""

    id: int = Field(ge=-1, le=MAX_CLASS_ID)
    n: int = Field(ge=0, le=MAX_BUCKET_COUNT)


def _sparse(counts: Mapping[int, int]) -> list[BucketCount]:
    return [BucketCount(i=i, n=n) for i, n in sorted(counts.items()) if n > 0]


def _dense(buckets: Iterable[BucketCount]) -> dict[int, int]:
    out: Counter[int] = Counter()
    for bucket in buckets:
        out[bucket.i] += bucket.n
    return dict(out)


class Distributions(_Frozen):
    """The distributions of one window (or a merge of windows): see the module docstring."""

    latency: list[BucketCount] = Field(default_factory=list[BucketCount], description="latency histogram (log buckets)")
    score: list[BucketCount] = Field(default_factory=list[BucketCount], description="top-1 score histogram over 0..1")
    classes: list[ClassCount] = Field(default_factory=list[ClassCount], description="top-K class counts")
    class_other: int = Field(default=0, ge=0, le=MAX_BUCKET_COUNT, description="counts of the classes beyond the top K")
    detections: list[BucketCount] = Field(default_factory=list[BucketCount],
                                          description="detections per frame (detectors)")

    @model_validator(mode="after")
    def _fixed_buckets(self) -> Distributions:
        """Each histogram names each of its fixed buckets at most once (issue 20, item 4): so a histogram has
        at most its number of buckets, whatever a sender writes."""
        for name, items, size in (("latency", self.latency, LATENCY_BUCKETS), ("score", self.score, SCORE_BUCKETS),
                                  ("detections", self.detections, DETECTION_BUCKETS)):
            _check_indexes(name, [item.i for item in items], size)
        ids = [item.id for item in self.classes]
        if len(set(ids)) != len(ids):
            raise ValueError("classes: a class id is listed more than once")
        return self

    # --- views -------------------------------------------------------------------------------------------
    def latency_counts(self) -> dict[int, int]:
        return _dense(self.latency)

    def score_counts(self) -> dict[int, int]:
        return _dense(self.score)

    def detection_counts(self) -> dict[int, int]:
        return _dense(self.detections)

    def class_counts(self) -> dict[int, int]:
        """id -> count; the ids beyond the top K under -1 ("other")."""
        out: Counter[int] = Counter()
        for item in self.classes:
            out[item.id] += item.n
        if self.class_other:
            out[-1] += self.class_other
        return dict(out)

    @property
    def samples(self) -> int:
        """Observations in the latency histogram (successful inferences)."""
        return sum(bucket.n for bucket in self.latency)

    def is_empty(self) -> bool:
        return not (self.latency or self.score or self.classes or self.class_other or self.detections)


def build(*, latency: Mapping[int, int] | None = None, score: Mapping[int, int] | None = None,
          classes: Mapping[int, int] | None = None, detections: Mapping[int, int] | None = None,
          top_k: int = CLASS_TOP_K) -> Distributions:
    """Distributions from dense counts; classes cut to the `top_k` most frequent (ties: lower id first)."""
    ranked = sorted((classes or {}).items(), key=lambda item: (-item[1], item[0]))
    kept = [(cid, n) for cid, n in ranked[:top_k] if n > 0 and cid >= 0]
    other = sum(n for _, n in ranked if n > 0) - sum(n for _, n in kept)
    return Distributions(latency=_sparse(latency or {}), score=_sparse(score or {}),
                         classes=[ClassCount(id=cid, n=n) for cid, n in sorted(kept)], class_other=other,
                         detections=_sparse(detections or {}))


def merge(items: Iterable[Distributions | None], *, top_k: int = CLASS_TOP_K) -> Distributions:
    """The bucket-by-bucket sum of `items` (None skipped); classes cut to the top K again."""
    latency: Counter[int] = Counter()
    score: Counter[int] = Counter()
    detections: Counter[int] = Counter()
    classes: Counter[int] = Counter()
    other = 0
    for item in items:
        if item is None:
            continue
        latency.update(item.latency_counts())
        score.update(item.score_counts())
        detections.update(item.detection_counts())
        for entry in item.classes:
            classes[entry.id] += entry.n
        other += item.class_other
    merged = build(latency=latency, score=score, classes=classes, detections=detections, top_k=top_k)
    return merged.model_copy(update={"class_other": merged.class_other + other})


class DistributionAccumulator:
    """Collects one window's observations (not thread-safe: the telemetry writer feeds it)."""

    def __init__(self, top_k: int = CLASS_TOP_K) -> None:
        self.top_k = top_k
        self.reset()

    def reset(self) -> None:
        self._latency: Counter[int] = Counter()
        self._score: Counter[int] = Counter()
        self._classes: Counter[int] = Counter()
        self._detections: Counter[int] = Counter()

    def add(self, latency_ms: float, results: Sequence[object], *, detector: bool) -> None:
        """One successful inference: its latency and its results (best first; id and score each)."""
        self._latency[latency_bucket(latency_ms)] += 1
        if results:
            self._score[score_bucket(float(results[0].score))] += 1  # type: ignore[attr-defined]
        if detector:
            self._detections[min(len(results), DETECTIONS_MAX)] += 1
            for item in results:
                self._classes[int(item.id)] += 1  # type: ignore[attr-defined]
        elif results:
            self._classes[int(results[0].id)] += 1  # type: ignore[attr-defined]

    def snapshot(self) -> Distributions:
        return build(latency=self._latency, score=self._score, classes=self._classes,
                     detections=self._detections, top_k=self.top_k)
