"""Issue 23, item 4: a device enrolling without SSH writes its key record itself instead of asking (its
identity may create objects; suppose the grant were wider than the request prefix). The record is not signed
by the fleet enrolment key, so no monitor trusts it, signed by the device's own key or not; and the device's
create-only write can never replace the record the approver wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.device.enrol import create_object
from edgefleet.kernel.contracts.devicekey import DeviceKeyRecord, device_key_record_key, sign_record
from tests.security.device_keys import Fleet, applied, refused, unsigned_record
from tests.security.enrolment import Enrolment


@pytest.fixture
def enrolment(fleet: Fleet, tmp_path: Path) -> Enrolment:
    return Enrolment(fleet, tmp_path)


def test_a_record_the_device_signs_itself_is_refused(enrolment: Enrolment, fleet_state) -> None:
    key = enrolment.device_key("cam-5")
    record = sign_record(key, DeviceKeyRecord.model_validate(unsigned_record("cam-5", key)))  # self-signed /2
    create_object(enrolment.device_view, device_key_record_key("cam-5"), record.model_dump_json(by_alias=True).encode())
    monitor = enrolment.fleet.monitor()
    assert refused(enrolment.fleet.send(fleet_state, monitor, "cam-5", key))
    assert "not a fleet enrolment key" in monitor.refused_records[0].reason


def test_an_unsigned_record_the_device_writes_is_refused(enrolment: Enrolment, fleet_state) -> None:
    key = enrolment.device_key("cam-6")
    enrolment.fleet.plant("cam-6.json", unsigned_record("cam-6", key))
    assert refused(enrolment.fleet.send(fleet_state, enrolment.fleet.monitor(), "cam-6", key))


def test_the_device_write_cannot_replace_an_approved_record(enrolment: Enrolment, fleet_state) -> None:
    token, _ = enrolment.mint("cam-7")
    enrolment.file("cam-7", "cam-7", token)
    [approval] = enrolment.approve()
    assert approval.enrolled
    other = enrolment.device_key("attacker")
    created = create_object(enrolment.device_view, device_key_record_key("cam-7"),
                            sign_record(other, DeviceKeyRecord.model_validate(unsigned_record("cam-7", other)))
                            .model_dump_json(by_alias=True).encode())
    assert created is False
    monitor = enrolment.fleet.monitor()
    assert applied(enrolment.fleet.send(fleet_state, monitor, "cam-7", enrolment.device_key("cam-7")))
    assert refused(enrolment.fleet.send(fleet_state, monitor, "cam-7", other))
