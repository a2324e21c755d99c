"""The rollout's health gate: how one model version did on a set of devices since a time.

`version_health` reads the fleet state in one transaction; its results are frozen pydantic models. The
canary judge's pooled window (`edgefleet.monitor.windows.version_window`) counts the same failure events.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgefleet.monitor.stats import LatencySample, WindowStats, window_stats
from edgefleet.monitor.store import FleetStore, from_epoch, read_snapshot, to_epoch


class _VersionRecord(BaseModel):
    """Counts and latency of one model version: on one device, or summed over a set of devices."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    inferences: int
    errors: int
    error_events: int
    swap_failures: int
    rollbacks: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None


_SUMMED = ("inferences", "errors", "error_events", "swap_failures", "rollbacks")


class DeviceVersionHealth(_VersionRecord):
    """One device's record for one model version since a time (the rollout's per-device gate input)."""

    device_id: str
    known: bool
    running_version: str | None
    last_seen: datetime | None


class VersionHealth(_VersionRecord):
    """Health of one model version on a set of devices since a time, per device and in total.

    Counts come from time buckets of `count_bucket_s`, so `since` is effectively rounded down to a bucket
    start; latency percentiles come from the latency window kept per device and version.
    """

    model: str
    version: str
    since: datetime
    devices: tuple[DeviceVersionHealth, ...]
    last_seen: datetime | None
    @property
    def error_ratio(self) -> float:
        """Inference errors per inference (1 when there were only errors, 0 when neither)."""
        return WindowStats(None, None, self.inferences, self.errors).error_ratio

    @property
    def unknown_devices(self) -> tuple[str, ...]:
        """Asked-for devices the monitor has never heard from."""
        return tuple(device.device_id for device in self.devices if not device.known)

    @property
    def reporting_devices(self) -> tuple[str, ...]:
        """Devices that reported inferences of this version since `since`."""
        return tuple(device.device_id for device in self.devices if device.inferences or device.errors)


def failure_events(connection: Any, ids_json: str, model: str, version: str,
                   since_epoch: float) -> dict[str, dict[str, int]]:
    """device id -> event kind ('swap_failed', 'error', 'rollback') -> how many, about `version` since then.

    swap_failed and error events name the version they are about; a rollback names the version it restored,
    so it counts against the version it left.
    """
    events: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for device_id, kind, number in connection.execute(
            "SELECT device_id, kind, COUNT(*) FROM events WHERE (model_name = ? OR model_name IS NULL) "
            "AND time >= ? AND device_id IN (SELECT value FROM json_each(?)) "
            "AND ((kind IN ('swap_failed', 'error') AND model_version = ?) "
            "     OR (kind = 'rollback' AND from_version = ?)) "
            "GROUP BY device_id, kind", (model, since_epoch, ids_json, version, version)):
        events[device_id][kind] = number
    return events


def device_failures(store: FleetStore, device_ids: Iterable[str], model: str, version: str,
                    since: datetime) -> dict[str, int]:
    """device id -> swap failures and rollbacks of `model` `version` it reported since `since`: one query for a
    whole wave (a pull rollout's watch asks every poll, for thousands of devices)."""
    device_ids = list(dict.fromkeys(device_ids))
    with read_snapshot(store) as connection:
        events = failure_events(connection, json.dumps(device_ids), model, version, to_epoch(since))
    return {device_id: events[device_id]["swap_failed"] + events[device_id]["rollback"] if device_id in events
            else 0 for device_id in device_ids}


def version_health(store: FleetStore, device_ids: Iterable[str], model: str, version: str,
                   since: datetime) -> VersionHealth:
    """The rollout health gate's facts: how `model` `version` did on `device_ids` since `since`.

    Args:
        store: the fleet state.
        device_ids: the devices of the wave (unknown ones are reported with `known=False` and zeros).
        model: model name.
        version: model version.
        since: count from this time (e.g. when the wave's swap started).
    """
    device_ids = list(dict.fromkeys(device_ids))
    since_epoch = to_epoch(since)
    bucket_start = since_epoch - since_epoch % store.count_bucket_s
    ids_json = json.dumps(device_ids)
    with read_snapshot(store) as connection:
        known = {row[0]: row[1:] for row in connection.execute(
            "SELECT device_id, model_version, last_seen FROM devices "
            "WHERE device_id IN (SELECT value FROM json_each(?))", (ids_json,))}
        counts = {row[0]: row[1:] for row in connection.execute(
            "SELECT device_id, SUM(inferences), SUM(errors) FROM version_counts "
            "WHERE model_name = ? AND model_version = ? AND bucket_start >= ? "
            "AND device_id IN (SELECT value FROM json_each(?)) GROUP BY device_id",
            (model, version, bucket_start, ids_json))}
        events = failure_events(connection, ids_json, model, version, since_epoch)
        samples: dict[str, list[LatencySample]] = defaultdict(list)
        for device_id, p50, p95, count, errors in connection.execute(
                "SELECT device_id, p50_ms, p95_ms, count, errors FROM latency_samples "
                "WHERE model_name = ? AND model_version = ? AND time >= ? "
                "AND device_id IN (SELECT value FROM json_each(?))", (model, version, since_epoch, ids_json)):
            samples[device_id].append(LatencySample(p50, p95, count, errors))
    per_device = []
    for device_id in device_ids:
        running_version, last_seen = known.get(device_id, (None, None))
        inferences, errors = counts.get(device_id, (0, 0))
        stats = window_stats(samples.get(device_id, []))
        per_device.append(DeviceVersionHealth(
            device_id=device_id, known=device_id in known, running_version=running_version,
            last_seen=from_epoch(last_seen), inferences=inferences, errors=errors,
            error_events=events[device_id]["error"], swap_failures=events[device_id]["swap_failed"],
            rollbacks=events[device_id]["rollback"], latency_p50_ms=stats.latency_p50_ms,
            latency_p95_ms=stats.latency_p95_ms))
    total = window_stats(sample for device_samples in samples.values() for sample in device_samples)
    seen = [device.last_seen for device in per_device if device.last_seen is not None]
    return VersionHealth(
        model=model, version=version, since=from_epoch(since_epoch), devices=tuple(per_device),
        **{name: sum(getattr(device, name) for device in per_device) for name in _SUMMED},
        latency_p50_ms=total.latency_p50_ms, latency_p95_ms=total.latency_p95_ms,
        last_seen=max(seen) if seen else None)
