"""The fleet overview: what the fleet ran over time, and how each model version behaves.

`fleet_overview` reads the monitor's state once into an immutable `FleetOverview`: the devices reporting
each version per time slot (from `version_counts`), and per version the pooled latency and top-1 score
histograms with inference and error counts (`windows.version_window`, from `dist_counts`). The renderers
(`overview_render`: a Markdown artifact with text bars, a self-contained HTML page with SVG charts) only
format it. `slot_seconds` and `quantile_ms` are the maths, separate and unit-tested.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.kernel.contracts.distributions import (
    LATENCY_BUCKETS,
    SCORE_BUCKETS,
    latency_bucket_mid_ms,
)
from edgefleet.monitor.drift_view import DriftEntry, drifting, watch_counts
from edgefleet.monitor.query import FleetStatus
from edgefleet.monitor.spotcheck import SpotCheckReport
from edgefleet.monitor.store import FleetStore, from_epoch, read_snapshot, to_epoch
from edgefleet.monitor.windows import version_window

DEFAULT_SLOTS = 48  # time slots of the version timeline (a chart of ~50 bars stays readable)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimelineSlot(_Frozen):
    """Devices that reported each version within [start, start + slot)."""

    start: datetime
    devices: dict[str, int]


class VersionStats(_Frozen):
    """One model version over the overview's window: devices on it now, counts, histograms."""

    version: str
    devices_now: int
    inferences: int
    errors: int
    latency: tuple[int, ...] = Field(description=f"counts per latency bucket (0..{LATENCY_BUCKETS - 1})")
    score: tuple[int, ...] = Field(description=f"counts per top-1 score bucket (0..{SCORE_BUCKETS - 1})")

    @property
    def error_ratio(self) -> float | None:
        total = self.inferences + self.errors
        return None if total == 0 else self.errors / total

    @property
    def latency_p50_ms(self) -> float | None:
        return quantile_ms(self.latency, 0.5)

    @property
    def latency_p95_ms(self) -> float | None:
        return quantile_ms(self.latency, 0.95)


class FleetOverview(_Frozen):
    """The fleet of one model at `generated_at`, over [since, generated_at)."""

    model: str
    generated_at: datetime
    since: datetime
    slot_s: float
    devices: int
    healthy: int
    stale: int
    failing: int
    timeline: tuple[TimelineSlot, ...]
    versions: tuple[VersionStats, ...]
    drift_watch: dict[str, int] = {}
    """Devices per drift-watch status (baseline, watching, drift, unwatched) on the version they run now."""
    drifting: tuple[DriftEntry, ...] = ()
    spot_check: SpotCheckReport | None = None
    """The labelled spot check of this model's versions (the status's, its devices of other models left out);
    None: not read (no registry configured)."""

    @property
    def version_names(self) -> tuple[str, ...]:
        """Every version seen, in the order they first appear on the timeline (then the others)."""
        seen: list[str] = []
        for slot in self.timeline:
            seen.extend(v for v in slot.devices if v not in seen)
        seen.extend(v.version for v in self.versions if v.version not in seen)
        return tuple(seen)


def slot_seconds(span_s: float, bucket_s: float, slots: int = DEFAULT_SLOTS) -> float:
    """A slot length: a whole number of the store's buckets, so that `span_s` fits in about `slots` slots."""
    if span_s <= 0:
        return bucket_s
    return bucket_s * max(1, math.ceil(span_s / slots / bucket_s))


def quantile_ms(latency_counts: tuple[int, ...] | list[int], q: float) -> float | None:
    """The `q` quantile of a latency histogram, as its bucket's representative latency (None when empty)."""
    total = sum(latency_counts)
    if total == 0:
        return None
    rank, running = q * total, 0
    for index, count in enumerate(latency_counts):
        running += count
        if running >= rank and count:
            return latency_bucket_mid_ms(index)
    return latency_bucket_mid_ms(len(latency_counts) - 1)


def _dense(counts: dict[int, int], size: int) -> tuple[int, ...]:
    return tuple(counts.get(index, 0) for index in range(size))


def fleet_overview(store: FleetStore, status: FleetStatus, model: str, now: datetime, since: datetime | None = None,
                   slots: int = DEFAULT_SLOTS) -> FleetOverview:
    """The overview of `model`'s fleet from `since` (default: the oldest data kept) to `now`."""
    with read_snapshot(store) as connection:
        first = connection.execute("SELECT MIN(bucket_start) FROM version_counts WHERE model_name = ?",
                                   (model,)).fetchone()[0]
        start = to_epoch(since) if since is not None else (first if first is not None else to_epoch(now))
        end = to_epoch(now)
        slot = slot_seconds(end - start, store.count_bucket_s, slots)
        start -= start % slot
        per_slot: dict[float, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        devices_of: dict[str, set[str]] = defaultdict(set)
        for bucket, version, device_id in connection.execute(
                "SELECT bucket_start, model_version, device_id FROM version_counts WHERE model_name = ? "
                "AND bucket_start >= ? ORDER BY bucket_start", (model, start)):
            per_slot[bucket - (bucket - start) % slot][version].add(device_id)
            devices_of[version].add(device_id)
        in_drift, watch = drifting(connection, model), watch_counts(connection, model)
    timeline = tuple(
        TimelineSlot(start=from_epoch(slot_start), devices={v: len(ids) for v, ids in sorted(versions.items())})
        for slot_start, versions in sorted(per_slot.items()))
    now_on = {entry.model_version: entry.devices for entry in status.versions
              if entry.model_name == model and entry.model_version}
    stats = []
    for version in sorted(set(devices_of) | set(now_on)):
        window = version_window(store, sorted(devices_of[version]), model, version, from_epoch(start))
        stats.append(VersionStats(version=version, devices_now=now_on.get(version, 0),
                                  inferences=window.inferences, errors=window.errors,
                                  latency=_dense(window.dist.latency_counts(), LATENCY_BUCKETS),
                                  score=_dense(window.dist.score_counts(), SCORE_BUCKETS)))
    return FleetOverview(model=model, generated_at=now, since=from_epoch(start), slot_s=slot,
                         devices=status.total, healthy=status.count("healthy"), stale=status.count("stale"),
                         failing=status.count("failing"), timeline=timeline, versions=tuple(stats),
                         drift_watch=watch, drifting=in_drift,
                         spot_check=model_spot_check(status.spot_check, model))


def model_spot_check(report: SpotCheckReport | None, model: str) -> SpotCheckReport | None:
    """`report` with only `model`'s devices and versions."""
    if report is None:
        return None
    return report.model_copy(update={"devices": tuple(d for d in report.devices if d.model == model),
                                     "versions": tuple(v for v in report.versions if v.model == model)})
