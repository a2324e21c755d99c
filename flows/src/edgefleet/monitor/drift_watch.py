"""The monitor's drift watch: on a periodic tick, every device against its own baseline (issue 25, item 1).

Ingest is untouched: it already adds each summary's distributions to `dist_counts` per (device, version, count
bucket). Every `drift.interval_s` the monitor's loop calls `tick`, which in one write transaction
1. claims the next range of complete count buckets (those ended `settle_s` ago) by moving the cursor
   `drift_cursor` in `meta` (compare-and-set: of several monitors on one PostgreSQL store, one reads a range);
2. reads the range's class, score and detection counts of every device on the version it runs now (one
   statement, by the `dist_counts` key), one window per bucket;
3. steps each device's `drift_state` row (`drift_step`): counting baseline blocks, fitting the baseline when
   there are enough (one read of the device's windows since its first bucket), then its CUSUMs;
4. writes the rows and one `drift_events` row per alarm (the event; the row's status `drift` is the state),
   and commits.

A drift stays the device's state until `accept` (`edgefleet fleet drift-accept`): the device then collects a
new baseline on the scene it sees now. A new version on a device starts a new row (its own baseline).
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgefleet.kernel.contracts.distributions import Distributions
from edgefleet.monitor.calibrations import CalibrationSource, record_missing
from edgefleet.monitor.drift import Drift
from edgefleet.monitor.drift_step import WatchRow, distributions, fit_and_run, needs_fit, new_row, step
from edgefleet.monitor.store import FleetStore

if TYPE_CHECKING:
    from edgefleet.monitor.config import DriftWatchConfig

log = logging.getLogger(__name__)

CURSOR_KEY = "drift_cursor"
_ROW_COLUMNS = tuple(WatchRow.model_fields)
_WATCHED_METRICS = ("score", "class", "detections")


@dataclass(frozen=True)
class TickReport:
    """What one tick did: the bucket range read (None: nothing to read or another monitor had it)."""

    start: float | None
    end: float | None
    devices: int
    fitted: int
    drifts: tuple[tuple[str, Drift], ...]


def complete_end(now: float, bucket_s: float, settle_s: float) -> float:
    """The end of the last count bucket that ended at least `settle_s` before `now` (a bucket start)."""
    return math.floor((now - settle_s) / bucket_s) * bucket_s


def _claim(connection: Any, start: float | None, end: float) -> bool:
    """Moves the cursor from `start` to `end`; False when another monitor moved it first."""
    if start is None:
        return connection.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                  (CURSOR_KEY, repr(end))).rowcount == 1
    return connection.execute("UPDATE meta SET value = ? WHERE key = ? AND value = ?",
                              (repr(end), CURSOR_KEY, repr(start))).rowcount == 1


def _cursor(connection: Any) -> float | None:
    row = connection.execute("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,)).fetchone()
    return None if row is None else float(row[0])


def _windows(rows: Iterable[tuple]) -> dict[tuple[str, str, str], list[tuple[float, Distributions]]]:
    """(device, model, version) -> its windows in bucket order, from rows sorted by device and bucket."""
    grouped: dict[tuple[str, str, str], dict[float, dict[str, dict[int, int]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(dict)))
    for device_id, model, version, bucket, metric, key, n in rows:
        grouped[(device_id, model, version)][float(bucket)][metric][int(key)] = int(n)
    return {series: [(bucket, distributions(counts)) for bucket, counts in sorted(buckets.items())]
            for series, buckets in grouped.items()}


def _read_range(connection: Any, start: float, end: float) -> dict:
    return _windows(connection.execute(
        "SELECT d.device_id, d.model_name, d.model_version, d.bucket_start, d.metric, d.key, d.n FROM devices AS v "
        "JOIN dist_counts AS d ON d.model_name = v.model_name AND d.model_version = v.model_version "
        "AND d.device_id = v.device_id WHERE d.bucket_start >= ? AND d.bucket_start < ? "
        "AND d.metric IN (?, ?, ?) ORDER BY d.device_id, d.bucket_start",
        (start, end, *_WATCHED_METRICS)))


def read_device_windows(connection: Any, series: tuple[str, str, str], start: float, end: float) -> list[Distributions]:
    device_id, model, version = series
    rows = connection.execute(
        "SELECT device_id, model_name, model_version, bucket_start, metric, key, n FROM dist_counts "
        "WHERE model_name = ? AND model_version = ? AND device_id = ? AND bucket_start >= ? AND bucket_start < ? "
        "AND metric IN (?, ?, ?) ORDER BY bucket_start", (model, version, device_id, start, end, *_WATCHED_METRICS))
    return [dist for _, dist in _windows(rows).get(series, [])]


def read_rows(connection: Any, device_ids: Iterable[str]) -> dict[tuple[str, str, str], WatchRow]:
    """The drift rows of `device_ids` (every version they have one for)."""
    rows = connection.execute(f"SELECT {', '.join(_ROW_COLUMNS)} FROM drift_state WHERE device_id IN "
                              "(SELECT value FROM json_each(?))", (json.dumps(sorted(set(device_ids))),))
    found = {}
    for values in rows:
        row = WatchRow(**dict(zip(_ROW_COLUMNS, values, strict=True)))
        found[(row.device_id, row.model_name, row.model_version)] = row
    return found


def _write(connection: Any, rows: list[WatchRow], drifts: list[tuple[WatchRow, Drift]], now: float) -> None:
    if rows:
        names = ", ".join(_ROW_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _ROW_COLUMNS[3:])
        connection.executemany(
            f"INSERT INTO drift_state ({names}) VALUES ({', '.join('?' * len(_ROW_COLUMNS))}) "
            f"ON CONFLICT (device_id, model_name, model_version) DO UPDATE SET {updates}",
            [tuple(getattr(row, c) for c in _ROW_COLUMNS) for row in rows])
    if drifts:
        connection.executemany(
            "INSERT INTO drift_events (device_id, model_name, model_version, time, statistic, direction, effect_sd, "
            "effect, baseline, onset_block, alarm_block) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [(row.device_id, row.model_name, row.model_version, now, d.metric, d.direction, d.effect_sd, d.effect,
              d.baseline, d.onset_block, d.alarm_block) for row, d in drifts])


def tick(store: FleetStore, config: DriftWatchConfig, now: float,
         calibration: CalibrationSource | None = None) -> TickReport:
    """Reads the next range of complete buckets into every device's drift watch (see the module docstring);
    with `calibration`, also the verified calibration table of every version seen without one (`calibrations`)."""
    connection = store.connection
    store.engine.begin_write(connection)
    try:
        report = _tick(store, config, now, calibration)
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    for device_id, drift in report.drifts:
        log.warning("drift on %s: %s %s by %.2f SD (%.4g in its units; baseline %.4g)", device_id, drift.metric,
                    drift.direction, drift.effect_sd, drift.effect, drift.baseline)
    return report


def _tick(store: FleetStore, config: DriftWatchConfig, now: float,
          calibration: CalibrationSource | None) -> TickReport:
    connection, bucket_s = store.connection, store.count_bucket_s
    end = complete_end(now, bucket_s, config.settle_s)
    start = _cursor(connection)
    if start is None:
        first = connection.execute("SELECT MIN(bucket_start) FROM dist_counts").fetchone()[0]
        start = end if first is None else min(float(first), end)
        if not _claim(connection, None, start):
            return TickReport(None, None, 0, 0, ())
    end = min(end, start + config.max_buckets_per_tick * bucket_s)
    if end <= start or not _claim(connection, start, end):
        return TickReport(None, None, 0, 0, ())
    windows = _read_range(connection, start, end)
    if calibration is not None:
        record_missing(connection, calibration, {(model, version) for _, model, version in windows}, now,
                       config.calibration_recheck_s)
    known = read_rows(connection, {device_id for device_id, _, _ in windows})
    rows, drifts, fitted = [], [], 0
    for series, found in sorted(windows.items()):
        row = known.get(series) or new_row(*series, first_bucket=found[0][0], now=now)
        row, alarms = step(row, [dist for _, dist in found], config.detector, now)
        if needs_fit(row, config.detector):
            row, alarms = fit_and_run(row, read_device_windows(connection, series, row.first_bucket, end),
                                      end - row.first_bucket, config.detector, now)
            fitted += 1
        rows.append(row)
        drifts.extend((row, drift) for drift in alarms)
    _write(connection, rows, drifts, now)
    return TickReport(start, end, len(rows), fitted, tuple((row.device_id, d) for row, d in drifts))


def accept(store: FleetStore, device_id: str) -> int:
    """Forgets the device's drift watch on the version it runs now: it collects a new baseline from the next
    tick on (the operator accepted the new scene). Rows removed (0: none)."""
    connection = store.connection
    store.engine.begin_write(connection)
    removed = connection.execute(
        "DELETE FROM drift_state WHERE (device_id, model_name, model_version) IN (SELECT device_id, model_name, "
        "model_version FROM devices WHERE device_id = ?)", (device_id,)).rowcount
    connection.commit()
    return removed
