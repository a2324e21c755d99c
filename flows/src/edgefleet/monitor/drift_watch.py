"""The monitor's drift watch: on a periodic tick, every device against its own baseline (issue 25, item 1).

Ingest keeps each applied message's distributions as one window (`drift_feed`: `drift_windows`, by device seq).
Every `drift.interval_s` the monitor's loop calls `tick`, which in one write transaction
1. moves the cursor `drift_cursor` in `meta` to the end of the last count bucket that ended `settle_s` ago
   (compare-and-set: of several monitors on one PostgreSQL store, one runs the tick);
2. claims every window received before it that no tick has taken, whenever it was committed (`drift_feed.claim`);
3. steps each (device, model, version)'s `drift_state` row (`drift_step`) with its windows above the row's
   watermark, in the device's seq order (a spool drained after an outage is fed window by window, not lumped
   into the minute it arrived in); windows at or below it are counted late, not fed (`drift_feed.split_late`);
   fitting the baseline when the row has enough blocks (from all its windows, in seq order), then its CUSUMs;
4. writes the rows, their watermarks and one `drift_events` row per alarm (the event; the row's status `drift`
   is the state), keeps the windows of rows still baselining, deletes the others, forgets the rows that had no
   window for `forget_after_s` (`drift_feed.prune`: a retired device, a superseded version), and commits.

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
from edgefleet.monitor.drift import Drift, DriftConfig
from edgefleet.monitor.drift.blocks import split_blocks
from edgefleet.monitor.drift_feed import (
    KEPT,
    Feed,
    Series,
    Window,
    claim,
    first_received,
    kept,
    prune,
    read_feeds,
    settle,
    split_late,
    write_feeds,
)
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
        first = first_received(connection)
        start = end if first is None else min(math.floor(first / bucket_s) * bucket_s, end)
        if not _claim(connection, None, start):
            return TickReport(None, None, 0, 0, ())
    end = min(end, start + config.max_buckets_per_tick * bucket_s)
    if end <= start or not _claim(connection, start, end):
        return TickReport(None, None, 0, 0, ())
    windows = claim(connection, end)
    if calibration is not None:
        record_missing(connection, calibration, {(model, version) for _, model, version in windows}, now,
                       config.calibration_recheck_s)
    device_ids = {device_id for device_id, _, _ in windows}
    known, feeds = read_rows(connection, device_ids), read_feeds(connection, device_ids)
    rows, fed, drifts, fitted = [], {}, [], 0
    for series, found in sorted(windows.items()):
        row, fed[series], alarms, fit = _advance(connection, known.get(series), feeds.get(series, Feed()), series,
                                                 found, end, config.detector, now)
        if fed[series].late > feeds.get(series, Feed()).late:
            log.info("drift watch: %d window(s) of %s %s:%s came after newer ones were fed: counted late, not fed",
                     fed[series].late - feeds.get(series, Feed()).late, *series)
        rows.append(row)
        fitted += fit
        drifts.extend((row, drift) for drift in alarms)
    _write(connection, rows, drifts, now)
    write_feeds(connection, fed)
    settle(connection, [(row.device_id, row.model_name, row.model_version) for row in rows
                        if row.status == "baseline"])
    for series in prune(connection, now, config.forget_after_s):
        log.info("drift watch: forgot %s %s:%s (no window for drift.forget_after_s)", *series)
    return TickReport(start, end, len(rows), fitted, tuple((row.device_id, d) for row, d in drifts))


def _advance(connection: Any, row: WatchRow | None, feed: Feed, series: Series, found: list[Window], end: float,
             config: DriftConfig, now: float) -> tuple[WatchRow, Feed, tuple[Drift, ...], bool]:
    """One series' row after its claimed windows `found`: (row, feed, drift events, whether its baseline was
    fitted)."""
    row = row or new_row(*series, first_bucket=min(w.received for w in found), now=now)
    fresh, _, feed = split_late(feed, found, baselining=row.status == "baseline")
    row, alarms = step(row, [w.dist for w in fresh], config, now)
    if not needs_fit(row, config):
        return row, feed, alarms, False
    taken = [w.dist for w in kept(connection, series)]
    if len(split_blocks(taken, config.block_frames)[0]) < config.baseline_blocks:
        # Counted from windows this store no longer holds (a store from before schema 5 kept none): the row
        # collects its baseline again from those it has.
        row, alarms = step(new_row(*series, first_bucket=row.first_bucket, now=now), taken, config, now)
        return row, feed, alarms, False
    row, alarms = fit_and_run(row, taken, end - row.first_bucket, config, now)
    return row, feed, alarms, True


def accept(store: FleetStore, device_id: str) -> int:
    """Forgets the device's drift watch on the version it runs now: it collects a new baseline from the next
    tick on (the operator accepted the new scene). Rows removed (0: none)."""
    connection = store.connection
    store.engine.begin_write(connection)
    current = "(device_id, model_name, model_version) IN (SELECT device_id, model_name, model_version FROM devices " \
              "WHERE device_id = ?)"
    removed = connection.execute(f"DELETE FROM drift_state WHERE {current}", (device_id,)).rowcount
    connection.execute(f"DELETE FROM drift_windows WHERE fed = {KEPT} AND {current}", (device_id,))
    connection.commit()
    return removed
