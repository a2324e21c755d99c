"""Aggregates of the fleet state kept up to date on ingest, so that `fleet status` never scans the fleet.

Kept on ingest (`Deltas`, flushed by `store.commit` as `x = x + delta` upserts, in a stable key order):
- version_totals: devices per (model, version) they run now;
- fleet_counters: devices, messages, duplicates and lost, one row per writer shard (each store writes its
  own row, so several monitors do not queue on one hot row); the totals are their sum. The shard is drawn at
  random when the process starts (and again in a forked child), then stepped for each further store of the
  process: never the PID, which is 1 in every containerised replica (issue 23).

What depends on the time of the question (stale: silent for longer than `stale_after_s`; failing: a recent
failure event) cannot be kept on ingest. It is counted from indexed ranges instead: devices received before
the stale cutoff (`devices_by_received`), devices whose window error ratio is above the threshold
(`devices_by_error_ratio`) or whose failure event is recent (`devices_by_state_event`). In a working fleet
these are few; healthy = total - stale - failing. The costs grow with the stale and failing devices and
with a page, not with the fleet.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

COUNTER_SHARDS = 64
FAILURE_KINDS_SQL = "('swap_failed', 'rollback', 'error')"  # ingest.FAILURE_EVENTS, as an SQL list
VersionKey = tuple[str, str]  # (model name, model version); '' for a device that runs none
StatusName = Literal["healthy", "stale", "failing"]

_shard_base = secrets.randbelow(COUNTER_SHARDS)
_stores = itertools.count()


def _redraw_shard_base() -> None:
    global _shard_base
    _shard_base = secrets.randbelow(COUNTER_SHARDS)


os.register_at_fork(after_in_child=_redraw_shard_base)  # a forked replica must not inherit its parent's shard


def new_counter_shard() -> int:
    """The fleet_counters row one store writes: random per process (replicas in containers all run as PID 1,
    so a PID-based shard put every replica on one row), distinct for up to COUNTER_SHARDS stores of a process."""
    return (_shard_base + next(_stores)) % COUNTER_SHARDS


@dataclass
class Deltas:
    """Changes to the aggregates made by the open transaction and not yet written."""

    versions: Counter[VersionKey] = field(default_factory=Counter)
    counters: Counter[str] = field(default_factory=Counter)
    shard: int = field(default_factory=new_counter_shard)
    """The fleet_counters row these changes are added to (`new_counter_shard`)."""

    def copy(self) -> Deltas:
        return Deltas(Counter(self.versions), Counter(self.counters), self.shard)

    def device_added(self, key: VersionKey) -> None:
        self.versions[key] += 1
        self.counters["devices"] += 1

    def device_removed(self, key: VersionKey, messages: int, duplicates: int, lost: int) -> None:
        self.versions[key] -= 1
        self.counters.update({"devices": -1, "messages": -messages, "duplicates": -duplicates, "lost": -lost})

    def device_moved(self, old: VersionKey, new: VersionKey) -> None:
        if old != new:
            self.versions[old] -= 1
            self.versions[new] += 1

    def count(self, **counts: int) -> None:
        self.counters.update(counts)

    def clear(self) -> None:
        self.versions.clear()
        self.counters.clear()


def version_key(model_name: str | None, model_version: str | None) -> VersionKey:
    return (model_name or "", model_version or "")


def flush(connection: Any, deltas: Deltas) -> None:
    """Writes `deltas` inside the open transaction (sorted keys: two writers never lock in a cycle)."""
    changed = sorted((key, delta) for key, delta in deltas.versions.items() if delta)
    if changed:
        connection.executemany(
            "INSERT INTO version_totals (model_name, model_version, devices) VALUES (?, ?, ?) "
            "ON CONFLICT (model_name, model_version) DO UPDATE SET devices = version_totals.devices + "
            "excluded.devices", [(name, version, delta) for (name, version), delta in changed])
    counts = [deltas.counters[name] for name in ("devices", "messages", "duplicates", "lost")]
    if any(counts):
        connection.execute(
            "INSERT INTO fleet_counters (shard, devices, messages, duplicates, lost) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (shard) DO UPDATE SET devices = fleet_counters.devices + excluded.devices, "
            "messages = fleet_counters.messages + excluded.messages, "
            "duplicates = fleet_counters.duplicates + excluded.duplicates, "
            "lost = fleet_counters.lost + excluded.lost", (deltas.shard, *counts))
    deltas.clear()


def fleet_counters(connection: Any) -> tuple[int, int, int, int]:
    """(devices, messages, duplicates, lost) over every shard."""
    row = connection.execute("SELECT COALESCE(SUM(devices), 0), COALESCE(SUM(messages), 0), "
                             "COALESCE(SUM(duplicates), 0), COALESCE(SUM(lost), 0) FROM fleet_counters").fetchone()
    return tuple(int(value) for value in row)  # type: ignore[return-value]


@dataclass(frozen=True)
class StatusFilter:
    """Which devices a `fleet status` question is about (None: any)."""

    version: str | None = None
    status: StatusName | None = None
    tag: str | None = None


@dataclass(frozen=True)
class Cutoffs:
    """The time-dependent thresholds of one question, as epoch seconds and a ratio."""

    stale_before: float  # received before this: stale
    event_since: float  # a failure event at or after this: failing
    error_ratio: float  # window error ratio above this: failing


def _predicates(cutoffs: Cutoffs) -> dict[str, tuple[str, tuple[Any, ...]]]:
    recent_failure = f"(state_event_kind IN {FAILURE_KINDS_SQL} AND state_event_time >= ?)"
    # Failing devices are found by the error ratio and event time indexes, combined (SQLite: MULTI-INDEX OR,
    # PostgreSQL: BitmapOr): as many rows as failing devices. The unary + keeps both planners from reading
    # the last_received index instead (its range `>=` holds nearly the whole fleet).
    failing_now = f"(error_ratio > ? OR (state_event_time >= ? AND state_event_kind IN {FAILURE_KINDS_SQL}))"
    return {
        "stale": ("last_received < ?", (cutoffs.stale_before,)),
        "failing": (f"+last_received >= ? AND {failing_now}",
                    (cutoffs.stale_before, cutoffs.error_ratio, cutoffs.event_since)),
        "healthy": ("last_received >= ? AND NOT (error_ratio IS NOT NULL AND error_ratio > ?) AND NOT "
                    f"(state_event_kind IS NOT NULL AND state_event_time IS NOT NULL AND {recent_failure})",
                    (cutoffs.stale_before, cutoffs.error_ratio, cutoffs.event_since)),
    }


def where(selection: StatusFilter, cutoffs: Cutoffs, *, with_status: bool = True) -> tuple[str, tuple[Any, ...]]:
    """An SQL condition (and its parameters) selecting the devices of `selection`."""
    clauses: list[str] = ["1 = 1"]
    params: list[Any] = []
    if selection.version is not None:
        clauses.append("model_version = ?")
        params.append(selection.version)
    if selection.tag is not None:
        clauses.append("device_id IN (SELECT device_id FROM device_tags WHERE tag = ?)")
        params.append(selection.tag)
    if with_status and selection.status is not None:
        clause, clause_params = _predicates(cutoffs)[selection.status]
        clauses.append(clause)
        params.extend(clause_params)
    return " AND ".join(clauses), tuple(params)


def version_status_counts(connection: Any, selection: StatusFilter,
                          cutoffs: Cutoffs) -> dict[VersionKey, dict[StatusName, int]]:
    """Per (model, version): devices healthy, stale and failing now, within `selection` (status ignored)."""
    condition, params = where(selection, cutoffs, with_status=False)
    if selection.tag is None:
        version_clause = "" if selection.version is None else " AND model_version = ?"
        totals = connection.execute(
            "SELECT model_name, model_version, devices FROM version_totals WHERE devices > 0" + version_clause,
            () if selection.version is None else (selection.version,)).fetchall()
    else:
        totals = _grouped(connection, condition, params)
    counts: dict[VersionKey, dict[StatusName, int]] = {}
    for name, version, devices in totals:
        counts[(name, version)] = {"healthy": int(devices), "stale": 0, "failing": 0}
    predicates = _predicates(cutoffs)
    for status in ("stale", "failing"):
        clause, clause_params = predicates[status]
        for name, version, devices in _grouped(connection, f"{condition} AND {clause}", params + clause_params):
            entry = counts.setdefault((name, version), {"healthy": 0, "stale": 0, "failing": 0})
            entry[status] += int(devices)  # type: ignore[index]
            entry["healthy"] -= int(devices)
    return counts


def _grouped(connection: Any, condition: str, params: Sequence[Any]) -> list[tuple[str, str, int]]:
    return connection.execute(
        "SELECT COALESCE(model_name, ''), COALESCE(model_version, ''), COUNT(*) FROM devices "
        f"WHERE {condition} GROUP BY COALESCE(model_name, ''), COALESCE(model_version, '')", params).fetchall()


def set_tags(connection: Any, device_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
    """Adds and removes tags of one device inside the open transaction."""
    connection.executemany("INSERT INTO device_tags (tag, device_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                           [(tag, device_id) for tag in add])
    connection.executemany("DELETE FROM device_tags WHERE tag = ? AND device_id = ?",
                           [(tag, device_id) for tag in remove])


def device_tags(connection: Any, device_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The tags of each of `device_ids` that has any."""
    tags: dict[str, list[str]] = {}
    for device_id, tag in connection.execute(
            "SELECT device_id, tag FROM device_tags WHERE device_id IN (SELECT value FROM json_each(?)) "
            "ORDER BY device_id, tag", (_json_list(device_ids),)):
        tags.setdefault(device_id, []).append(tag)
    return {device_id: tuple(names) for device_id, names in tags.items()}


def _json_list(values: Sequence[str]) -> str:
    return json.dumps(list(values))
