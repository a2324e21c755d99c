"""Distributions per (device, model version, time bucket): merged on ingest, read per window, pruned.

Telemetry schema 2 summaries carry mergeable distributions (`contracts.distributions`). The monitor adds
them up per device, model version and time bucket (`count_bucket_s`) in `dist_counts`, one row per
(metric, key): latency / score / detections bucket indices, class ids (-1: the classes beyond the agents'
top K). `version_window` answers the canary judge's question: the pooled distributions of a set of devices
on a version over a window, with their inference, error, swap-failure and rollback counts.

Everything the monitor keeps by time (counts, distributions, latency samples, events, malformed messages)
is pruned after `retention_s` (`prune`), which must outlast a promotion's `healthy_for_s`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from edgefleet.kernel.contracts.distributions import Distributions, build
from edgefleet.monitor.health import failure_events
from edgefleet.monitor.store import FleetStore, commit, from_epoch, read_snapshot, to_epoch, write_pending

METRICS = ("latency", "score", "class", "detections")


class VersionWindow(BaseModel):
    """A set of devices on one model version over [since, until): pooled counts and distributions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    version: str
    since: datetime
    until: datetime | None
    devices: tuple[str, ...]
    """The asked-for devices that reported this version in the window."""
    inferences: int
    errors: int
    swap_failures: int
    rollbacks: int
    dist: Distributions


def version_window(store: FleetStore, device_ids: Iterable[str], model: str, version: str, since: datetime,
                   until: datetime | None = None) -> VersionWindow:
    """Pooled facts of `device_ids` on `model` `version` from `since` (rounded down to a bucket start) to
    `until` (exclusive, rounded the same way; None: up to now)."""
    device_ids = list(dict.fromkeys(device_ids))
    bucket = store.count_bucket_s
    since_epoch = to_epoch(since)
    low = since_epoch - since_epoch % bucket
    high = None if until is None else to_epoch(until) - to_epoch(until) % bucket
    counts: dict[str, dict[int, int]] = defaultdict(dict)
    inferences = errors = 0
    reporting: list[str] = []
    ids_json = json.dumps(device_ids)
    window = "bucket_start >= ?" + ("" if high is None else " AND bucket_start < ?")
    window_params: tuple[float, ...] = (low,) if high is None else (low, high)
    with read_snapshot(store) as connection:
        for metric, key, n in connection.execute(
                "SELECT metric, key, SUM(n) FROM dist_counts WHERE model_name = ? AND model_version = ? "
                f"AND {window} AND device_id IN (SELECT value FROM json_each(?)) GROUP BY metric, key",
                (model, version, *window_params, ids_json)):
            counts[metric][key] = n
        for device_id, device_inferences, device_errors in connection.execute(
                "SELECT device_id, SUM(inferences), SUM(errors) FROM version_counts WHERE model_name = ? "
                f"AND model_version = ? AND {window} AND device_id IN (SELECT value FROM json_each(?)) "
                "GROUP BY device_id", (model, version, *window_params, ids_json)):
            inferences += device_inferences
            errors += device_errors
            if device_inferences or device_errors:
                reporting.append(device_id)
        events = failure_events(connection, ids_json, model, version, since_epoch)
    classes = {key: n for key, n in counts["class"].items() if key >= 0}
    dist = build(latency=counts["latency"], score=counts["score"], classes=classes,
                 detections=counts["detections"], top_k=max(len(classes), 1))
    dist = dist.model_copy(update={"class_other": counts["class"].get(-1, 0)})
    return VersionWindow(model=model, version=version, since=from_epoch(low), until=from_epoch(high),
                         devices=tuple(sorted(reporting)), inferences=inferences, errors=errors,
                         swap_failures=sum(kinds["swap_failed"] for kinds in events.values()),
                         rollbacks=sum(kinds["rollback"] for kinds in events.values()), dist=dist)


# Tables kept by time, and the column holding it.
_TIMED = (("version_counts", "bucket_start"), ("dist_counts", "bucket_start"), ("latency_samples", "time"),
          ("events", "time"), ("malformed", "last_received"), ("drift_events", "time"),
          ("shadow_counts", "bucket_start"), ("drift_windows", "received"))


def prune(store: FleetStore, before: float) -> dict[str, int]:
    """Deletes what the monitor keeps by time from before epoch `before`, refreshes the planner's statistics and
    commits; rows deleted per table.

    Device rows, seq gaps and version history stay: they are per device, not per time.
    """
    deleted = {}
    write_pending(store)  # rows an open batch keeps pending are pruned like those already written
    connection = store.connection
    for table, column in _TIMED:
        deleted[table] = connection.execute(f"DELETE FROM {table} WHERE {column} < ?", (before,)).rowcount
    store.engine.analyze(connection)  # the planner's statistics follow the fleet (`fleet status` plans by them)
    commit(store)
    return deleted
