"""The fleet state the monitor writes and `fleet status` / the rollout gate read: the store interface.

Two engines behind one interface, chosen by the store URL (`MonitorConfig.store_url`): an SQLite file
(`store_sqlite`, the embedded default) or a PostgreSQL database (`store_postgres`: several monitor processes
on one subscription at once). The SQL is one text for both (`store_schema` holds the tables). Times are
stored as UTC epoch seconds. Writes are batched: `lock_devices` reads the locked devices' dedupe state once,
`apply` (in `ingest`) keeps its row changes pending, merged per row (`pending_rows`), and `commit(store)`
writes them one statement per table, trims and refreshes the latency windows it touched (one statement
each for the batch), then commits once. Readers inside the writer's transaction (`read_snapshot`) see
the pending changes written first.

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
- version_totals, fleet_counters, device_tags: the aggregates `fleet status` reads (`aggregates`).

Every time kept (first/last seen, buckets, samples, events) is the monitor's receive time, never the device's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from edgefleet.monitor.aggregates import Deltas, flush
from edgefleet.monitor.errors import FleetStateError
from edgefleet.monitor.pending_rows import PendingRows, load, write
from edgefleet.monitor.stats import P50, P95, LatencySample
from edgefleet.monitor.store_engine import Engine, StoreLocation, parse_store_url
from edgefleet.monitor.store_schema import FILL_AGGREGATES, READABLE_SCHEMAS, SCHEMA_VERSION

if TYPE_CHECKING:
    from edgefleet.monitor.config import MonitorConfig

log = logging.getLogger(__name__)

_NOT_A_STATE_FIX = ("point --db / store_path / store.url at the state `edgefleet monitor` writes, or move this "
                    "file away to start a new one")
AGGREGATES_SINCE = 3  # the schema that added the aggregates: older states are filled once on upgrade


@dataclass
class FleetStore:
    """An open fleet state store. Use one per thread; `open_store` makes one.

    Attributes:
        connection: the engine's connection (a transaction is open between commits): sqlite3's, or
            `store_postgres.PgConnection` with the same execute/executemany/commit/rollback surface.
        engine: what differs between the engines (`store_engine.Engine`).
        location: the SQLite file or the PostgreSQL URL.
        latency_window: latency samples kept per (device, model version).
        count_bucket_s: width of the version_counts time buckets.
        drift_windows: keep each message's distributions for the drift watch (`drift_feed`); off when the
            monitor runs without it (`drift.enabled: false`), so that nothing collects them.
    """

    connection: Any
    engine: Engine
    location: StoreLocation
    latency_window: int
    count_bucket_s: float
    drift_windows: bool = True
    dirty_windows: set[tuple[str, str, str]] = field(default_factory=set, repr=False)
    pending: Deltas = field(default_factory=Deltas, repr=False)
    locked: set[str] = field(default_factory=set, repr=False)
    rows: PendingRows = field(default_factory=PendingRows, repr=False)

    @property
    def path(self) -> Path | str:
        """The SQLite file, or the PostgreSQL URL without its password (for messages)."""
        return self.location.path or self.location.display

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


@overload
def from_epoch(seconds: None) -> None: ...
@overload
def from_epoch(seconds: float) -> datetime: ...
def from_epoch(seconds: float | None) -> datetime | None:
    """An aware UTC datetime from epoch seconds (None stays None)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def location_of(where: Path | str) -> StoreLocation:
    """A store URL (`sqlite:///...`, `postgresql://...`) or a plain SQLite file path."""
    if isinstance(where, str) and "://" in where:
        return parse_store_url(where)
    return StoreLocation("sqlite", path=Path(where).expanduser())


def _connect(location: StoreLocation, create: bool) -> tuple[Any, Engine, Any]:
    """(connection, engine, schema creator) of `location`."""
    if location.engine == "postgresql":
        try:
            from edgefleet.monitor import store_postgres
        except ImportError as error:
            raise FleetStateError(f"the fleet state at {location.display} is PostgreSQL, and its driver "
                                  f"(psycopg) is not installed", "install edgefleet[pipeline] (it brings "
                                  "psycopg[binary]), or use an sqlite:/// store URL") from error
        connection = store_postgres.PgConnection(location.url or "")
        return connection, store_postgres.ENGINE, store_postgres.create_schema
    from edgefleet.monitor import store_sqlite

    path = location.path
    if path is None:  # location_of and parse_store_url always give an SQLite location its file
        raise FleetStateError(f"the SQLite fleet state {location.display} names no file",
                              "pass --db / store_path as a file path or an sqlite:///file URL")
    if not create and not path.is_file():
        raise FleetStateError(f"no fleet state at {path}",
                              "run `edgefleet monitor` (it creates the file) or pass --db / store_path of the "
                              "file the monitor writes")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = store_sqlite.connect(path)
    except store_sqlite.ENGINE.errors as error:
        raise FleetStateError(f"{path} is not a readable fleet state ({error})", _NOT_A_STATE_FIX) from error
    return connection, store_sqlite.ENGINE, store_sqlite.create_schema


def _schema_version(connection: Any) -> int | None:
    row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else int(row[0])


def _prepare(connection: Any, engine: Engine, create_schema: Any, create: bool) -> int | None:
    """Creates or upgrades the schema (when `create`, or when an existing state is older); its version."""
    found = _schema_version(connection) if engine.has_table(connection, "meta") else None
    connection.rollback()
    if found is None and not create:
        return None
    if found is not None and found not in READABLE_SCHEMAS:
        return found
    if create or (found is not None and found < SCHEMA_VERSION):
        create_schema(connection)
        connection.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
                           (str(SCHEMA_VERSION),))
        if found is not None and found < AGGREGATES_SINCE:
            for statement in FILL_AGGREGATES:
                connection.execute(statement)
        connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        connection.commit()
        return SCHEMA_VERSION
    return found


def open_store(where: Path | str, *, latency_window: int, count_bucket_s: float, create: bool = True) -> FleetStore:
    """Opens (and when `create`, creates) the fleet state at `where`.

    Args:
        where: an SQLite file (its directory is created when `create`), or a store URL (`sqlite:///...`,
            `postgresql://...`).
        latency_window: latency samples kept per (device, model version).
        count_bucket_s: time resolution of the per-version counts.
        create: False for readers: a missing state is then an error instead of a new empty fleet.

    Raises:
        FleetStateError: the state is missing (and not `create`), not a fleet state, of a newer schema, or
            the database cannot be reached.
    """
    location = location_of(where)
    connection, engine, create_schema = _connect_or_explain(location, create)
    try:
        version = _prepare(connection, engine, create_schema, create)
    except engine.errors as error:
        connection.close()
        raise FleetStateError(f"{location.display} is not a readable fleet state ({error})",
                              _NOT_A_STATE_FIX) from error
    if version is None or version not in READABLE_SCHEMAS:
        connection.close()
        found = "none" if version is None else version
        raise FleetStateError(f"{location.display} has fleet state schema {found}, this edgefleet reads "
                              f"{SCHEMA_VERSION}", "use the edgefleet version that wrote it, run `edgefleet "
                              "monitor` once to create it, or move the file away to start anew")
    return FleetStore(connection=connection, engine=engine, location=location, latency_window=latency_window,
                      count_bucket_s=count_bucket_s)


def _connect_or_explain(location: StoreLocation, create: bool) -> tuple[Any, Engine, Any]:
    try:
        return _connect(location, create)
    except FleetStateError:
        raise
    except Exception as error:  # noqa: BLE001 - the driver's own error (server down, bad credentials, bad file)
        raise FleetStateError(f"cannot open the fleet state at {location.display}: {error}",
                              "check that the database is up and the URL's user, host, port and database "
                              "name are right (or the file is a fleet state)") from error


@contextmanager
def read_snapshot(store: FleetStore) -> Iterator[Any]:
    """One consistent read transaction (several SELECTs see the same state even while the monitor writes)."""
    connection = store.connection
    if connection.in_transaction:
        # The writer reading its own uncommitted batch: already one consistent view (aggregates included).
        write_pending(store)
        yield connection
        return
    store.engine.begin_read(connection)
    try:
        yield connection
    finally:
        connection.commit()


def write_pending(store: FleetStore) -> None:
    """Sends the open transaction's pending row writes and aggregate changes (not committed)."""
    write(store.connection, store.rows, store.engine.insert_rows)
    flush(store.connection, store.pending)


def commit(store: FleetStore) -> None:
    """Writes what is pending, trims and refreshes the latency windows touched since the last commit, writes
    the aggregates' changes, then commits the transaction."""
    connection = store.connection
    with store.engine.pipeline(connection):  # PostgreSQL: two round trips for all of it, not one per statement
        write(connection, store.rows, store.engine.insert_rows)
        if store.dirty_windows:
            ids = sorted({device_id for device_id, _, _ in store.dirty_windows})
            trim_windows(connection, ids, store.latency_window)
            refresh_device_windows(connection, ids)
        flush(connection, store.pending)
    connection.commit()
    _ended(store)


def rollback(store: FleetStore) -> None:
    """Abandons everything since the last commit."""
    store.connection.rollback()
    store.pending.clear()
    _ended(store)


def _ended(store: FleetStore) -> None:
    store.dirty_windows.clear()
    store.locked.clear()
    store.rows.forget()


def lock_devices(store: FleetStore, device_ids: Iterable[str]) -> None:
    """Opens the write transaction and locks `device_ids` until it ends (those not locked yet, sorted), and
    reads their dedupe state (`pending_rows.load`)."""
    if not store.connection.in_transaction:
        # The last transaction ended without `commit`/`rollback` of the store: its locks and reads are gone
        # (writes still pending go out with the next commit).
        store.locked.clear()
        store.rows.forget_reads()
    store.engine.begin_write(store.connection)
    wanted = sorted(set(device_ids) - store.locked)
    if wanted:
        store.engine.lock_devices(store.connection, wanted)
        store.locked.update(wanted)
        load(store.connection, store.rows, wanted)


def trim_windows(connection: Any, device_ids: list[str], window: int) -> None:
    """Keeps the last `window` latency samples (by seq) of each (device, model, version) of `device_ids`.

    The window is by seq, so a late (out-of-order) sample lands in its place and the oldest goes."""
    connection.execute(
        "DELETE FROM latency_samples WHERE (device_id, model_name, model_version, seq) IN ("
        "SELECT device_id, model_name, model_version, seq FROM (SELECT device_id, model_name, model_version, seq, "
        "ROW_NUMBER() OVER (PARTITION BY device_id, model_name, model_version ORDER BY seq DESC) AS newer "
        "FROM latency_samples WHERE device_id IN (SELECT value FROM json_each(?))) AS ranked WHERE newer > ?)",
        (json.dumps(device_ids), window))


def window_samples(connection: Any, device_id: str, model: str, version: str,
                   since: float | None = None) -> list[LatencySample]:
    """The latency samples kept for (device, model, version), optionally only those at or after `since`."""
    query = ("SELECT p50_ms, p95_ms, count, errors FROM latency_samples "
             "WHERE device_id = ? AND model_name = ? AND model_version = ?")
    params: tuple = (device_id, model, version)
    if since is not None:
        query += " AND time >= ?"
        params += (since,)
    return [LatencySample(*row) for row in connection.execute(query, params)]


_WINDOWS_SQL = """
WITH ids AS (SELECT value AS device_id FROM json_each(?)),
samples AS (
    SELECT s.device_id, s.p50_ms, s.p95_ms, s.count, s.errors, s.count - s.errors AS weight
    FROM devices AS d JOIN latency_samples AS s ON s.device_id = d.device_id AND s.model_name = d.model_name
        AND s.model_version = d.model_version
    WHERE d.device_id IN (SELECT device_id FROM ids) AND d.model_version <> ''),
ranked AS (
    SELECT device_id, p50_ms, p95_ms,
        SUM(weight) OVER (PARTITION BY device_id ORDER BY p50_ms) AS upto_p50,
        SUM(weight) OVER (PARTITION BY device_id ORDER BY p95_ms) AS upto_p95,
        CAST(SUM(weight) OVER (PARTITION BY device_id) AS DOUBLE PRECISION) AS total
    FROM samples WHERE weight > 0),
percentiles AS (
    SELECT device_id, MIN(CASE WHEN upto_p50 >= ? * total THEN p50_ms END) AS p50,
        MIN(CASE WHEN upto_p95 >= ? * total THEN p95_ms END) AS p95
    FROM ranked GROUP BY device_id),
totals AS (SELECT device_id, SUM(count) AS inferences, SUM(errors) AS errors FROM samples GROUP BY device_id),
windows AS (
    SELECT ids.device_id, p.p50, p.p95, COALESCE(t.inferences, 0) AS inferences, COALESCE(t.errors, 0) AS errors
    FROM ids LEFT JOIN totals AS t ON t.device_id = ids.device_id
        LEFT JOIN percentiles AS p ON p.device_id = ids.device_id)
UPDATE devices SET latency_p50_ms = w.p50, latency_p95_ms = w.p95, window_inferences = w.inferences,
    window_errors = w.errors, error_ratio = CASE
        WHEN w.inferences > 0
            THEN LEAST(1.0, CAST(w.errors AS DOUBLE PRECISION) / CAST(w.inferences AS DOUBLE PRECISION))
        WHEN w.errors > 0 THEN 1.0 END
FROM windows AS w WHERE devices.device_id = w.device_id"""


def refresh_device_windows(connection: Any, device_ids: list[str]) -> None:
    """Recomputes the cached p50/p95, window counts and error ratio of the version each device runs now, in
    one statement that returns nothing (PostgreSQL's pipeline does not wait on it): `stats.window_stats`'s
    weighted nearest-rank percentile (the smallest value whose cumulative weight reaches the fraction of the
    total; integer weights, so `>= fraction * total` is `>= ceil(fraction * total)`, in doubles as Python)."""
    connection.execute(_WINDOWS_SQL, (json.dumps(device_ids), P50, P95))


def open_fleet_store(config: MonitorConfig, *, create: bool = True) -> FleetStore:
    """Opens the fleet state `config` names (readers pass create=False)."""
    store = open_store(config.store_location, latency_window=config.latency_window,
                       count_bucket_s=config.count_bucket_s, create=create)
    store.drift_windows = config.drift.enabled
    return store
