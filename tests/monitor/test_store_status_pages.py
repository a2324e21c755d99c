"""`fleet status` from the aggregates kept on ingest (issue 23, item 2): its counts agree with every device's
own status, pages cover the fleet once, and the version / status / tag filters select exactly their devices.
Each test runs on both engines (the `store` fixture)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from monitor_helpers import T0, telemetry

from edgefleet.monitor.aggregates import StatusFilter, set_tags
from edgefleet.monitor.config import StatusRules
from edgefleet.monitor.ingest import apply
from edgefleet.monitor.query import fleet_status
from edgefleet.monitor.store import commit, to_epoch

STALE_AFTER_S = 120.0
RULES = StatusRules(stale_after_s=STALE_AFTER_S, silent_after_s=600.0, failing_error_ratio=0.05,
                    failing_event_window_s=900.0)
NOW = T0 + timedelta(hours=2)
DEVICES = 30
PAGE = 7


def _fill(store) -> None:
    """Devices of two versions; every 5th stale (every 10th silent), every 4th erroring, every 7th with a
    recent failed swap, every 3rd tagged `lobby`."""
    for number in range(DEVICES):
        device = f"cam-{number:02d}"
        version = "1.1.0" if number % 2 else "1.0.0"
        received = NOW - timedelta(seconds=3600 if number % 10 == 0 else 300 if number % 5 == 0 else 10)
        errors = 1 if number % 4 == 0 else 0
        for seq in (1, 2):
            apply(store, telemetry(device, seq, version=version, count=4, errors=errors),
                  received_at=to_epoch(received) - (2 - seq))
        if number % 7 == 0:
            apply(store, telemetry(device, 3, version=version, event="swap_failed", event_version=version),
                  received_at=to_epoch(received))
        if number % 3 == 0:
            set_tags(store.connection, device, add=["lobby"])
    commit(store)


def _status(store, **options):
    return fleet_status(store, STALE_AFTER_S, NOW, rules=RULES, **options)


def test_counts_from_the_aggregates_agree_with_each_devices_status(store) -> None:
    _fill(store)
    everything = _status(store)
    assert len(everything.devices) == everything.total == DEVICES
    truth = Counter(device.status for device in everything.devices)
    assert set(truth) == {"healthy", "stale", "failing"}  # the fleet has all three
    assert {status: everything.count(status) for status in truth} == dict(truth)
    per_version = Counter((device.model_version, device.status) for device in everything.devices)
    assert {(v.model_version, status): getattr(v, status) for v in everything.versions
            for status in ("healthy", "stale", "failing") if getattr(v, status)} == dict(per_version)
    assert [device.device_id for device in everything.silent] == [
        f"cam-{number:02d}" for number in range(0, DEVICES, 10)]


def test_pages_cover_every_device_once_in_order(store) -> None:
    _fill(store)
    seen, after = [], None
    while True:
        page = _status(store, limit=PAGE, after=after)
        assert len(page.devices) <= PAGE and page.total == DEVICES
        seen.extend(device.device_id for device in page.devices)
        after = page.next_after
        if after is None:
            break
    assert seen == sorted(f"cam-{number:02d}" for number in range(DEVICES))


@pytest.mark.parametrize("selection", [
    StatusFilter(status="failing"), StatusFilter(status="stale"), StatusFilter(status="healthy"),
    StatusFilter(version="1.1.0"), StatusFilter(tag="lobby"), StatusFilter(version="1.0.0", status="failing",
                                                                          tag="lobby")])
def test_a_filter_selects_exactly_its_devices(store, selection: StatusFilter) -> None:
    _fill(store)
    lobby = {f"cam-{number:02d}" for number in range(0, DEVICES, 3)}
    expected = [device.device_id for device in _status(store).devices
                if selection.status in (None, device.status) and selection.version in (None, device.model_version)
                and (selection.tag is None or device.device_id in lobby)]
    assert expected  # every filter here selects some devices
    chosen = _status(store, selection=selection)
    assert [device.device_id for device in chosen.devices] == expected
    assert chosen.total == len(expected)
    paged = _status(store, selection=selection, limit=2)
    assert [device.device_id for device in paged.devices] == expected[:2]
    assert paged.next_after == (expected[1] if len(expected) > 2 else None)


def test_a_device_moving_version_moves_in_the_totals_once(store) -> None:
    apply(store, telemetry("cam-1", 1, version="1.0.0"), received_at=to_epoch(NOW))
    apply(store, telemetry("cam-1", 3, version="1.1.0"), received_at=to_epoch(NOW))
    apply(store, telemetry("cam-1", 2, version="1.0.0"), received_at=to_epoch(NOW))  # late: no move back
    apply(store, telemetry("cam-1", 3, version="1.1.0"), received_at=to_epoch(NOW))  # duplicate
    commit(store)
    status = _status(store)
    assert [(v.model_version, v.devices) for v in status.versions] == [("1.1.0", 1)]
    assert (status.counters.messages, status.counters.duplicates, status.counters.lost) == (3, 1, 0)


def test_a_schema_2_state_is_upgraded_with_its_aggregates_filled_from_the_devices(tmp_path) -> None:
    from edgefleet.monitor.store import open_store

    path = tmp_path / "fleet.sqlite"
    with open_store(path, latency_window=4, count_bucket_s=60.0) as store:
        _fill(store)
        before = _status(store)
        for statement in ("DROP INDEX devices_by_error_ratio", "ALTER TABLE devices DROP COLUMN error_ratio",
                          "DROP TABLE version_totals", "DROP TABLE fleet_counters", "DROP TABLE device_tags",
                          "UPDATE meta SET value = '2'"):  # what edgefleet wrote before schema 3
            store.connection.execute(statement)
        store.connection.commit()
    with open_store(path, latency_window=4, count_bucket_s=60.0, create=False) as store:
        after = _status(store)
    assert after.versions == before.versions and after.totals == before.totals
    assert after.counters == before.counters
    assert [d.device_id for d in after.devices] == [d.device_id for d in before.devices]
