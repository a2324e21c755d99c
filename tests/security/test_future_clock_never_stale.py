"""Finding 8: the monitor trusted the device clock: a device sending a timestamp in the future never went
stale (and could hide its silence from the rollout's health gate). Staleness is now judged by the
monitor's receive time, and (issue 20) every time the monitor keeps is the receive time: device time is not
trusted at all."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgefleet.kernel.contracts.telemetry import Health, TelemetryMessage
from edgefleet.monitor.ingest import handle
from edgefleet.monitor.query import device_status
from edgefleet.monitor.store import FleetStore, commit, open_store, to_epoch

RECEIVED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FleetStore]:
    with open_store(tmp_path / "fleet.sqlite", latency_window=4, count_bucket_s=60.0) as opened:
        yield opened


def test_a_device_clock_in_the_future_still_goes_stale(store: FleetStore) -> None:
    future = TelemetryMessage(device_id="cam-1", seq=1, time=RECEIVED + timedelta(days=3650), kind="summary",
                              health=Health(uptime_s=1.0))
    handle(store, future.to_json_bytes(), "m1", {"device_id": "cam-1"}, to_epoch(RECEIVED))
    commit(store)
    status = device_status(store, "cam-1", 60.0, RECEIVED + timedelta(seconds=120))
    assert status.status == "stale"
    assert status.last_seen == RECEIVED  # the receive time, not the device's clock
    assert device_status(store, "cam-1", 60.0, RECEIVED + timedelta(seconds=30)).status == "healthy"
