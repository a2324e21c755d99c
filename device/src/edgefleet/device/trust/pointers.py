"""Signed channel pointers (schema 2) on the device: verification, and the rule for accepting one.

The release key signs a pointer's version, manifest sha256, a counter that only goes up, an expiry and a
`downgrade` flag (TUF's answer to replay and freeze attacks, cut to this size). A device remembers, per
model, the highest counter it accepted on each channel (this module's record) and the highest version it
activated by any route (its version floor, `edgefleet.device.floor`), and refuses:

- a pointer whose signature does not verify against the release key;
- a lower counter than the one it accepted (a replayed old pointer), or the same counter with other content;
- a version below its floor, unless the signed pointer says `downgrade` (then the lower version becomes the
  new floor) and was signed after the floor was set (an older downgrade is a replay);
- an unsigned (schema 1) pointer when it requires signed pointers (the default), or once it has accepted a
  signed one on that channel (the transition setting `require_signed_pointers: false`);
- a pointer valid for longer than `MAX_POINTER_VALIDITY` from now (it would outlive every re-signing, and a
  frozen registry would never be noticed);
- an expired pointer: the device stays on what it runs and reports it (a frozen registry is noticed);
- a staged rollout (schema 3) without the device's id, or whose send-back to the version it replaces would
  take down a device whose floor is above the rollout's version (`edgefleet.device.staged`). The send-back of
  a device the rollout moved is a signed downgrade to exactly `replaces`, nothing else.

A pointer naming the version the device runs moves nothing and is not held against the floor. An operator's
`edgefleet-agent activate/rollback` over SSH is not a channel move and is not subject to these rules (it does
not lower the floor either). Everything here is pure. Signing a pointer is the pipelines' act:
`edgefleet.flows.trust.pointer_signing`.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import datetime, timedelta
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgefleet.device.floor import VersionFloor, highest
from edgefleet.device.staged import target_pointer
from edgefleet.kernel.contracts.layout import version_sort_key
from edgefleet.kernel.contracts.manifest import MAX_POINTER_VALIDITY, ChannelPointer
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.release_keyring import KeyringLike, verify_by_key_id

log = logging.getLogger(__name__)

RECORD_FILE = ".channel.json"
"""Per model, under `models/<model>/` in the device store: what pull mode accepted."""

# The longest a signed pointer may still be valid when a device reads it (the contract's cap). Pipelines sign
# for 14 days and re-sign a week before expiry (`signing.pointer_validity_days`, capped at the same value).

Verdict = Literal["accept", "refuse", "expired"]


class ChannelRecord(BaseModel):
    """What a device accepted from a model's channels (kept in `models/<model>/.channel.json`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    highest_version: str | None = None
    """The highest version accepted from a channel (lowered by a signed downgrade). Part of the floor with
    the store's own record (`edgefleet.device.floor`), which also counts pushed versions."""
    counters: dict[str, int] = Field(default_factory=dict)
    """channel -> highest counter accepted (present once a signed pointer was accepted there)."""
    pointers: dict[str, str] = Field(default_factory=dict)
    """channel -> "<version> <manifest sha256>" of the pointer that carried that counter."""


class Judgement(NamedTuple):
    """A device's decision about a channel pointer."""

    verdict: Verdict
    reason: str
    target: ChannelPointer | None = None
    """The pointer as it applies to this device (`edgefleet.device.staged.target_pointer`: for a staged
    rollout, the version of its side of the share); None when the pointer was refused before that."""


def verify_pointer(public_key: KeyringLike, pointer: ChannelPointer, *, source: str) -> None:
    """Checks a schema 2 pointer's signature with the key of the release keyring its `key_id` names.

    Raises:
        UnknownKeyError: the key it names is not in the keyring (not yet added, or retired).
        VerificationError: unsigned, or not signed by the key it names (names `source` and the key).
    """
    if not pointer.signed or pointer.signature is None:
        raise VerificationError(
            f"channel pointer {source} is not signed (schema {pointer.schema_})",
            "re-sign the channel with the release key (edgefleet registry promote ... or the resign-channels "
            "deployment)",
        )
    verify_by_key_id(
        public_key,
        pointer.signed_bytes(),
        base64.b64decode(pointer.signature),
        key_id=pointer.key_id,
        what=f"channel pointer {source} (signed by key {pointer.key_id})",
    )


def judge_pointer(
    pointer: ChannelPointer,
    record: ChannelRecord,
    *,
    floor: VersionFloor | None,
    now: datetime,
    require_signed: bool = True,
    running: str | None = None,
    max_validity: timedelta = MAX_POINTER_VALIDITY,
    device_id: str | None = None,
) -> Judgement:
    """Whether a device accepts a (signature-checked) pointer, given what it accepted and activated. Pure.

    Args:
        floor: the store's version floor (`ModelStore.floor`); the record's `highest_version` counts too.
        running: `version_identity` of the version the device runs: a pointer naming it moves nothing and
            is not held against the floor (unless it is a downgrade, which would lower the floor).
        device_id: this device's id: a staged rollout (schema 3) names a version per side of its share.
    """
    where = f"channel {pointer.channel} of model {pointer.model}"
    problem = _signature_rule(pointer, record, where, require_signed) or _freshness_rule(
        pointer, record, where, now, max_validity
    )
    if problem is not None:
        return problem
    target = target_pointer(pointer, device_id, highest(floor.version if floor else None, record.highest_version))
    if target.problem is not None:
        return Judgement("refuse", target.problem)
    effective = target.pointer
    said = f"{where} names {effective.version}" + (f" ({target.reason})" if target.reason else "")
    if not effective.downgrade and running == version_identity(effective.version, effective.manifest_sha256):
        return Judgement("accept", f"{said}, the running version", effective)
    refused = _floor_rule(effective, record, where, floor)
    return refused if refused is not None else Judgement("accept", said, effective)


def version_identity(version: str, manifest_sha256: str) -> str:
    """"<version> <manifest sha256>": a version as a pointer names it (compare with `running`)."""
    return f"{version} {manifest_sha256}"


def _signature_rule(
    pointer: ChannelPointer, record: ChannelRecord, where: str, require_signed: bool
) -> Judgement | None:
    if pointer.signed:
        return None
    if require_signed:
        return Judgement("refuse", f"{where} is unsigned (schema 1) and this agent requires signed pointers")
    if pointer.channel in record.counters:
        return Judgement(
            "refuse",
            f"{where} is unsigned (schema 1) but a signed pointer (counter {record.counters[pointer.channel]}) "
            "was accepted before: an unsigned pointer now is a replay or a forgery",
        )
    return None


def _freshness_rule(
    pointer: ChannelPointer, record: ChannelRecord, where: str, now: datetime, max_validity: timedelta
) -> Judgement | None:
    if not pointer.signed:
        return None
    assert pointer.counter is not None and pointer.expires_at is not None
    seen = record.counters.get(pointer.channel)
    if seen is not None and pointer.counter < seen:
        return Judgement(
            "refuse", f"{where} has counter {pointer.counter}, lower than {seen} accepted before: a replayed old "
            "pointer"
        )
    if seen is not None and pointer.counter == seen and record.pointers.get(pointer.channel) != _identity(pointer):
        return Judgement("refuse", f"{where} reuses counter {seen} for different content ({pointer.version})")
    if pointer.expires_at.tzinfo is None:  # not comparable with a clock: refused, never a crash
        return Judgement("refuse", f"{where} has an expiry without a time zone ({pointer.expires_at.isoformat()}): "
                         "re-sign it (the pipelines write UTC)")
    if pointer.expires_at - now > max_validity:
        return Judgement(
            "refuse",
            f"{where} is valid until {pointer.expires_at.isoformat()}, more than the {max_validity.days} days "
            "this agent accepts from now: a pointer that outlives every re-signing would hide a frozen "
            "registry (re-sign it with a shorter validity)",
        )
    if pointer.expires_at <= now:
        return Judgement(
            "expired",
            f"{where} expired at {pointer.expires_at.isoformat()} (names {pointer.version}): staying on "
            "the running version until the channel is re-signed",
        )
    return None


def _floor_rule(
    pointer: ChannelPointer, record: ChannelRecord, where: str, floor: VersionFloor | None
) -> Judgement | None:
    lowest = highest(floor.version if floor else None, record.highest_version)
    if lowest is None or version_sort_key(pointer.version) >= version_sort_key(lowest):
        return None
    if not (pointer.signed and pointer.downgrade):
        return Judgement(
            "refuse",
            f"{where} names {pointer.version}, lower than {lowest} this device activated, and is not a "
            "signed downgrade",
        )
    since = floor.since if floor is not None and floor.version == lowest else None
    if since is not None and pointer.updated_at <= since:
        return Judgement(
            "refuse",
            f"{where} is a downgrade to {pointer.version} signed at {pointer.updated_at.isoformat()}, before "
            f"this device activated {lowest} ({since.isoformat()}): a replayed old downgrade",
        )
    return None


def assess_pointer(
    public_key: KeyringLike,
    pointer: ChannelPointer,
    record: ChannelRecord,
    *,
    floor: VersionFloor | None,
    now: datetime,
    source: str,
    require_signed: bool = True,
    running: str | None = None,
    device_id: str | None = None,
) -> Judgement:
    """The signature check, then `judge_pointer`: what a device does with a pointer as read."""
    if pointer.signed:
        try:
            verify_pointer(public_key, pointer, source=source)
        except VerificationError as error:
            return Judgement("refuse", error.message)
    return judge_pointer(pointer, record, floor=floor, now=now, require_signed=require_signed, running=running,
                         device_id=device_id)


def accepted(record: ChannelRecord, pointer: ChannelPointer, target: ChannelPointer | None = None) -> ChannelRecord:
    """The record after accepting `pointer` (pure). `target`: the pointer as it applies to this device
    (`Judgement.target`), whose version is what the floor follows; the counter is the signed pointer's."""
    moved = target if target is not None else pointer
    floor = record.highest_version
    if floor is None or moved.downgrade or version_sort_key(moved.version) > version_sort_key(floor):
        floor = moved.version
    counters = dict(record.counters)
    pointers = dict(record.pointers)
    if pointer.signed and pointer.counter is not None:
        counters[pointer.channel] = pointer.counter
        pointers[pointer.channel] = _identity(pointer)
    return ChannelRecord(highest_version=floor, counters=counters, pointers=pointers)


def parse_record(data: bytes | None, *, source: str) -> ChannelRecord:
    """Reads a record file's bytes (None: no record yet).

    Raises:
        VerificationError: the record is damaged (refusing is safer than forgetting the floor).
    """
    if data is None:
        return ChannelRecord()
    try:
        return ChannelRecord.model_validate(json.loads(data))
    except (ValueError, ValidationError) as error:
        raise VerificationError(
            f"channel record {source} is damaged ({error})",
            "restore it, or remove it to trust the next signed pointer again (after checking the registry)",
        ) from error


def record_bytes(record: ChannelRecord) -> bytes:
    return record.model_dump_json(indent=2).encode() + b"\n"


def _identity(pointer: ChannelPointer) -> str:
    identity = f"{pointer.version} {pointer.manifest_sha256} {int(pointer.downgrade)}"
    stage = pointer.rollout
    return identity if stage is None else f"{identity} {stage.id} {stage.replaces} {stage.share_bp}"
