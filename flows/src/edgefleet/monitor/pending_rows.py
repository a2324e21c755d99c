"""What one write transaction of the monitor knows and has not written yet: few round trips per batch.

A batch locks its devices first (`store.lock_devices`); from then on no other writer changes their rows until
the commit, so what the dedupe decisions read (the device's highest seq and version, its spool epochs,
whether it signs) is read once per batch for all its devices (`load`) and kept here, changed as the batch
applies its messages. The writes the common message makes are additive or first-wins upserts; they are
merged here per row and written at commit (`write`): one INSERT per table for all its rows (the engine's
`insert_rows`: SQLite multi-row VALUES of up to `ROWS_PER_INSERT` rows, PostgreSQL one array per column),
the device rows by one `executemany`; on PostgreSQL the whole commit runs in pipeline mode. Merging is exact:
the merged upsert leaves the same row as the upserts one by one (sums add, first/last seen are
LEAST/GREATEST, the device's snapshot is that of its highest seq, a first-wins insert keeps the first).
The device's missing seq ranges (`seq_gaps`) are read at the lock too, those of its last `GAP_HORIZON`
seqs (`DeviceGaps`): a gap and a late arrival filling one change them here, written at commit (only the
ranges that changed). A late arrival older than that looks its gap up in the table (rare).
Rare paths (a new device, a very late arrival, a new spool epoch, a device's first signed message) still
write directly, inside the message's savepoint; whoever reads the tables inside the transaction writes what
is pending first.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from edgefleet.monitor.drift_feed import WINDOWS_SQL

ROWS_PER_INSERT = 500
"""Rows per multi-row INSERT (SQLite binds up to 32,766 parameters per statement, PostgreSQL 65,535)."""
_ONE_ROW = re.compile(r"VALUES (\((?:\?, )*\?\))")
GAP_HORIZON = 100_000
"""Seqs below a device's highest whose missing ranges a batch reads at its lock and keeps (`DeviceGaps`)."""
Head = tuple[int, str | None, str | None]  # a device's (max_seq, model_name, model_version)
_INT_FIELDS = ("messages", "duplicates", "lost")


@dataclass
class DeviceDelta:
    """The changes of one transaction to one device row (None: not changed)."""

    snapshot: dict[str, object] = field(default_factory=dict)
    max_seq: int | None = None
    messages: int = 0
    duplicates: int = 0
    lost: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    last_received: float | None = None

    def seen(self, when: float, received: float, *, late: bool = False) -> None:
        self.last_seen = when if self.last_seen is None else max(self.last_seen, when)
        self.last_received = received if self.last_received is None else max(self.last_received, received)
        if late:
            self.first_seen = when if self.first_seen is None else min(self.first_seen, when)


@dataclass
class DeviceGaps:
    """The missing seq ranges of a locked device above `low`: every range holding a seq above `low` is here
    (and none of the table's other ranges reaches above `low`); `stored` is what the table holds of them."""

    low: int
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)
    """first_seq -> (last_seq, counted)"""
    stored: dict[int, tuple[int, int]] = field(default_factory=dict)

    def copy(self) -> DeviceGaps:
        return DeviceGaps(self.low, dict(self.spans), self.stored)

    def add(self, first: int, last: int, counted: int) -> None:
        """A new missing range (above every range of the device: it starts after its highest seq)."""
        self.spans[first] = (last, counted)

    def fill(self, seq: int) -> int | None:
        """Removes `seq` from the range holding it: that range's `counted` (1 lost, 0 not), None when no range
        holds it (a duplicate). Only for seq > low."""
        for first, (last, counted) in self.spans.items():
            if first <= seq <= last:
                del self.spans[first]
                for low, high in ((first, seq - 1), (seq + 1, last)):
                    if low <= high:
                        self.spans[low] = (high, counted)
                return counted
        return None


def device_gaps(max_seq: int | None, loaded: dict[int, tuple[int, int]]) -> DeviceGaps:
    """The `DeviceGaps` of a device whose ranges ending above max_seq - GAP_HORIZON are `loaded`: `low` is
    below the lowest of them, so a range the table holds either is here or lies wholly at or below `low`."""
    if max_seq is None:
        return DeviceGaps(low=0)
    low = min([max_seq - GAP_HORIZON, *(first - 1 for first in loaded)])
    return DeviceGaps(low=low, spans=dict(loaded), stored=dict(loaded))


@dataclass
class PendingRows:
    """The open write transaction's view of its locked devices and its writes not yet sent."""

    heads: dict[str, Head | None] = field(default_factory=dict)
    verified: dict[str, bool] = field(default_factory=dict)
    epochs: dict[str, dict[int, int]] = field(default_factory=dict)
    gaps: dict[str, DeviceGaps] = field(default_factory=dict)
    devices: dict[str, DeviceDelta] = field(default_factory=dict)
    history: dict[tuple, list] = field(default_factory=dict)
    counts: dict[tuple, list[int]] = field(default_factory=dict)
    dists: Counter[tuple] = field(default_factory=Counter)
    shadows: Counter[tuple] = field(default_factory=Counter)
    samples: dict[tuple, tuple] = field(default_factory=dict)
    windows: dict[tuple, tuple] = field(default_factory=dict)
    """(device, model, version, seq) -> its `drift_windows` row (`drift_feed`)"""
    events: dict[tuple, tuple] = field(default_factory=dict)
    state_events: dict[str, tuple[str, float, int]] = field(default_factory=dict)
    writes: int = 0
    """How many times `write` sent pending rows (a message that saw it change cannot be undone alone)."""

    def delta(self, device_id: str) -> DeviceDelta:
        return self.devices.setdefault(device_id, DeviceDelta())

    def device_state(self, device_id: str) -> tuple[Any, ...]:
        """What a message of `device_id` may change here, to put back if it is undone."""
        gaps = self.gaps.get(device_id)
        return (self.heads.get(device_id), self.verified.get(device_id), dict(self.epochs.get(device_id, {})),
                None if gaps is None else gaps.copy())

    def restore(self, device_id: str, state: tuple[Any, ...]) -> None:
        self.heads[device_id], self.verified[device_id], self.epochs[device_id], gaps = state
        if gaps is None:
            self.gaps.pop(device_id, None)
        else:
            self.gaps[device_id] = gaps

    @staticmethod
    def fresh_state(*, verified: bool) -> tuple[Any, ...]:
        """The `device_state` of a device with no row (no seq, epoch or gap)."""
        return (None, verified, {}, DeviceGaps(low=0))

    @property
    def unwritten(self) -> bool:
        return any((self.devices, self.history, self.counts, self.dists, self.shadows, self.samples, self.windows,
                    self.events, self.state_events)) or any(gaps.spans != gaps.stored for gaps in self.gaps.values())

    def forget(self) -> None:
        """Drops everything (the transaction ended: the locks and what they made true are gone)."""
        self.forget_reads()
        self._clear_writes()

    def forget_reads(self) -> None:
        """Drops what was read under the transaction's locks."""
        for mapping in (self.heads, self.verified, self.epochs, self.gaps):
            mapping.clear()

    def _clear_writes(self) -> None:
        for mapping in (self.devices, self.history, self.counts, self.dists, self.shadows, self.samples,
                        self.windows, self.events, self.state_events):
            mapping.clear()


def load(connection: Any, rows: PendingRows, device_ids: list[str]) -> None:
    """Reads the dedupe state of `device_ids` (locked by this transaction) in four queries."""
    ids = json.dumps(device_ids)
    for device_id in device_ids:
        rows.heads[device_id] = None
        rows.verified[device_id] = False
        rows.epochs[device_id] = {}
    in_ids = "device_id IN (SELECT value FROM json_each(?))"
    for device_id, max_seq, name, version in connection.execute(
            f"SELECT device_id, max_seq, model_name, model_version FROM devices WHERE {in_ids}", (ids,)):
        rows.heads[device_id] = (max_seq, name, version)
    for (device_id,) in connection.execute(f"SELECT device_id FROM verified_devices WHERE {in_ids}", (ids,)):
        rows.verified[device_id] = True
    for device_id, epoch, base in connection.execute(
            f"SELECT device_id, epoch, base FROM device_epochs WHERE {in_ids}", (ids,)):
        rows.epochs[device_id][epoch] = base
    loaded: dict[str, dict[int, tuple[int, int]]] = {device_id: {} for device_id in device_ids}
    for device_id, first, last, counted in connection.execute(
            "SELECT g.device_id, g.first_seq, g.last_seq, g.counted FROM seq_gaps AS g JOIN devices AS d "
            "ON d.device_id = g.device_id WHERE g.device_id IN (SELECT value FROM json_each(?)) "
            "AND g.last_seq > d.max_seq - ?", (ids, GAP_HORIZON)):
        loaded[device_id][first] = (last, counted)
    for device_id in device_ids:
        head = rows.heads[device_id]
        rows.gaps[device_id] = device_gaps(None if head is None else head[0], loaded[device_id])


def add_history(rows: PendingRows, key: tuple, when: float, seq: int) -> None:
    """One message of (device, model, version, variant, backend) at `when`, `seq`."""
    row = rows.history.get(key)
    if row is None:
        rows.history[key] = [when, when, seq, seq, 1]
    else:
        row[:] = [min(row[0], when), max(row[1], when), min(row[2], seq), max(row[3], seq), row[4] + 1]


def add_counts(rows: PendingRows, key: tuple, inferences: int, errors: int) -> None:
    """One message's counts in its (device, model, version, bucket)."""
    row = rows.counts.setdefault(key, [0, 0, 0])
    row[0] += inferences
    row[1] += errors
    row[2] += 1


def add_state_event(rows: PendingRows, device_id: str, kind: str, when: float, seq: int) -> None:
    """A failure or recovery event: the device's state event becomes that of its highest seq."""
    current = rows.state_events.get(device_id)
    if current is None or current[2] < seq:
        rows.state_events[device_id] = (kind, when, seq)


_HISTORY_SQL = (
    "INSERT INTO version_history (device_id, model_name, model_version, variant, backend, first_seen, "
    "last_seen, first_seq, last_seq, messages) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (device_id, model_name, model_version, variant, backend) DO UPDATE SET "
    "first_seen = LEAST(version_history.first_seen, excluded.first_seen), "
    "last_seen = GREATEST(version_history.last_seen, excluded.last_seen), "
    "first_seq = LEAST(version_history.first_seq, excluded.first_seq), "
    "last_seq = GREATEST(version_history.last_seq, excluded.last_seq), "
    "messages = version_history.messages + excluded.messages")
_COUNTS_SQL = (
    "INSERT INTO version_counts (device_id, model_name, model_version, bucket_start, inferences, errors, "
    "messages) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model_name, model_version, device_id, bucket_start) "
    "DO UPDATE SET inferences = version_counts.inferences + excluded.inferences, "
    "errors = version_counts.errors + excluded.errors, messages = version_counts.messages + excluded.messages")
_DISTS_SQL = (
    "INSERT INTO dist_counts (device_id, model_name, model_version, bucket_start, metric, key, n) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model_name, model_version, device_id, bucket_start, metric, key) "
    "DO UPDATE SET n = dist_counts.n + excluded.n")
_SHADOWS_SQL = (
    "INSERT INTO shadow_counts (device_id, model_name, primary_version, candidate_version, bucket_start, metric, "
    "key, n) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model_name, candidate_version, device_id, "
    "primary_version, bucket_start, metric, key) DO UPDATE SET n = shadow_counts.n + excluded.n")
_SAMPLES_SQL = (
    "INSERT INTO latency_samples (device_id, model_name, model_version, seq, time, p50_ms, p95_ms, count, errors) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_EVENTS_SQL = (
    "INSERT INTO events (device_id, seq, time, kind, detail, model_name, model_version, from_version) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_GAP_DELETE_SQL = "DELETE FROM seq_gaps WHERE device_id = ? AND first_seq = ?"
_GAPS_SQL = "INSERT INTO seq_gaps (device_id, first_seq, last_seq, counted) VALUES (?, ?, ?, ?)"
_STATE_EVENT_SQL = (
    "UPDATE devices SET state_event_kind = ?, state_event_time = ?, state_event_seq = ? "
    "WHERE device_id = ? AND (state_event_seq IS NULL OR state_event_seq < ?)")


def write(connection: Any, rows: PendingRows, insert: Callable[[Any, str, list[tuple]], None] | None = None) -> None:
    """Sends every pending write (sorted by key: two writers never lock rows in a cycle), then forgets them.

    `insert` is the engine's many-row INSERT (`Engine.insert_rows`; default: `insert_rows`)."""
    insert = insert or insert_rows
    if not rows.unwritten:
        return
    rows.writes += 1
    _write_gaps(connection, rows.gaps, insert)
    _write_devices(connection, rows.devices)
    insert(connection, _HISTORY_SQL, [(*key, *row) for key, row in sorted(rows.history.items())])
    insert(connection, _COUNTS_SQL, [(*key, *row) for key, row in sorted(rows.counts.items())])
    insert(connection, _DISTS_SQL, [(*key, n) for key, n in sorted(rows.dists.items()) if n > 0])
    insert(connection, _SHADOWS_SQL, [(*key, n) for key, n in sorted(rows.shadows.items()) if n > 0])
    insert(connection, _SAMPLES_SQL, [rows.samples[key] for key in sorted(rows.samples)])
    insert(connection, WINDOWS_SQL, [rows.windows[key] for key in sorted(rows.windows)])
    insert(connection, _EVENTS_SQL, [rows.events[key] for key in sorted(rows.events)])
    connection.executemany(_STATE_EVENT_SQL, [(kind, when, seq, device_id, seq) for device_id, (kind, when, seq)
                                              in sorted(rows.state_events.items())])
    rows._clear_writes()


def insert_rows(connection: Any, sql: str, rows: list[tuple]) -> None:
    """`sql` (an INSERT of one row: `VALUES (?, ...)`) for every row of `rows`, many rows per statement.

    The rows' keys must be distinct (they are: merged per key), as PostgreSQL refuses an `ON CONFLICT DO
    UPDATE` that would change one row twice."""
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start:start + ROWS_PER_INSERT]
        many = _values_list(sql, len(chunk))
        connection.execute(many, [value for row in chunk for value in row])


@functools.lru_cache(maxsize=256)
def _values_list(sql: str, count: int) -> str:
    match = _ONE_ROW.search(sql)
    if match is None:
        raise ValueError(f"not a one-row INSERT: {sql[:60]}")
    values = ", ".join([match.group(1)] * count)
    return f"{sql[:match.start(1)]}{values}{sql[match.end(1):]}"


def _write_gaps(connection: Any, gaps: dict[str, DeviceGaps], insert: Callable[[Any, str, list[tuple]], None]) -> None:
    """The missing seq ranges that changed: those gone or changed deleted, then those new or changed inserted."""
    deletes, inserts = [], []
    for device_id, device in sorted(gaps.items()):
        if device.spans == device.stored:
            continue
        deletes += [(device_id, first) for first, span in sorted(device.stored.items())
                    if device.spans.get(first) != span]
        inserts += [(device_id, first, *span) for first, span in sorted(device.spans.items())
                    if device.stored.get(first) != span]
        device.stored = dict(device.spans)
    connection.executemany(_GAP_DELETE_SQL, deletes)
    insert(connection, _GAPS_SQL, inserts)


def _write_devices(connection: Any, devices: dict[str, DeviceDelta]) -> None:
    """One UPDATE text per set of snapshot columns (the snapshot of a message without inference has no fps)."""
    grouped: dict[str, list[tuple]] = {}
    for device_id, delta in sorted(devices.items()):
        assignments = "".join(f"{column} = ?, " for column in delta.snapshot)
        sql = (f"UPDATE devices SET {assignments}max_seq = GREATEST(max_seq, ?), messages = messages + ?, "
               "duplicates = duplicates + ?, lost = lost + ?, first_seen = LEAST(first_seen, ?), "
               "last_seen = GREATEST(last_seen, ?), last_received = GREATEST(last_received, ?) WHERE device_id = ?")
        grouped.setdefault(sql, []).append(
            (*delta.snapshot.values(), delta.max_seq, *(getattr(delta, name) for name in _INT_FIELDS),
             delta.first_seen, delta.last_seen, delta.last_received, device_id))
    for sql, params in grouped.items():
        connection.executemany(sql, params)


class _SavepointOnWrite:
    """The connection as one message sees it: a savepoint is taken before the message's first statement, so a
    message that sends none (the common one: its writes are pending, `pending_rows`) costs no round trip."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.taken = False

    def _take(self) -> None:
        if not self.taken:
            self.connection.execute("SAVEPOINT telemetry_message")
            self.taken = True

    def execute(self, sql: str, params: Any = ()) -> Any:
        self._take()
        return self.connection.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> Any:
        self._take()
        return self.connection.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connection, name)


@contextmanager
def message_savepoint(store: Any) -> Iterator[None]:
    """What one message does in `store` (a `FleetStore`) is undone alone when it fails (to its savepoint)."""
    scoped = _SavepointOnWrite(store.connection)
    store.connection = scoped
    try:
        yield
    except BaseException:
        if scoped.taken:
            scoped.connection.execute("ROLLBACK TO telemetry_message")
            scoped.connection.execute("RELEASE telemetry_message")
        raise
    else:
        if scoped.taken:
            scoped.connection.execute("RELEASE telemetry_message")
    finally:
        store.connection = scoped.connection
