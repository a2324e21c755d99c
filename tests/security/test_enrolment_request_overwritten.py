"""Issue 23, item 4, on both registry backends (a directory and the GCS emulator, which answers generation
preconditions like GCS): a device's enrolment request is create-only, so another device cannot overwrite the
request a device filed (its create fails, the original stays); the approval enrols the original's key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from edgefleet.device.enrol import create_object, file_request
from edgefleet.device.registry import open_registry_reader
from edgefleet.flows.registry import RegistryWriter
from edgefleet.flows.trust.enrolment_tokens import approve_requests, create_token
from edgefleet.kernel.contracts.devicekey import DeviceKeyRecord, device_key_record_key
from edgefleet.kernel.trust.signatures import generate_keypair, key_id
from tests.security.enrolment import T0


def test_a_filed_request_cannot_be_overwritten(registry: RegistryWriter, tmp_path: Path) -> None:
    enrolment_key, _ = generate_keypair()
    text, _ = create_token(registry, "cam-1", enrolment_key=enrolment_key, now=T0, lifetime=timedelta(hours=1))
    device_view = open_registry_reader(registry.uri, client=getattr(registry, "_client", None))
    filed = file_request(device_view, tmp_path / "cam-1", "cam-1", str(text), now=T0)
    assert not filed.already_filed
    key = filed.location.split("/fleet/", 1)[1]
    assert create_object(device_view, f"fleet/{key}", b'{"forged": true}') is False  # create-only
    [approval] = approve_requests(registry, enrolment_key=enrolment_key, now=T0 + timedelta(minutes=1))
    assert approval.enrolled, approval.detail
    record = DeviceKeyRecord.model_validate(registry.get_json(device_key_record_key("cam-1")))
    assert record.key_id == filed.key_id and record.signer_key_id == key_id(enrolment_key.public_key())
