"""Issue 20, item 7: one damaged device key record made `load_fleet_keys` raise, and the monitor then kept no
keys: every device's telemetry was refused (a bucket writer, or one interrupted write, stopped the fleet's
health gates). Now a damaged record drops that device only; the refusal is logged and kept
(`TelemetryVerifier.refused_records`), every other device keeps its key. A record too large to be one is
refused before it is read (a bucket writer cannot make each key refresh cost the monitor megabytes)."""

from __future__ import annotations

import logging

import pytest

from tests.security.device_keys import Fleet, applied, refused

DAMAGED = {
    "not-json.json": "{\"schema\": \"edgefleet.device-key/2\", ",
    "wrong-shape.json": {"schema": 1},
    "a-list.json": [1, 2, 3],
    "bad-key.json": {"schema": "edgefleet.device-key/1", "device_id": "bad-key", "public_key": "AAAA",
                     "key_id": "0123456789abcdef"},
    "nested/cam-9.json": {"schema": "edgefleet.device-key/1"},
    "huge.json": {"schema": "edgefleet.device-key/1", "padding": "x" * 10**7},  # refused unread
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_one_damaged_record_drops_that_record_only(fleet: Fleet, fleet_state, name: str, caplog) -> None:
    cam1, cam2 = fleet.enrol("cam-1"), fleet.enrol("cam-2")
    fleet.plant(name, DAMAGED[name])
    monitor = fleet.monitor()
    with caplog.at_level(logging.WARNING, logger="edgefleet.monitor.telemetry_verifier"):
        assert applied(fleet.send(fleet_state, monitor, "cam-1", cam1))
        assert applied(fleet.send(fleet_state, monitor, "cam-2", cam2))
    [record] = monitor.refused_records
    assert name in record.record and record.fix
    assert any(name in message for message in caplog.messages)


def test_a_damaged_record_of_a_known_device_refuses_that_device_only(fleet: Fleet, fleet_state) -> None:
    cam1, cam2 = fleet.enrol("cam-1"), fleet.enrol("cam-2")
    fleet.plant("cam-2.json", "{truncated")
    monitor = fleet.monitor()
    assert applied(fleet.send(fleet_state, monitor, "cam-1", cam1))
    assert refused(fleet.send(fleet_state, monitor, "cam-2", cam2))
    assert [r.record.rsplit("/", 1)[1] for r in monitor.refused_records] == ["cam-2.json"]
