"""The device key record contract (`edgefleet.device-key/2`, signed) and its revocation: pure, fast checks."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from edgefleet.device.trust.device_identity import public_key_text
from edgefleet.kernel.contracts.devicekey import (
    DEVICE_KEY_SCHEMA,
    DEVICE_KEY_SCHEMA_V1,
    DeviceKeyRecord,
    DeviceKeyRevocation,
    check_signature,
    device_id_of,
    sign_record,
    sign_revocation,
)
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.signatures import generate_keypair, key_id

ENROLMENT, ENROLMENT_PUBLIC = generate_keypair()
KEYRING = {key_id(ENROLMENT_PUBLIC): ENROLMENT_PUBLIC}


def draft(device_id: str = "cam-1") -> DeviceKeyRecord:
    public = generate_keypair()[1]
    return DeviceKeyRecord(schema=DEVICE_KEY_SCHEMA_V1, device_id=device_id, public_key=public_key_text(public),
                           key_id=key_id(public), added_by="test")


def test_a_signed_record_verifies_after_a_round_trip_through_json() -> None:
    signed = sign_record(ENROLMENT, draft())
    assert signed.schema_ == DEVICE_KEY_SCHEMA and signed.signer_key_id == key_id(ENROLMENT_PUBLIC)
    text = json.dumps(signed.model_dump(mode="json", by_alias=True), indent=4, sort_keys=False)
    check_signature(KEYRING, DeviceKeyRecord.model_validate(json.loads(text)), source="record")


@pytest.mark.parametrize("change", [{"device_id": "cam-2"}, {"added_by": "someone"},
                                    {"added_at": "2020-01-01T00:00:00Z"}])
def test_any_changed_field_breaks_the_signature(change: dict[str, str]) -> None:
    document = sign_record(ENROLMENT, draft()).model_dump(mode="json", by_alias=True) | change
    with pytest.raises(VerificationError, match="does not hold"):
        check_signature(KEYRING, DeviceKeyRecord.model_validate(document), source="record")


def test_a_signature_by_another_key_names_the_signer() -> None:
    other, _ = generate_keypair()
    with pytest.raises(VerificationError, match="not a fleet enrolment key"):
        check_signature(KEYRING, sign_record(other, draft()), source="record")
    with pytest.raises(VerificationError, match="not signed"):
        check_signature(KEYRING, draft(), source="record")


def test_the_schema_decides_which_fields_a_record_has() -> None:
    signed = sign_record(ENROLMENT, draft()).model_dump(mode="json", by_alias=True)
    with pytest.raises(ValidationError, match="need schema"):
        DeviceKeyRecord.model_validate(signed | {"schema": DEVICE_KEY_SCHEMA_V1})
    with pytest.raises(ValidationError, match="needs signer_key_id"):
        DeviceKeyRecord.model_validate(draft().model_dump(mode="json", by_alias=True) | {"schema": DEVICE_KEY_SCHEMA})
    with pytest.raises(ValidationError, match="not the id of the public key"):
        DeviceKeyRecord.model_validate(signed | {"key_id": "0123456789abcdef"})


def test_a_revocation_is_signed_like_a_record() -> None:
    revocation = sign_revocation(ENROLMENT, revoked_key_id="0123456789abcdef", device_id="cam-1", reason="stolen")
    text = json.dumps(revocation.model_dump(mode="json", by_alias=True))
    again = DeviceKeyRevocation.model_validate(json.loads(text))
    check_signature(KEYRING, again, source="revocation")
    moved = DeviceKeyRevocation.model_validate(again.model_dump(by_alias=True) | {"key_id": "fedcba9876543210"})
    with pytest.raises(VerificationError):
        check_signature(KEYRING, moved, source="revocation")


@pytest.mark.parametrize(("key", "device"), [
    ("fleet/devices/cam-1.json", "cam-1"), ("fleet/devices/zz-cam-1-backup.json", "zz-cam-1-backup"),
    ("fleet/devices/a/cam-1.json", None), ("fleet/devices/Cam-1.json", None), ("fleet/devices/.json", None),
    ("fleet/other/cam-1.json", None)])
def test_the_file_name_gives_the_device_id(key: str, device: str | None) -> None:
    assert device_id_of(key) == device
