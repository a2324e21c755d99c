"""The daily triage list from the fleet state: each watched device's last day against its own baseline,
Benjamini-Hochberg across the devices (`edgefleet.monitor.drift.triage`). A list to look at, not the alarm.

Reads, for every device watched on the version it runs now, its windows of the last `hours` from `dist_counts`
(by the table's key, one statement per device): meant to run once a day (`edgefleet fleet drift-triage`).
"""

from __future__ import annotations

import json
from datetime import datetime

from edgefleet.monitor.drift import DriftConfig, TriageEntry, triage
from edgefleet.monitor.drift.blocks import split_blocks
from edgefleet.monitor.drift.device import baseline_from_dict, statistics
from edgefleet.monitor.drift_watch import read_device_windows, read_rows
from edgefleet.monitor.store import FleetStore, read_snapshot, to_epoch

SECONDS_PER_HOUR = 3600.0


def daily_triage(store: FleetStore, config: DriftConfig, now: datetime, hours: float = 24.0) -> tuple[TriageEntry, ...]:
    """The devices whose last `hours` differ from their baseline at the configured false discovery rate."""
    end = to_epoch(now)
    start = end - hours * SECONDS_PER_HOUR
    tested = {}
    with read_snapshot(store) as connection:
        current = connection.execute("SELECT device_id, model_name, model_version FROM devices WHERE "
                                     "model_name IS NOT NULL AND model_version IS NOT NULL").fetchall()
        rows = read_rows(connection, [device_id for device_id, _, _ in current])
        for series in map(tuple, current):
            row = rows.get(series)
            if row is None or row.status not in ("watching", "drift") or row.baseline is None:
                continue
            blocks, _ = split_blocks(read_device_windows(connection, series, start, end), config.block_frames)
            if blocks:
                device = baseline_from_dict(json.loads(row.baseline))
                tested[series[0]] = (device, statistics(device, blocks))
    return triage(tested, config)
