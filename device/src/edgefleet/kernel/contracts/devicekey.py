"""The device key record and its revocation: how the fleet knows (and stops knowing) a device's public key.

`fleet/devices/<device_id>.json` holds one device's public key. Schema 2 (`edgefleet.device-key/2`) is signed by
the fleet enrolment key (a key of its own, not the release key: a stolen release key does not let one add or
swap a device, a stolen enrolment key does not let one release a model); the file name is the device id, and
a body naming another device is refused. Schema 1 (unsigned) is still read, but only under an explicit
transition setting of the reader (`identity.accept_unsigned_key_records` of the monitor).

`fleet/revoked/<key_id>.json` (`edgefleet.device-revocation/1`, signed by the enrolment key too) revokes one
device key: a record carrying that key is refused from the reader's next refresh on.

Signatures cover a domain line and canonical JSON of every field but the signature (sorted keys, no spaces),
so a record re-serialised by any writer verifies the same. Everything here is pure.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgefleet.kernel.contracts.layout import FLEET_DEVICES_PREFIX, FLEET_REVOKED_PREFIX, check_name
from edgefleet.kernel.contracts.names import DeviceId
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.signatures import ED25519_SIGNATURE_BYTES, key_id, public_key_from_bytes, sign

DEVICE_KEY_SCHEMA_V1 = "edgefleet.device-key/1"
DEVICE_KEY_SCHEMA = "edgefleet.device-key/2"
REVOCATION_SCHEMA = "edgefleet.device-revocation/1"
MAX_RECORD_TEXT = 256
"""Longest `added_by` / `reason` text kept in a record."""
MAX_RECORD_BYTES = 4096
"""A device key record or revocation larger than this is refused unread (real ones are about 500 bytes)."""

KEY_ID_PATTERN = r"^[0-9a-f]{16,64}$"
SIGNATURE_PATTERN = r"^[A-Za-z0-9+/]{86}==$"
PUBLIC_KEY_PATTERN = r"^[A-Za-z0-9+/]{43}=$"  # base64 of the 32 raw bytes
_UNSIGNED = "A" * 86 + "=="  # a well-formed stand-in while the payload is built (never written)


def payload_signed_bytes(payload: Mapping[str, object]) -> bytes:
    """The schema line, then canonical JSON of the payload without the signature."""
    payload = {name: value for name, value in payload.items() if name != "signature"}
    return str(payload["schema"]).encode() + b"\n" + json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


class SignedRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def signed_bytes(self) -> bytes:
        """The exact bytes the signature covers."""
        return payload_signed_bytes(self.model_dump(mode="json", by_alias=True))


class DeviceKeyRecord(SignedRecord):
    """One device's public key as the fleet knows it (`fleet/devices/<device_id>.json`)."""

    schema_: Literal["edgefleet.device-key/1", "edgefleet.device-key/2"] = Field(
        default=DEVICE_KEY_SCHEMA, alias="schema")
    device_id: DeviceId
    public_key: str = Field(pattern=PUBLIC_KEY_PATTERN, description="the raw Ed25519 public key, base64")
    key_id: str = Field(pattern=KEY_ID_PATTERN)
    added_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    added_by: str | None = Field(default=None, max_length=MAX_RECORD_TEXT)
    # --- schema 2 ---
    signer_key_id: str | None = Field(default=None, pattern=KEY_ID_PATTERN, description="the enrolment key's id")
    signature: str | None = Field(default=None, pattern=SIGNATURE_PATTERN)

    @model_validator(mode="after")
    def _consistent(self) -> DeviceKeyRecord:
        if key_id(self.key()) != self.key_id:
            raise ValueError(f"key_id {self.key_id} is not the id of the public key ({key_id(self.key())})")
        signed_fields = (self.signer_key_id, self.signature)
        if self.schema_ == DEVICE_KEY_SCHEMA_V1 and any(value is not None for value in signed_fields):
            raise ValueError(f"signer_key_id and signature need schema {DEVICE_KEY_SCHEMA}")
        if self.schema_ == DEVICE_KEY_SCHEMA and any(value is None for value in signed_fields):
            raise ValueError(f"a schema {DEVICE_KEY_SCHEMA} record needs signer_key_id and signature")
        return self

    @property
    def signed(self) -> bool:
        return self.schema_ == DEVICE_KEY_SCHEMA

    def key(self) -> Ed25519PublicKey:
        return public_key_from_bytes(self.public_key.encode(), source=f"device key record of {self.device_id}")


class DeviceKeyRevocation(SignedRecord):
    """A device key the fleet no longer trusts (`fleet/revoked/<key_id>.json`)."""

    schema_: Literal["edgefleet.device-revocation/1"] = Field(default=REVOCATION_SCHEMA, alias="schema")
    key_id: str = Field(pattern=KEY_ID_PATTERN, description="the revoked device key's id")
    device_id: DeviceId
    revoked_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    revoked_by: str | None = Field(default=None, max_length=MAX_RECORD_TEXT)
    reason: str = Field(default="", max_length=MAX_RECORD_TEXT)
    signer_key_id: str = Field(pattern=KEY_ID_PATTERN)
    signature: str = Field(pattern=SIGNATURE_PATTERN)


def device_key_record_key(device_id: str) -> str:
    """`fleet/devices/<device_id>.json` (ValueError for a bad device id)."""
    return f"{FLEET_DEVICES_PREFIX}/{check_name('device id', device_id)}.json"


def revocation_key(revoked_key_id: str) -> str:
    """`fleet/revoked/<key_id>.json` (ValueError for a bad key id)."""
    return f"{FLEET_REVOKED_PREFIX}/{check_name('key id', revoked_key_id)}.json"


def device_id_of(record_key: str) -> str | None:
    """The device id a record's file name gives (`fleet/devices/<id>.json`), None when it names none."""
    prefix, suffix = f"{FLEET_DEVICES_PREFIX}/", ".json"
    if not (record_key.startswith(prefix) and record_key.endswith(suffix)):
        return None
    name = record_key[len(prefix):-len(suffix)]
    try:
        return check_name("device id", name)
    except ValueError:
        return None


def _signature(private_key: Ed25519PrivateKey, payload: Mapping[str, object]) -> str:
    return base64.b64encode(sign(private_key, payload_signed_bytes(payload))).decode()


def sign_record(enrolment_key: Ed25519PrivateKey, record: DeviceKeyRecord) -> DeviceKeyRecord:
    """`record` as schema 2, signed by the enrolment key."""
    payload = record.model_dump(mode="json", by_alias=True) | {
        "schema": DEVICE_KEY_SCHEMA, "signer_key_id": key_id(enrolment_key.public_key()), "signature": None}
    return DeviceKeyRecord.model_validate(payload | {"signature": _signature(enrolment_key, payload)})


def sign_revocation(enrolment_key: Ed25519PrivateKey, *, revoked_key_id: str, device_id: str,
                    revoked_by: str | None = None, reason: str = "") -> DeviceKeyRevocation:
    """A revocation of one device key, signed by the enrolment key."""
    draft = DeviceKeyRevocation(key_id=revoked_key_id, device_id=device_id, revoked_by=revoked_by, reason=reason,
                                signer_key_id=key_id(enrolment_key.public_key()), signature=_UNSIGNED)
    payload = draft.model_dump(mode="json", by_alias=True)  # signed as any reader will dump it again
    return DeviceKeyRevocation.model_validate(payload | {"signature": _signature(enrolment_key, payload)})


def check_signature(enrolment_keys: dict[str, Ed25519PublicKey], signed: DeviceKeyRecord | DeviceKeyRevocation,
                    *, source: str) -> None:
    """Checks that an enrolment key (key id -> key) signed `signed`.

    Raises:
        VerificationError: unsigned, signed by a key that is not an enrolment key, or the signature fails.
    """
    fix = "re-enrol the device (deploy-agent with the fleet enrolment key), or remove the record"
    if signed.signature is None or signed.signer_key_id is None:
        raise VerificationError(f"{source} is not signed (schema {signed.schema_})",
                                "check the record and sign it (edgefleet fleet keys sign), or " + fix)
    key = enrolment_keys.get(signed.signer_key_id)
    if key is None:
        raise VerificationError(
            f"{source} is signed by key {signed.signer_key_id}, which is not a fleet enrolment key "
            f"(known: {', '.join(sorted(enrolment_keys)) or 'none'})",
            "if that key is yours, add its public half to the monitor's identity.enrolment_keys; otherwise " + fix)
    try:
        raw = base64.b64decode(signed.signature, validate=True)
        if len(raw) != ED25519_SIGNATURE_BYTES:
            raise ValueError("length")
        key.verify(raw, signed.signed_bytes())
    except (InvalidSignature, ValueError, binascii.Error) as error:
        raise VerificationError(f"{source}: the signature of enrolment key {signed.signer_key_id} does not hold "
                                "(changed after signing)", fix) from error
