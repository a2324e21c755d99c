"""The fleet's device public keys, read from the registry for the monitor (`fleet/devices/<device_id>.json`).

A record is trusted only when (`judge_record`, pure):
- its file name is `fleet/devices/<device_id>.json` and its body names that same device (identity is the file
  name, checked against the signed body: a planted `zz-cam-1-backup.json` naming `cam-1` is refused);
- it is signed (`edgefleet.device-key/2`) by a fleet enrolment key the monitor is configured with, or it is an
  unsigned `/1` record and the transition setting `accept_unsigned_key_records` is on;
- its key is not revoked: by a signed `fleet/revoked/<key_id>.json`, or by the monitor's own `revoked_keys`.

One refused record drops that device only (the refusal is returned, for the monitor to log and count); every
other device keeps its key. Records are written by `edgefleet.flows.trust.device_key_records`.

`FleetKeyReader` reads the keys again and again (issue 23: 10,000 devices, one GET each, every minute took
minutes): each read lists the records with a tag of their content (GCS: the generation, carried by the listing)
and reads only the records that are new or whose tag changed, `read_workers` at a time; what it judged of a
record's content is kept with its tag. Revocations are applied to every kept record at each read, so a new
revocation drops a device whose record did not change. A record that could not be read is not kept (read
again next time).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

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

KEY_READ_WORKERS = 8
"""Records read at once by a `FleetKeyReader` (the first read of a large fleet; GCS clients are thread-safe and
keep a pool of 10 connections)."""

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
    check_not_revoked(record, revoked)
    return record


def check_not_revoked(record: DeviceKeyRecord, revoked: frozenset[str]) -> None:
    """Raises VerificationError when the key of `record` is in `revoked`. Pure."""
    if record.key_id in revoked:
        raise VerificationError(f"the key {record.key_id} of device {record.device_id} is revoked",
                                "re-enrol the device with a new key (deploy-agent replace_device_keys)")


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


T = TypeVar("T")


@dataclass(frozen=True)
class _Kept(Generic[T]):
    """What was judged of one record's content: the listing tag it was read at, and the outcome."""

    tag: str
    outcome: T | RefusedRecord


class FleetKeyReader:
    """The fleet's keys, read incrementally (see the module docstring); call it for a `FleetKeys`.

    Not for concurrent calls (`TelemetryVerifier` serialises its refreshes).

    Args:
        registry: the registry holding `fleet/devices/` and `fleet/revoked/`.
        policy: what the monitor trusts.
        read_workers: records read at once.
    """

    def __init__(self, registry: RegistryReader, policy: KeyRecordPolicy, *,
                 read_workers: int = KEY_READ_WORKERS) -> None:
        self.registry, self.policy, self.read_workers = registry, policy, read_workers
        self._records: dict[str, _Kept[DeviceKeyRecord]] = {}
        self._revocations: dict[str, _Kept[str]] = {}
        self.records_read = 0
        """Records (device keys and revocations) read so far, for measurements."""

    def __call__(self) -> FleetKeys:
        """device_id -> public key of every trusted record; a refused record drops its device only.

        Raises:
            EdgefleetError: a listing failed (nothing kept changes; the caller keeps the keys it has).
        """
        revocations = self._refresh(f"{FLEET_REVOKED_PREFIX}/", self._revocations, self._judge_revocation)
        records = self._refresh(f"{FLEET_DEVICES_PREFIX}/", self._records, self._judge_record)
        self._revocations, self._records = revocations, records
        revoked = self.policy.revoked_keys | {kept.outcome for kept in revocations.values()
                                              if isinstance(kept.outcome, str)}
        refused = [kept.outcome for kept in revocations.values() if isinstance(kept.outcome, RefusedRecord)]
        keys: dict[str, Ed25519PublicKey] = {}
        for record_key, kept in records.items():
            try:
                if isinstance(kept.outcome, RefusedRecord):
                    refused.append(kept.outcome)
                    continue
                check_not_revoked(kept.outcome, frozenset(revoked))
            except EdgefleetError as error:
                refused.append(self._refusal(record_key, error))
                continue
            keys[kept.outcome.device_id] = kept.outcome.key()
        return FleetKeys(keys, tuple(refused), frozenset(revoked))

    def _refresh(self, prefix: str, kept: Mapping[str, _Kept[T]],
                 judge: Callable[[str, object], T]) -> dict[str, _Kept[T]]:
        """The records under `prefix` now: those whose tag is unchanged as kept, the others read and judged."""
        listing = self.registry.list_json_tagged(prefix)
        stale = [key for key, tag in listing.items() if tag is None or key not in kept or kept[key].tag != tag]
        with ThreadPoolExecutor(max_workers=self.read_workers) as pool:
            read = dict(zip(stale, pool.map(lambda key: self._read_one(key, judge), stale), strict=True))
        self.records_read += len(stale)
        fresh: dict[str, _Kept[T]] = {}
        for key, tag in listing.items():
            if key not in read:
                fresh[key] = kept[key]
            elif read[key] is not None:
                outcome, keep = read[key]  # type: ignore[misc]
                fresh[key] = _Kept(tag if keep and tag is not None else "", outcome)  # "": never matches a tag
        return fresh

    def _read_one(self, record_key: str, judge: Callable[[str, object], T]) -> tuple[T | RefusedRecord, bool] | None:
        """(outcome, whether to keep it for this tag); None when the record is gone since the listing."""
        try:
            value = _read(self.registry, record_key)
        except EdgefleetError as error:  # perhaps passing (a network error): read it again next time
            return self._refusal(record_key, error), False
        if value is None:
            return None
        try:
            return judge(record_key, value), True
        except EdgefleetError as error:  # a verdict on the content: kept until the record changes
            return self._refusal(record_key, error), True

    def _judge_record(self, record_key: str, value: object) -> DeviceKeyRecord:
        return judge_record(record_key, value, self.policy, frozenset())  # revocations: at each read, above

    def _judge_revocation(self, record_key: str, value: object) -> str:
        return judge_revocation(record_key, value, self.policy).key_id

    def _refusal(self, record_key: str, error: EdgefleetError) -> RefusedRecord:
        return RefusedRecord(self.registry.describe(record_key), error.message, error.fix or "")


def load_fleet_keys(registry: RegistryReader, policy: KeyRecordPolicy) -> FleetKeys:
    """device_id -> public key of every trusted record, read once (`FleetKeyReader` reads again incrementally)."""
    return FleetKeyReader(registry, policy)()


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
    if revoked_in_registry(registry, policy, record.key_id):
        reason = f"the key {record.key_id} of device {device_id} is revoked"
        refusal = RefusedRecord(registry.describe(record_key), reason, "re-enrol the device with a new key")
        return FleetKeys({}, (refusal,), frozenset({record.key_id}))
    return FleetKeys({device_id: record.key()})


def revoked_in_registry(registry: RegistryReader, policy: KeyRecordPolicy, revoked_key_id: str) -> bool:
    """Whether `fleet/revoked/<revoked_key_id>.json` holds a revocation of that key signed by an enrolment key (one
    small read; a damaged or unsigned one counts for nothing)."""
    record_key = revocation_key(revoked_key_id)
    try:
        value = _read(registry, record_key)
        return value is not None and judge_revocation(record_key, value, policy).key_id == revoked_key_id
    except EdgefleetError:
        return False  # a damaged or unsigned revocation counts for nothing (the full read reports it)
