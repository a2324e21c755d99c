"""A device's drift as `fleet status`, the fleet page and the Cloud Monitoring metric show it (issue 25)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgefleet.monitor.calibrations import Shown, tables
from edgefleet.monitor.drift import AccuracyEstimate, expected_accuracy
from edgefleet.monitor.drift_feed import Feed, read_feeds
from edgefleet.monitor.drift_step import WatchRow, WatchStatus
from edgefleet.monitor.drift_watch import read_rows
from edgefleet.monitor.store import from_epoch


class DeviceDrift(BaseModel):
    """The drift watch of a device's current version: its state and, in drift, what moved and by how much."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: WatchStatus
    blocks: int
    statistic: str | None = None
    """The block statistic that moved: class_mix, score_median or detections."""
    direction: str | None = None
    effect_sd: float | None = None
    """The shift since its onset, in the baseline's SDs of the block statistic (signed)."""
    effect: float | None = None
    """The same shift in the statistic's units (score, detections per frame, JS divergence)."""
    since: datetime | None = None
    note: str | None = None
    accuracy: AccuracyEstimate | None = None
    """Expected accuracy from the calibrated confidence (CBPE) over the frames since the watch started (or
    since the drift): see `ACCURACY_CAVEAT` for what it cannot see."""
    late_windows: int = 0
    """Telemetry windows that arrived after newer ones of the device were fed to its detectors, so were not fed
    (a sequential detector does not go back; `drift_feed`)."""
    accuracy_note: str | None = None
    """Why there is no estimate (no calibration table in the manifest, a refused one...), or what is wrong beside
    it (a different signed manifest of the same version)."""

    def summary(self, baseline_blocks: int | None = None) -> str:
        """One line: 'drift: score_median down -2.4 SD (-0.21)', 'watching', 'baseline 120/500 blocks'."""
        if self.status == "drift":
            return f"drift: {self.statistic} {self.direction} {self.effect_sd:+.1f} SD ({self.effect:+.3g})"
        if self.status == "baseline":
            return f"baseline {self.blocks}" + (f"/{baseline_blocks}" if baseline_blocks else "") + " blocks"
        return self.status

    def accuracy_text(self) -> str:
        """'est. accuracy 0.87 (0.84-0.90)', or '-'."""
        if self.accuracy is None:
            return "-"
        a = self.accuracy
        return f"est. accuracy {a.accuracy:.2f} ({a.low:.2f}-{a.high:.2f})"


ACCURACY_CAVEAT = ("The estimated accuracy weights the device's top-1 scores by how often the int8 model was "
                   "right at each score on the release's held-out split (CBPE). It cannot see confidently wrong "
                   "answers (a look-alike class; a model with shuffled labels scores as confidently as a good one) "
                   "nor a concept shift (the right answer for the same image changed); no labelled spot check "
                   "corrects it yet.")


def _estimate(row: WatchRow, calibration: Shown | None) -> dict:
    if calibration is None:
        return {"accuracy_note": "no calibration table read yet (drift.registry / identity.registry)"}
    if calibration.table is None:
        return {"accuracy_note": calibration.note}
    counts = {int(k): n for k, n in json.loads(row.score_counts).items()} if row.score_counts else {}
    return {"accuracy": expected_accuracy(calibration.table, counts), "accuracy_note": calibration.note}


def from_row(row: WatchRow, table: Shown | None = None, late_windows: int = 0) -> DeviceDrift:
    return DeviceDrift(status=row.status, blocks=row.blocks, statistic=row.statistic, direction=row.direction,
                       effect_sd=row.effect_sd, effect=row.effect, since=from_epoch(row.drift_time), note=row.note,
                       late_windows=late_windows, **_estimate(row, table))


def _with_tables(connection: Any, rows: dict) -> dict:
    """key -> DeviceDrift of each row, with its version's calibration table and its late windows."""
    found = tables(connection, {(row.model_name, row.model_version) for row in rows.values()})
    feeds = read_feeds(connection, {key[0] for key in rows})
    return {key: from_row(row, found.get((row.model_name, row.model_version)), feeds.get(key, Feed()).late)
            for key, row in rows.items()}


def current_drifts(connection: Any,
                   devices: Iterable[tuple[str, str | None, str | None]]) -> dict[str, DeviceDrift]:
    """device id -> the drift watch of the (model, version) it runs now, for the devices that have one."""
    wanted = {(device_id, model or "", version or "") for device_id, model, version in devices}
    if not wanted:
        return {}
    rows = {key: row for key, row in read_rows(connection, {d for d, _, _ in wanted}).items() if key in wanted}
    return {key[0]: drift for key, drift in _with_tables(connection, rows).items()}


DRIFT_LIST_LIMIT = 100
"""Devices in drift the fleet page lists (the newest drifts first)."""
WHAT_IT_SEES = ("Each device is compared with its own baseline on the same version (its first blocks after the "
                "activation): a drift says its scene or its model's output moved (the class mix, the top-1 score "
                "median or the detections per frame), by how much in baseline SDs. It does not say whether the "
                "answers are right.")


class DriftEntry(BaseModel):
    """A device in drift on the fleet page."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str
    model_version: str
    drift: DeviceDrift


def drifting(connection: Any, model: str, limit: int = DRIFT_LIST_LIMIT) -> tuple[DriftEntry, ...]:
    """The devices of `model` in drift on the version they run now, newest drift first."""
    found = connection.execute(
        "SELECT s.device_id FROM drift_state AS s JOIN devices AS d ON d.device_id = s.device_id AND "
        "d.model_name = s.model_name AND d.model_version = s.model_version WHERE s.model_name = ? AND "
        "s.status = 'drift' ORDER BY s.drift_time DESC, s.device_id LIMIT ?", (model, limit)).fetchall()
    rows = {key: row for key, row in read_rows(connection, [device_id for (device_id,) in found]).items()
            if row.model_name == model and row.status == "drift"}
    entries = [DriftEntry(device_id=key[0], model_version=key[2], drift=drift)
               for key, drift in _with_tables(connection, rows).items()]
    return tuple(sorted(entries, key=lambda e: (-(e.drift.since.timestamp() if e.drift.since else 0), e.device_id)))


def watch_counts(connection: Any, model: str) -> dict[str, int]:
    """Devices of `model` per drift-watch status, on the version each runs now."""
    return {status: n for status, n in connection.execute(
        "SELECT s.status, COUNT(*) FROM drift_state AS s JOIN devices AS d ON d.device_id = s.device_id AND "
        "d.model_name = s.model_name AND d.model_version = s.model_version WHERE s.model_name = ? "
        "GROUP BY s.status", (model,))}
