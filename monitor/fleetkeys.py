"""The fleet's device public keys, read from the registry for the monitor (`fleet/devices/<device_id>.json`).

A record is trusted only when (`judge_record`, pure):
- its file name is `fleet/devices/<device_id>.json` and its body names that same device (identity is the file
  name, checked against the signed body: a planted `zz-cam-1-backup.json` naming `cam-1` is refused);
- it is signed (`edgefleet.device-key/2`) by a fleet enrolment key the monitor is configured with, or it is an
  unsigned `/1` record and the transition setting `accept_unsigned_key_records` is on;
- its key is not revoked: by a signed `fleet/revoked/<key_id>.json`, or by the monitor's own `revoked_keys`.

One refused record drops that device only (the refusal is returned, for the monitor to log and count); every
other device keeps its key. Records are written by `edgefleet.flows.registry.fleetkeys`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from edgefleet.device.registry.base import RegistryReader
from edgefleet.kernel.contracts.devicekey import (
    MAX_RECORD_BYTES,
    DeviceKeyRecord,
    DeviceKeyRevocation,
    check_signature,
    device_id_of,
    device_key_record_key,
    revocation_key,
)
from edgefleet.kernel.contracts.layout import FLEET_DEVICES_PREFIX, FLEET_REVOKED_PREFIX
from edgefleet.kernel.errors import EdgefleetError, VerificationError

SIGN_FIX = ("check the record, then sign it with the fleet enrolment key (edgefleet fleet keys sign), or re-enrol "
            "the device (deploy-agent)")


@dataclass(frozen=True)
class KeyRecordPolicy:
    """What the monitor trusts: the enrolment keys (key id -> key), the transition setting, its own revocations."""

    enrolment_keys: Mapping[str, Ed25519PublicKey]
    accept_unsigned: bool = False
    revoked_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RefusedRecord:
    """A record the monitor does not trust, and why."""

    record: str
    reason: str
    fix: str


@dataclass(frozen=True)
class FleetKeys:
    """What one read of the registry gave: device id -> key, the refused records, the revoked key ids."""

    keys: Mapping[str, Ed25519PublicKey]
    refused: tuple[RefusedRecord, ...] = ()
    revoked: frozenset[str] = field(default_factory=frozenset)


def judge_record(record_key: str, value: object, policy: KeyRecordPolicy, revoked: frozenset[str]) -> DeviceKeyRecord:
    """The record at `record_key` (its parsed JSON `value`) if the monitor trusts it. Pure.

    Raises:
        VerificationError: the record is misnamed, damaged, names another device, unsigned, not signed by an
            enrolment key, or its key is revoked.
    """
    device_id = device_id_of(record_key)
    if device_id is None:
        raise VerificationError(f"{record_key} is not named {FLEET_DEVICES_PREFIX}/<device id>.json",
                                "remove it: device key records are named after their device")
    try:
        record = DeviceKeyRecord.model_validate(value)
    except ValidationError as error:
        raise VerificationError(f"device key record {record_key} is damaged ({error.errors()[0]['msg']})",
                                "re-enrol the device (deploy-agent) or remove the record") from error
    if record.device_id != device_id:
        raise VerificationError(
            f"device key record {record_key} names device {record.device_id}: a record speaks only for the device "
            "its file is named after", "remove it, and check who can write to the registry")
    if record.signed:
        check_signature(dict(policy.enrolment_keys), record, source=f"device key record {record_key}")
    elif not policy.accept_unsigned:
        raise VerificationError(
            f"device key record {record_key} is unsigned ({record.schema_}) and unsigned records are not accepted",
            SIGN_FIX + "; during an upgrade only: identity.accept_unsigned_key_records: true")
    if record.key_id in revoked:
        raise VerificationError(f"the key {record.key_id} of device {device_id} is revoked",
                                "re-enrol the device with a new key (deploy-agent replace_device_keys)")
    return record


def judge_revocation(record_key: str, value: object, policy: KeyRecordPolicy) -> DeviceKeyRevocation:
    """The revocation at `record_key` if it is signed by an enrolment key and named after its key id. Pure.

    Raises:
        VerificationError: damaged, misnamed or not signed by an enrolment key.
    """
    try:
        revocation = DeviceKeyRevocation.model_validate(value)
    except ValidationError as error:
        raise VerificationError(f"revocation {record_key} is damaged ({error.errors()[0]['msg']})",
                                "revoke the key again (edgefleet fleet keys revoke)") from error
    if revocation_key(revocation.key_id) != record_key:
        raise VerificationError(f"revocation {record_key} names key {revocation.key_id}",
                                "revoke the key again (edgefleet fleet keys revoke)")
    check_signature(dict(policy.enrolment_keys), revocation, source=f"revocation {record_key}")
    return revocation


def _read(registry: RegistryReader, record_key: str) -> object:
    return registry.get_json_bounded(record_key, MAX_RECORD_BYTES)


def load_revoked(registry: RegistryReader, policy: KeyRecordPolicy) -> tuple[frozenset[str], list[RefusedRecord]]:
    """The revoked key ids (the registry's signed revocations and the policy's own), and refused revocations."""
    revoked, refused = set(policy.revoked_keys), []
    for record_key in registry.list_json(f"{FLEET_REVOKED_PREFIX}/"):
        try:
            revoked.add(judge_revocation(record_key, _read(registry, record_key), policy).key_id)
        except EdgefleetError as error:
            refused.append(RefusedRecord(registry.describe(record_key), error.message, error.fix or ""))
    return frozenset(revoked), refused


def load_fleet_keys(registry: RegistryReader, policy: KeyRecordPolicy) -> FleetKeys:
    """device_id -> public key of every trusted record; a refused record drops its device only."""
    revoked, refused = load_revoked(registry, policy)
    keys: dict[str, Ed25519PublicKey] = {}
    for record_key in registry.list_json(f"{FLEET_DEVICES_PREFIX}/"):
        try:
            record = judge_record(record_key, _read(registry, record_key), policy, revoked)
        except EdgefleetError as error:
            refused.append(RefusedRecord(registry.describe(record_key), error.message, error.fix or ""))
            continue
        keys[record.device_id] = record.key()
    return FleetKeys(keys, tuple(refused), revoked)


def load_device_key(registry: RegistryReader, policy: KeyRecordPolicy, device_id: str,
                    revoked: frozenset[str]) -> FleetKeys:
    """One device's key, read alone (a device without a key since the last full read: two small reads, its record
    and a revocation of its key, whatever the size of the fleet); checked as `load_fleet_keys` checks it.

    Args:
        revoked: the key ids known to be revoked already.
    """
    try:
        record_key = device_key_record_key(device_id)
    except ValueError:
        return FleetKeys({})  # not a device id: no record can name it
    try:
        value = _read(registry, record_key)
        if value is None:
            return FleetKeys({})
        record = judge_record(record_key, value, policy, revoked | policy.revoked_keys)
    except EdgefleetError as error:
        return FleetKeys({}, (RefusedRecord(registry.describe(record_key), error.message, error.fix or ""),))
    if _revoked_in_registry(registry, policy, record.key_id):
        reason = f"the key {record.key_id} of device {device_id} is revoked"
        refusal = RefusedRecord(registry.describe(record_key), reason, "re-enrol the device with a new key")
        return FleetKeys({}, (refusal,), frozenset({record.key_id}))
    return FleetKeys({device_id: record.key()})


def _revoked_in_registry(registry: RegistryReader, policy: KeyRecordPolicy, revoked_key_id: str) -> bool:
    record_key = revocation_key(revoked_key_id)
    try:
        value = _read(registry, record_key)
        return value is not None and judge_revocation(record_key, value, policy).key_id == revoked_key_id
    except EdgefleetError:
        return False  # a damaged or unsigned revocation counts for nothing (the full read reports it)
