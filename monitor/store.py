"""The fleet state: one SQLite file the monitor writes and `fleet status` / the rollout gate read.

Times are stored as UTC epoch seconds (REAL). The store runs in WAL mode so readers (the CLI, the
rollout) never block the monitor's writer. Writes are batched: `apply` (in `ingest`) changes rows inside
the open transaction and `commit(store)` refreshes the latency windows it touched, then commits once.

Tables:
- devices: one row per device, the latest snapshot (by seq) plus dedupe state (`max_seq`), lost and
  duplicate counters, and the cached window percentiles of the version it runs now.
- seq_gaps: missing seq ranges per device; `counted` ranges are losses, the range below the first seq
  ever seen is not (the monitor may have joined late) but still lets a late arrival in exactly once.
- latency_samples: per (device, model, version), the last `latency_window` messages' latency summaries.
- version_counts: inferences/errors per (device, model, version, time bucket) for the health gate.
- dist_counts (schema 2): the telemetry's distributions per (device, model, version, time bucket, metric,
  key), for the canary judge (`edgefleet.monitor.windows`).
- events: swap / swap_failed / rollback / error / started / stopped, with time, the version the event names
  and, for swaps and rollbacks, the version left (`from_version`).
- version_history: per (device, model, version, variant, backend), first and last seen.
- malformed: messages that failed validation, by Pub/Sub message id, with delivery attempts.
- device_epochs: the spool epochs of each device and where their seqs start on its one seq line.
- verified_devices: devices heard signed (by their own key) at least once: never again accepted unsigned.

Every time kept (first/last seen, buckets, samples, events) is the monitor's receive time, never the device's.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edgefleet.monitor.errors import FleetStateError
from edgefleet.monitor.stats import LatencySample, window_stats

if TYPE_CHECKING:
    from edgefleet.monitor.config import MonitorConfig

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)  # a schema 1 file is upgraded in place by the writer (the new table is additive)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    last_received REAL NOT NULL,
    max_seq INTEGER NOT NULL,
    messages INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    model_name TEXT, model_version TEXT, model_variant TEXT, backend TEXT,
    fps REAL,
    cpu_temp_c REAL, uptime_s REAL, mem_total_mb REAL, mem_available_mb REAL, load_1m REAL,
    tpu_present INTEGER, spool_depth INTEGER, spool_dropped INTEGER,
    latency_p50_ms REAL, latency_p95_ms REAL, window_inferences INTEGER, window_errors INTEGER,
    state_event_kind TEXT, state_event_time REAL, state_event_seq INTEGER
);
CREATE TABLE IF NOT EXISTS seq_gaps (
    device_id TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    counted INTEGER NOT NULL,
    PRIMARY KEY (device_id, first_seq)
);
CREATE TABLE IF NOT EXISTS latency_samples (
    device_id TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL, seq INTEGER NOT NULL,
    time REAL NOT NULL, p50_ms REAL NOT NULL, p95_ms REAL NOT NULL, count INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    PRIMARY KEY (device_id, model_name, model_version, seq)
);
CREATE TABLE IF NOT EXISTS version_counts (
    device_id TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
    bucket_start REAL NOT NULL, inferences INTEGER NOT NULL, errors INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    PRIMARY KEY (model_name, model_version, device_id, bucket_start)
);
CREATE TABLE IF NOT EXISTS dist_counts (
    device_id TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
    bucket_start REAL NOT NULL, metric TEXT NOT NULL, key INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (model_name, model_version, device_id, bucket_start, metric, key)
);
CREATE TABLE IF NOT EXISTS events (
    device_id TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL, kind TEXT NOT NULL,
    detail TEXT NOT NULL, model_name TEXT, model_version TEXT, from_version TEXT,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX IF NOT EXISTS events_by_version ON events (model_version, kind, time);
CREATE INDEX IF NOT EXISTS events_by_from_version ON events (from_version, kind, time);
CREATE TABLE IF NOT EXISTS version_history (
    device_id TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
    variant TEXT NOT NULL, backend TEXT NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    PRIMARY KEY (device_id, model_name, model_version, variant, backend)
);
CREATE TABLE IF NOT EXISTS malformed (
    message_id TEXT PRIMARY KEY, device_id TEXT, error TEXT NOT NULL, deliveries INTEGER NOT NULL,
    first_received REAL NOT NULL, last_received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS verified_devices (
    device_id TEXT PRIMARY KEY, first_verified REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS device_epochs (
    device_id TEXT NOT NULL, epoch INTEGER NOT NULL, base INTEGER NOT NULL,
    PRIMARY KEY (device_id, epoch)
);
"""


@dataclass
class FleetStore:
    """An open fleet state store. Use one per thread; `open_store` makes one.

    Attributes:
        connection: the SQLite connection (autocommit off: a transaction is open between commits).
        path: the database file.
        latency_window: latency samples kept per (device, model version).
        count_bucket_s: width of the version_counts time buckets.
    """

    connection: sqlite3.Connection
    path: Path
    latency_window: int
    count_bucket_s: float
    dirty_windows: set[tuple[str, str, str]] = field(default_factory=set, repr=False)

    def close(self) -> None:
        """Closes the connection, rolling back anything not committed."""
        self.connection.close()

    def __enter__(self) -> FleetStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def to_epoch(moment: datetime) -> float:
    """UTC epoch seconds; a naive datetime is taken as UTC (the telemetry contract sends UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def from_epoch(seconds: float | None) -> datetime | None:
    """An aware UTC datetime from epoch seconds (None stays None)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def open_store(path: Path, *, latency_window: int, count_bucket_s: float, create: bool = True) -> FleetStore:
    """Opens (and when `create`, creates) the fleet state at `path`.

    Args:
        path: the SQLite file; its directory is created when `create`.
        latency_window: latency samples kept per (device, model version).
        count_bucket_s: time resolution of the per-version counts.
        create: False for readers: a missing file is then an error instead of a new empty fleet.

    Raises:
        FleetStateError: the file is missing (and not `create`), not a fleet state, or of a newer schema.
    """
    path = Path(path).expanduser()
    if not create and not path.is_file():
        raise FleetStateError(f"no fleet state at {path}",
                              "run `edgefleet monitor` (it creates the file) or pass --db / store_path of the "
                              "file the monitor writes")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=True)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=10000")
        if create:
            connection.executescript(_SCHEMA)
            connection.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                               (str(SCHEMA_VERSION),))
            connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version' AND value IN (?)",
                               (str(SCHEMA_VERSION), *(str(v) for v in READABLE_SCHEMAS[:-1])))
            connection.commit()
        row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as error:
        raise FleetStateError(f"{path} is not a readable fleet state ({error})",
                              "point --db / store_path at the file `edgefleet monitor` writes, or move this "
                              "file away to start a new one") from error
    if row is None or int(row[0]) not in READABLE_SCHEMAS:
        connection.close()
        found = "none" if row is None else row[0]
        raise FleetStateError(f"{path} has fleet state schema {found}, this edgefleet reads {SCHEMA_VERSION}",
                              "use the edgefleet version that wrote it, or move the file away to start anew")
    return FleetStore(connection=connection, path=path, latency_window=latency_window,
                      count_bucket_s=count_bucket_s)


@contextmanager
def read_snapshot(store: FleetStore) -> Iterator[sqlite3.Connection]:
    """One consistent read transaction (several SELECTs see the same state even while the monitor writes)."""
    connection = store.connection
    if connection.in_transaction:
        # The writer reading its own uncommitted batch: already one consistent view.
        yield connection
        return
    connection.execute("BEGIN")
    try:
        yield connection
    finally:
        connection.execute("COMMIT")


def commit(store: FleetStore) -> None:
    """Trims and refreshes the latency windows touched since the last commit, then commits the transaction."""
    connection = store.connection
    for device_id, model, version in store.dirty_windows:
        _trim_window(connection, device_id, model, version, store.latency_window)
    for device_id in {device_id for device_id, _, _ in store.dirty_windows}:
        refresh_device_window(connection, device_id)
    connection.commit()
    store.dirty_windows.clear()


def rollback(store: FleetStore) -> None:
    """Abandons everything since the last commit."""
    store.connection.rollback()
    store.dirty_windows.clear()


def _trim_window(connection: sqlite3.Connection, device_id: str, model: str, version: str, window: int) -> None:
    # The window is by seq, so a late (out-of-order) sample lands in its place and the oldest goes.
    key = (device_id, model, version)
    cutoff = connection.execute(
        "SELECT seq FROM latency_samples WHERE device_id = ? AND model_name = ? AND model_version = ? "
        "ORDER BY seq DESC LIMIT 1 OFFSET ?", (*key, window)).fetchone()
    if cutoff is not None:
        connection.execute("DELETE FROM latency_samples WHERE device_id = ? AND model_name = ? "
                           "AND model_version = ? AND seq <= ?", (*key, cutoff[0]))


def window_samples(connection: sqlite3.Connection, device_id: str, model: str, version: str,
                   since: float | None = None) -> list[LatencySample]:
    """The latency samples kept for (device, model, version), optionally only those at or after `since`."""
    query = ("SELECT p50_ms, p95_ms, count, errors FROM latency_samples "
             "WHERE device_id = ? AND model_name = ? AND model_version = ?")
    params: tuple = (device_id, model, version)
    if since is not None:
        query += " AND time >= ?"
        params += (since,)
    return [LatencySample(*row) for row in connection.execute(query, params)]


def refresh_device_window(connection: sqlite3.Connection, device_id: str) -> None:
    """Recomputes the cached p50/p95 and window counts of the version the device runs now."""
    row = connection.execute("SELECT model_name, model_version FROM devices WHERE device_id = ?",
                             (device_id,)).fetchone()
    if row is None:
        return
    model, version = row
    stats = window_stats(window_samples(connection, device_id, model, version) if version else [])
    connection.execute(
        "UPDATE devices SET latency_p50_ms = ?, latency_p95_ms = ?, window_inferences = ?, window_errors = ? "
        "WHERE device_id = ?",
        (stats.latency_p50_ms, stats.latency_p95_ms, stats.inferences, stats.errors, device_id))


def open_fleet_store(config: MonitorConfig, *, create: bool = True) -> FleetStore:
    """Opens the fleet state `config` names (readers pass create=False)."""
    return open_store(config.store_path, latency_window=config.latency_window,
                      count_bucket_s=config.count_bucket_s, create=create)
