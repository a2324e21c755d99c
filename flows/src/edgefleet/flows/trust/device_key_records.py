"""Enrolling a device with the fleet: its public key in `fleet/devices/<device_id>.json`, signed by the fleet
enrolment key; revoking a device key (`fleet/revoked/<key_id>.json`); signing records written before schema 2.

Done by `deploy-agent` (and the local fleet) after the agent made its key on the device, and by
`edgefleet fleet keys sign|revoke`; the fleet monitor reads the records (`edgefleet.monitor.device_key_reader`).

Who signs: the fleet enrolment key, a key of its own (not the release key: least privilege both ways). It is
loaded like the release key: a Prefect Secret block, a key file, or a local development key
(`~/.edgefleet/keys/fleet-enrolment.key`, created when missing, refused for gs:// registries unless allowed).

A record changes only by compare-and-swap, and a different key for a known device is refused unless explicitly
replaced (`replace=True`: a re-imaged device); the replaced key is revoked, so the old record, replayed, is
refused too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgefleet.device.registry import JsonRecord
from edgefleet.device.trust.device_identity import public_key_text
from edgefleet.flows.registry.base import RegistryWriter
from edgefleet.flows.trust.keysource import KeyRole, KeySource, expand, load_key, public_key_path
from edgefleet.kernel.contracts.devicekey import (
    DEVICE_KEY_SCHEMA_V1,
    DeviceKeyRecord,
    DeviceKeyRevocation,
    check_signature,
    device_id_of,
    device_key_record_key,
    revocation_key,
    sign_record,
    sign_revocation,
)
from edgefleet.kernel.contracts.layout import FLEET_DEVICES_PREFIX
from edgefleet.kernel.errors import ConflictError, RegistryError, VerificationError
from edgefleet.kernel.trust.signatures import key_id

log = logging.getLogger(__name__)

DEFAULT_ENROLMENT_DEV_KEY = "~/.edgefleet/keys/fleet-enrolment.key"


class EnrolmentKeyParams(BaseModel):
    """Where the fleet enrolment key (it signs device key records) is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret_block: str | None = Field(default=None, description="a Prefect Secret block holding the PEM key")
    key_file: str | None = Field(default=None, description="a PEM private key file")
    dev_key_file: str = Field(default=DEFAULT_ENROLMENT_DEV_KEY,
                              description="the local development key (created when missing) when neither is set")
    allow_development_key: bool = Field(default=False,
                                        description="let the development key enrol devices of a gs:// registry")


ENROLMENT_KEY = KeyRole(name="fleet enrolment key", setting="enrolment", flag="--enrolment-key",
                        purpose="device key records")


def resolve_enrolment_key(params: EnrolmentKeyParams, *, registry_uri: str, create: bool = True) -> Ed25519PrivateKey:
    """The enrolment key, creating the development key (and its `.pub`) when nothing is configured
    (`edgefleet.flows.trust.keysource.load_key`).

    Raises:
        ConfigError: the Secret block is unusable; the development key for a gs:// registry; no key and not `create`.
        VerificationError: the key file is missing or not an Ed25519 PEM key.
    """
    source = KeySource(params.secret_block, params.key_file, params.dev_key_file, params.allow_development_key)
    return load_key(source, ENROLMENT_KEY, registry_uri=registry_uri, create=create).private_key


def development_enrolment_key(path: str | os.PathLike[str], *, registry_uri: str) -> Path:
    """Makes the local development enrolment key at `path` unless it exists; returns its public key file
    (`<path>.pub`), the one the monitor's `identity.enrolment_keys` lists (demo, sandbox, local fleets; asked
    for by name, so allowed for any registry, emulated buckets included)."""
    params = EnrolmentKeyParams(dev_key_file=str(path), allow_development_key=True)
    resolve_enrolment_key(params, registry_uri=registry_uri)
    return public_key_path(expand(params.dev_key_file))


def register_device_key(
    registry: RegistryWriter,
    device_id: str,
    public_key: Ed25519PublicKey,
    *,
    enrolment_key: Ed25519PrivateKey,
    by: str | None = None,
    replace: bool = False,
) -> DeviceKeyRecord:
    """Publishes a device's public key with the fleet, signed by the enrolment key (idempotent for the same key).

    Raises:
        ConflictError: the device is known with another key and `replace` is False; or the key is revoked.
    """
    key_file = device_key_record_key(device_id)
    new_key_id = key_id(public_key)
    if registry.get_json(revocation_key(new_key_id)) is not None:
        raise ConflictError(f"the key {new_key_id} of device {device_id} is revoked",
                            "the device must make a new key (remove its keys/device.key) and be enrolled again")
    current = registry.read_json(key_file)
    known = _parsed(current.value)
    if known is not None and known.public_key == public_key_text(public_key) and _signed_by(known, enrolment_key):
        return known
    if known is not None and known.public_key != public_key_text(public_key):
        if not replace:
            raise ConflictError(
                f"device {device_id} is known to the fleet with key {known.key_id}, and now presents key {new_key_id}",
                "if the device was re-imaged or its key replaced on purpose, register it again with replace "
                "(deploy-agent: replace_device_keys: true); otherwise treat the device as compromised")
        revoke_key(registry, known.key_id, device_id, enrolment_key=enrolment_key, by=by,
                   reason=f"replaced by key {new_key_id}")
    draft = DeviceKeyRecord(schema=DEVICE_KEY_SCHEMA_V1, device_id=device_id, public_key=public_key_text(public_key),
                            key_id=new_key_id, added_by=by)  # the unsigned fields, then signed as schema 2
    record = sign_record(enrolment_key, draft)
    registry.put_json(key_file, record, expected_generation=current.generation)
    return record


def _signed_by(record: DeviceKeyRecord | DeviceKeyRevocation, enrolment_key: Ed25519PrivateKey) -> bool:
    signer = enrolment_key.public_key()
    try:
        check_signature({key_id(signer): signer}, record, source="device key record")
    except VerificationError:
        return False
    return True


def _parsed(value: object) -> DeviceKeyRecord | None:
    """The record read back (None: none, or damaged: a damaged record is replaced by the enrolment)."""
    if value is None:
        return None
    try:
        return DeviceKeyRecord.model_validate(value)
    except (ValidationError, ValueError):
        return None


def revoke_key(registry: RegistryWriter, revoked_key_id: str, device_id: str, *, enrolment_key: Ed25519PrivateKey,
               by: str | None = None, reason: str = "") -> DeviceKeyRevocation:
    """Writes a signed revocation of a device key (one by this enrolment key already there is kept)."""
    record_key = revocation_key(revoked_key_id)
    current = registry.read_json(record_key)
    if current.value is not None:
        try:
            existing = DeviceKeyRevocation.model_validate(current.value)
        except ValidationError:
            existing = None  # damaged: replaced below
        if existing is not None and _signed_by(existing, enrolment_key):
            return existing
    revocation = sign_revocation(enrolment_key, revoked_key_id=revoked_key_id, device_id=device_id,
                                 revoked_by=by, reason=reason)
    registry.put_json(record_key, revocation, expected_generation=current.generation)
    return revocation


def revoke_device(registry: RegistryWriter, device_id: str, *, enrolment_key: Ed25519PrivateKey,
                  by: str | None = None, reason: str = "") -> DeviceKeyRevocation:
    """Revokes the key a device is enrolled with (its record stays, refused by every monitor from its next read).

    Raises:
        RegistryError: the device has no readable key record.
    """
    record_key = device_key_record_key(device_id)
    known = _parsed(registry.get_json(record_key))
    if known is None:
        raise RegistryError(f"device {device_id} has no readable key record ({registry.describe(record_key)})",
                            f"revoke by key id instead (edgefleet fleet keys revoke {device_id} --key-id ID)")
    return revoke_key(registry, known.key_id, device_id, enrolment_key=enrolment_key, by=by, reason=reason)


class UnsignedRecord(NamedTuple):
    """A record `sign_records` would sign: where it is, what it says, its generation (compare-and-swap)."""

    record_key: str
    record: DeviceKeyRecord
    generation: int


class SkippedRecord(NamedTuple):
    record_key: str
    reason: str


def unsigned_records(registry: RegistryWriter) -> tuple[list[UnsignedRecord], list[SkippedRecord]]:
    """The unsigned (schema 1) records to show before signing them, and the records that will never be signed
    (damaged, or naming another device than their file name)."""
    pending, skipped = [], []
    for record_key in registry.list_json(f"{FLEET_DEVICES_PREFIX}/"):
        try:
            current = registry.read_json(record_key)
        except RegistryError:
            current = JsonRecord(None, 0)
        record = _parsed(current.value)
        if record is None:
            skipped.append(SkippedRecord(record_key, "damaged: re-enrol the device or remove the record"))
        elif device_id_of(record_key) != record.device_id:
            skipped.append(SkippedRecord(record_key, f"names device {record.device_id}: remove it"))
        elif not record.signed:
            pending.append(UnsignedRecord(record_key, record, current.generation))
    return pending, skipped


def sign_records(registry: RegistryWriter, records: list[UnsignedRecord], *,
                 enrolment_key: Ed25519PrivateKey) -> list[DeviceKeyRecord]:
    """Signs the records shown to the operator (`unsigned_records`); a record changed since is refused.

    Raises:
        ConflictError: a record changed after it was shown (nothing signed from then on: show them again).
    """
    return [_sign_one(registry, pending, enrolment_key) for pending in records]


def _sign_one(registry: RegistryWriter, pending: UnsignedRecord, enrolment_key: Ed25519PrivateKey) -> DeviceKeyRecord:
    signed = sign_record(enrolment_key, pending.record)
    registry.put_json(pending.record_key, signed, expected_generation=pending.generation)
    return signed
