"""What the drift watch feeds its detectors: each device's telemetry windows one by one, in the device's seq order,
whenever they arrive (issue 25 leftovers: late telemetry and pruning).

Ingest keeps every applied message's distributions as one row of `drift_windows` (device, model, version, seq;
the time it was received; `fed` 0). A device that was offline sends its spooled windows hours late, oldest first
(the agent never loses telemetry, so this is normal): they are fed as the windows they are, not lumped into the
minute they arrived in, since the count buckets (`dist_counts`, by time received: the device's clock is not
trusted) would merge them into one block.

The rule (`split_late`), per (device, model, version) and its watermark (the highest seq the watch has taken):
- windows above the watermark are fed in seq order, whatever order and time they arrived in;
- a window at or below it (it arrived after a newer one was already fed: a redelivery, messages reordered in
  transit by more than `drift.settle_s`) is not fed out of order to a sequential detector (a CUSUM cannot go
  back); it is counted in the row's `late_windows` (shown with the drift) and dropped from the watch (its counts
  stay in `dist_counts` for health, the overview and the daily triage);
- while the row is still collecting its baseline, such a window is not late: the baseline is fitted once from
  all its windows in seq order, so it joins them.
A window is claimed once (`claim`: `fed` 0 -> 1 in the tick's write transaction, the rows the UPDATE returned:
one committed after the tick's read is claimed by the next tick, never skipped), kept (`fed` 2) while its row
baselines, and deleted once its row watches. A duplicate message never reaches here (ingest dedupes by seq),
and the key refuses a second row.

Pruning (`prune`): a `drift_state` row that has had no window for `drift.forget_after_s` is deleted with its
kept windows, unless it is the version its device runs now and the device was heard within that time (a camera
idle for weeks keeps its baseline). So a retired device's rows and a superseded version's row go a fixed time
after their last window (a rollback within that time finds its old baseline again).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from edgefleet.kernel.contracts.distributions import Distributions

Series = tuple[str, str, str]
"""(device, model, version)"""
WAITING, CLAIMED, KEPT = 0, 1, 2
"""`drift_windows.fed`: 0 waiting, 1 claimed by the running tick, 2 kept for the row's baseline fit."""

WINDOWS_SQL = (
    "INSERT INTO drift_windows (device_id, model_name, model_version, seq, received, fed, dist) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_KEY = "device_id = ? AND model_name = ? AND model_version = ?"


class Window(NamedTuple):
    seq: int
    received: float
    dist: Distributions


@dataclass(frozen=True)
class Feed:
    """A row's place in its device's windows: the highest seq taken (None: none yet) and the late ones dropped."""

    watermark: int | None = None
    late: int = 0


def window_row(key: tuple[str, str, str, int], received: float, dist: Distributions) -> tuple:
    """The `drift_windows` row of one message's distributions (latency left out: the watch does not read it)."""
    return (*key, received, WAITING, dist.model_copy(update={"latency": []}).model_dump_json())



def split_late(feed: Feed, windows: Sequence[Window], baselining: bool) -> tuple[list[Window], list[Window], Feed]:
    """(the windows to feed, in seq order; the late ones; the new feed): see the module docstring. Pure."""
    ordered = sorted(windows, key=lambda w: w.seq)
    if feed.watermark is None:
        fresh, older = ordered, []
    else:
        fresh = [w for w in ordered if w.seq > feed.watermark]
        older = [w for w in ordered if w.seq <= feed.watermark]
    watermark = max([feed.watermark or 0, *(w.seq for w in fresh)]) if fresh else feed.watermark
    late = [] if baselining else older
    return fresh, late, Feed(watermark, feed.late + len(late))


def _grouped(rows: Iterable[tuple]) -> dict[Series, list[Window]]:
    found: dict[Series, list[Window]] = defaultdict(list)
    for device_id, model, version, seq, received, dist in rows:
        found[(device_id, model, version)].append(
            Window(int(seq), float(received), Distributions.model_validate_json(dist)))
    return {series: sorted(windows, key=lambda w: w.seq) for series, windows in found.items()}


def claim(connection: Any, end: float) -> dict[Series, list[Window]]:
    """Claims every waiting window received before `end` (whenever committed), per series in seq order."""
    return _grouped(connection.execute(
        f"UPDATE drift_windows SET fed = {CLAIMED} WHERE fed = {WAITING} AND received < ? "
        "RETURNING device_id, model_name, model_version, seq, received, dist", (end,)).fetchall())


def kept(connection: Any, series: Series) -> list[Window]:
    """Every window of `series` taken so far (claimed now or kept for its baseline), in seq order."""
    return _grouped(connection.execute(
        f"SELECT device_id, model_name, model_version, seq, received, dist FROM drift_windows WHERE {_KEY} "
        f"AND fed IN ({CLAIMED}, {KEPT})", series).fetchall()).get(series, [])


def settle(connection: Any, baselining: Iterable[Series]) -> None:
    """After the tick: the claimed windows of rows still baselining are kept, every other claimed one deleted."""
    connection.executemany(f"UPDATE drift_windows SET fed = {KEPT} WHERE {_KEY} AND fed = {CLAIMED}",
                           sorted(set(baselining)))
    connection.execute(f"DELETE FROM drift_windows WHERE fed = {CLAIMED}")


def first_received(connection: Any) -> float | None:
    row = connection.execute(f"SELECT MIN(received) FROM drift_windows WHERE fed = {WAITING}").fetchone()
    return None if row is None or row[0] is None else float(row[0])


def read_feeds(connection: Any, device_ids: Iterable[str]) -> dict[Series, Feed]:
    rows = connection.execute("SELECT device_id, model_name, model_version, last_seq, late_windows FROM drift_state "
                              "WHERE device_id IN (SELECT value FROM json_each(?))",
                              (json.dumps(sorted(set(device_ids))),))
    return {(d, m, v): Feed(None if seq is None else int(seq), int(late or 0)) for d, m, v, seq, late in rows}


def write_feeds(connection: Any, feeds: dict[Series, Feed]) -> None:
    connection.executemany(f"UPDATE drift_state SET last_seq = ?, late_windows = ? WHERE {_KEY}",
                           [(feed.watermark, feed.late, *series) for series, feed in sorted(feeds.items())])


def late_windows(connection: Any, series: Series) -> int:
    """The windows of `series` that arrived after newer ones were fed, so were not fed (0: none, or no row)."""
    row = connection.execute(f"SELECT late_windows FROM drift_state WHERE {_KEY}", series).fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def prune(connection: Any, now: float, forget_after_s: float) -> list[Series]:
    """Deletes the rows (and kept windows) the module docstring's rule forgets; the series deleted."""
    cutoff = now - forget_after_s
    found = connection.execute(
        "SELECT s.device_id, s.model_name, s.model_version FROM drift_state AS s WHERE s.updated < ? AND NOT EXISTS "
        "(SELECT 1 FROM devices AS v WHERE v.device_id = s.device_id AND v.model_name = s.model_name AND "
        "v.model_version = s.model_version AND v.last_received >= ?) ORDER BY 1, 2, 3", (cutoff, cutoff))
    gone: list[Series] = [(str(device_id), str(model), str(version)) for device_id, model, version in found]
    if gone:
        connection.executemany(f"DELETE FROM drift_state WHERE {_KEY}", gone)
        connection.executemany(f"DELETE FROM drift_windows WHERE {_KEY}", gone)
    return gone
