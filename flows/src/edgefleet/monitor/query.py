"""Read the fleet state: `fleet status` and one device's history (the rollout's gate: `monitor.health`).

All results are frozen pydantic models (JSON-ready with `model_dump(mode="json")`). Reads run in one
transaction, so a result is consistent even while the monitor writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from edgefleet.monitor.aggregates import (
    Cutoffs,
    StatusFilter,
    StatusName,
    VersionKey,
    fleet_counters,
    version_status_counts,
    where,
)
from edgefleet.monitor.config import StatusRules
from edgefleet.monitor.drift_view import DeviceDrift, current_drifts
from edgefleet.monitor.errors import FleetStateError
from edgefleet.monitor.ingest import FAILURE_EVENTS
from edgefleet.monitor.spotcheck import SpotCheckReport
from edgefleet.monitor.stats import WindowStats
from edgefleet.monitor.store import FleetStore, from_epoch, read_snapshot, to_epoch

DeviceState = Literal["healthy", "stale", "failing"]


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeviceStatus(_Result):
    """One device as `fleet status` shows it: the latest snapshot and the window of its current version."""

    device_id: str
    status: DeviceState
    reason: str
    model_name: str | None
    model_version: str | None
    model_variant: str | None
    backend: str | None
    last_seen: datetime
    age_s: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    fps: float | None
    window_inferences: int
    window_errors: int
    cpu_temp_c: float | None
    mem_total_mb: float | None
    mem_available_mb: float | None
    load_1m: float | None
    uptime_s: float | None
    tpu_present: bool
    spool_depth: int
    spool_dropped: int
    messages: int
    lost: int
    duplicates: int
    last_state_event: str | None
    last_state_event_time: datetime | None
    drift: DeviceDrift | None = None
    """The drift watch of the version it runs now (None: no complete count bucket read yet)."""


class VersionCount(_Result):
    """How many devices last reported running one model version, by status."""

    model_name: str | None
    model_version: str | None
    devices: int
    healthy: int
    stale: int
    failing: int


class IngestCounters(_Result):
    """What the monitor has taken in so far."""

    devices: int
    messages: int
    duplicates: int
    lost: int
    malformed: int
    malformed_deliveries: int


class FleetStatus(_Result):
    """The fleet at `now`: one page of its devices (all of them unless paged), the version distribution and
    totals of every device the filters select, and the devices gone silent.

    `total` and `count()` cover every selected device, not only the page; `next_after` is the `after` of the
    next page (None: this was the last).
    """

    now: datetime
    stale_after_s: float
    silent_after_s: float
    devices: tuple[DeviceStatus, ...]
    versions: tuple[VersionCount, ...]
    silent: tuple[DeviceStatus, ...]
    counters: IngestCounters
    total: int = 0
    totals: dict[str, int] = {}
    next_after: str | None = None
    spot_check: SpotCheckReport | None = None
    """The labelled spot check of the devices shown (per device and per model version: labelled accuracy, its
    interval, n, the estimate's bias), read from the registry by `fleet status` (`monitor.spotcheck_report`);
    None: not read (no registry configured, or no device shown)."""

    def count(self, status: DeviceState) -> int:
        """Devices in `status` among every selected device (not only this page)."""
        return self.totals.get(status, 0)


class VersionHistoryEntry(_Result):
    """A stretch of one device running one model version (variant, backend)."""

    model_name: str
    model_version: str
    variant: str
    backend: str
    first_seen: datetime
    last_seen: datetime
    messages: int
    inferences: int
    errors: int


class EventEntry(_Result):
    """One device event."""

    seq: int
    time: datetime
    kind: str
    detail: str
    model_name: str | None
    model_version: str | None


class DeviceHistory(_Result):
    """One device: its status now, the versions it ran (oldest first) and its events (newest first)."""

    status: DeviceStatus
    versions: tuple[VersionHistoryEntry, ...]
    events: tuple[EventEntry, ...]


def classify(age_s: float, window_inferences: int, window_errors: int, state_event_kind: str | None,
             state_event_age_s: float | None, rules: StatusRules, stale_after_s: float) -> tuple[DeviceState, str]:
    """A device's status and the reason: stale beats failing beats healthy.

    Args:
        age_s: seconds since its last message.
        window_inferences: inferences in the latency window of its current version.
        window_errors: inference errors in the same window.
        state_event_kind: its latest swap/swap_failed/rollback/error/started event, if any.
        state_event_age_s: seconds since that event.
        rules: the failing thresholds.
        stale_after_s: silence after which the device is stale.
    """
    if age_s > stale_after_s:
        return "stale", f"no message for {age_s:.0f} s"
    ratio = WindowStats(None, None, window_inferences, window_errors).error_ratio
    if (window_inferences or window_errors) and ratio > rules.failing_error_ratio:
        return "failing", f"{ratio:.0%} inference errors in the latency window"
    if (state_event_kind in FAILURE_EVENTS and state_event_age_s is not None
            and state_event_age_s <= rules.failing_event_window_s):
        return "failing", f"{state_event_kind} {state_event_age_s:.0f} s ago"
    return "healthy", ""


_DEVICE_COLUMNS = (
    "device_id, model_name, model_version, model_variant, backend, last_seen, latency_p50_ms, latency_p95_ms, "
    "fps, window_inferences, window_errors, cpu_temp_c, mem_total_mb, mem_available_mb, load_1m, uptime_s, "
    "tpu_present, spool_depth, spool_dropped, messages, lost, duplicates, state_event_kind, state_event_time, "
    "last_received")


def _device_status(row: tuple, now_epoch: float, rules: StatusRules,
                   stale_after_s: float, drifts: dict[str, DeviceDrift] | None = None) -> DeviceStatus:
    (device_id, model_name, model_version, model_variant, backend, last_seen, p50, p95, fps, window_inferences,
     window_errors, cpu_temp_c, mem_total_mb, mem_available_mb, load_1m, uptime_s, tpu_present, spool_depth,
     spool_dropped, messages, lost, duplicates, state_event_kind, state_event_time, last_received) = row
    # Staleness by the monitor's receive time, not the device's clock (a device clock in the future would
    # otherwise never go stale; issue 11 finding 8).
    age_s = max(0.0, now_epoch - (last_received if last_received is not None else last_seen))
    event_age = None if state_event_time is None else max(0.0, now_epoch - state_event_time)
    status, reason = classify(age_s, window_inferences or 0, window_errors or 0, state_event_kind, event_age,
                              rules, stale_after_s)
    return DeviceStatus(
        device_id=device_id, status=status, reason=reason, model_name=model_name, model_version=model_version,
        model_variant=model_variant, backend=backend, last_seen=from_epoch(last_seen), age_s=age_s,
        latency_p50_ms=p50, latency_p95_ms=p95, fps=fps, window_inferences=window_inferences or 0,
        window_errors=window_errors or 0, cpu_temp_c=cpu_temp_c, mem_total_mb=mem_total_mb,
        mem_available_mb=mem_available_mb, load_1m=load_1m, uptime_s=uptime_s, tpu_present=bool(tpu_present),
        spool_depth=spool_depth or 0, spool_dropped=spool_dropped or 0, messages=messages, lost=lost,
        duplicates=duplicates, last_state_event=state_event_kind,
        last_state_event_time=from_epoch(state_event_time), drift=(drifts or {}).get(device_id))


def _drifts(connection: Any, rows: Iterable[tuple]) -> dict[str, DeviceDrift]:
    """The drift watch of each row's device on the version it runs now (columns as `_DEVICE_COLUMNS`)."""
    return current_drifts(connection, [(row[0], row[1], row[2]) for row in rows])


def _counters(connection: Any) -> IngestCounters:
    devices, messages, duplicates, lost = fleet_counters(connection)
    malformed, deliveries = connection.execute(
        "SELECT COUNT(*), COALESCE(SUM(deliveries), 0) FROM malformed").fetchone()
    return IngestCounters(devices=devices, messages=messages, duplicates=duplicates, lost=lost,
                          malformed=malformed, malformed_deliveries=deliveries)


def ingest_counters(store: FleetStore) -> IngestCounters:
    """Devices, messages, duplicates, lost and malformed messages counted so far."""
    with read_snapshot(store) as connection:
        return _counters(connection)


def fleet_status(store: FleetStore, stale_after_s: float, now: datetime, *, silent_after_s: float | None = None,
                 rules: StatusRules | None = None, selection: StatusFilter | None = None, limit: int | None = None,
                 after: str | None = None) -> FleetStatus:
    """The fleet's status at `now`: a page of devices, the version distribution and the silent devices.

    Counts come from the aggregates kept on ingest and from indexed ranges (`aggregates`), never from a scan
    of the fleet; only the page (and the silent list, capped at `limit`) is read row by row.

    Args:
        store: the fleet state.
        stale_after_s: a device without a message for longer is 'stale'.
        now: the reference time (aware, or naive UTC).
        silent_after_s: a device without a message for longer is listed as silent; default from `rules`.
        rules: failing thresholds; default `StatusRules()`.
        selection: only devices of this version, status and tag (default: all).
        limit: devices per page (None: every selected device).
        after: the page starts after this device id (the previous page's `next_after`).
    """
    rules = rules or StatusRules()
    selection = selection or StatusFilter()
    silent_after_s = rules.silent_after_s if silent_after_s is None else silent_after_s
    now_epoch = to_epoch(now)
    cutoffs = Cutoffs(stale_before=now_epoch - stale_after_s, event_since=now_epoch - rules.failing_event_window_s,
                      error_ratio=rules.failing_error_ratio)
    condition, params = where(selection, cutoffs)
    page_sql = f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE {condition}"
    if after is not None:
        page_sql += " AND device_id > ?"
        params += (after,)
    page_sql += " ORDER BY device_id" + ("" if limit is None else " LIMIT ?")
    silent_condition, silent_params = where(StatusFilter(selection.version, None, selection.tag), cutoffs)
    silent_sql = (f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE {silent_condition} AND last_received < ? "
                  "ORDER BY last_received, device_id" + ("" if limit is None else " LIMIT ?"))
    with read_snapshot(store) as connection:
        rows = connection.execute(page_sql, params + (() if limit is None else (limit + 1,))).fetchall()
        silent_rows = connection.execute(silent_sql, silent_params + (now_epoch - silent_after_s,) + (
            () if limit is None else (limit,))).fetchall()
        by_version = version_status_counts(connection, selection, cutoffs)
        counters = _counters(connection)
        more = limit is not None and len(rows) > limit
        rows = rows[:limit] if more else rows
        drifts = _drifts(connection, rows)
    devices = tuple(_device_status(row, now_epoch, rules, stale_after_s, drifts) for row in rows)
    silent = tuple(device for device in (_device_status(row, now_epoch, rules, stale_after_s) for row in silent_rows)
                   if device.age_s > silent_after_s)
    versions = tuple(
        VersionCount(model_name=name or None, model_version=version or None, devices=sum(counts.values()), **counts)
        for (name, version), counts in sorted(by_version.items(), key=_busiest_first) if sum(counts.values()))
    totals = {status: sum(entry.model_dump()[status] for entry in versions) for status in ("healthy", "stale",
                                                                                           "failing")}
    total = totals[selection.status] if selection.status else sum(totals.values())
    return FleetStatus(now=from_epoch(now_epoch), stale_after_s=stale_after_s, silent_after_s=silent_after_s,
                       devices=devices, versions=versions, silent=silent, counters=counters, total=total,
                       totals=totals, next_after=devices[-1].device_id if more and devices else None)


def _busiest_first(item: tuple[VersionKey, Mapping[StatusName, int]]) -> tuple[int, str]:
    (name, version), counts = item
    return -sum(counts.values()), str((name or None, version or None))


def device_status(store: FleetStore, device_id: str, stale_after_s: float, now: datetime, *,
                  rules: StatusRules | None = None) -> DeviceStatus:
    """One device's status (see `fleet_status`). Raises FleetStateError for an unknown device."""
    with read_snapshot(store) as connection:
        row = connection.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = ?",
                                 (device_id,)).fetchone()
        if row is None:
            raise _unknown_device(connection, device_id)
        drifts = _drifts(connection, [row])
    return _device_status(row, to_epoch(now), rules or StatusRules(), stale_after_s, drifts)


def device_statuses(store: FleetStore, device_ids: Iterable[str], stale_after_s: float, now: datetime, *,
                    rules: StatusRules | None = None) -> tuple[DeviceStatus, ...]:
    """The status of each known device among `device_ids` (unknown ids are skipped), by device id."""
    with read_snapshot(store) as connection:
        rows = connection.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id IN (SELECT value FROM json_each(?)) "
            "ORDER BY device_id", (json.dumps(list(device_ids)),)).fetchall()
        drifts = _drifts(connection, rows)
    now_epoch = to_epoch(now)
    return tuple(_device_status(row, now_epoch, rules or StatusRules(), stale_after_s, drifts) for row in rows)


def _unknown_device(connection: Any, device_id: str) -> FleetStateError:
    known = connection.execute("SELECT COUNT(*) FROM devices").fetchone()[0]
    return FleetStateError(f"device {device_id!r} has never reported to this monitor ({known} devices known)",
                           "check the id with `edgefleet fleet status`, or whether the device publishes "
                           "telemetry to the topic this monitor's subscription reads")


def device_history(store: FleetStore, device_id: str, stale_after_s: float, now: datetime, *,
                   rules: StatusRules | None = None, event_limit: int | None = None) -> DeviceHistory:
    """One device's status, its version history (oldest first) and its events (newest first).

    Raises:
        FleetStateError: the device never reported.
    """
    status = device_status(store, device_id, stale_after_s, now, rules=rules)
    with read_snapshot(store) as connection:
        totals = {
            (name, version): (inferences, errors) for name, version, inferences, errors in connection.execute(
                "SELECT model_name, model_version, SUM(inferences), SUM(errors) FROM version_counts "
                "WHERE device_id = ? GROUP BY model_name, model_version", (device_id,))}
        versions = tuple(
            VersionHistoryEntry(model_name=name, model_version=version, variant=variant, backend=backend,
                                first_seen=from_epoch(first), last_seen=from_epoch(last), messages=messages,
                                inferences=totals.get((name, version), (0, 0))[0],
                                errors=totals.get((name, version), (0, 0))[1])
            for name, version, variant, backend, first, last, messages in connection.execute(
                "SELECT model_name, model_version, variant, backend, first_seen, last_seen, messages "
                "FROM version_history WHERE device_id = ? ORDER BY first_seen, first_seq", (device_id,)))
        events = tuple(
            EventEntry(seq=seq, time=from_epoch(time), kind=kind, detail=detail, model_name=name,
                       model_version=version)
            for seq, time, kind, detail, name, version in connection.execute(
                "SELECT seq, time, kind, detail, model_name, model_version FROM events WHERE device_id = ? "
                "ORDER BY seq DESC" + ("" if event_limit is None else " LIMIT ?"),
                (device_id,) if event_limit is None else (device_id, event_limit)))
    return DeviceHistory(status=status, versions=versions, events=events)
