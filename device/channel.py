"""Signed channel pointers (schema 2) on the device: verification, and the rule for accepting one.

The release key signs a pointer's version, manifest sha256, a counter that only goes up, an expiry and a
`downgrade` flag (TUF's answer to replay and freeze attacks, cut to this size). A device remembers, per
model, the highest counter it accepted on each channel and the highest version it accepted, and refuses:

- a pointer whose signature does not verify against the release key;
- a lower counter than the one it accepted (a replayed old pointer), or the same counter with other content;
- a lower version than the highest it accepted, unless the signed pointer says `downgrade` (then the lower
  version becomes the new floor);
- an unsigned (schema 1) pointer once it has accepted a signed one on that channel, or when configured to
  require signed pointers;
- an expired pointer: the device stays on what it runs and reports it (a frozen registry is noticed).

An operator's rollback over SSH (`edgefleet-agent activate/rollback`) is not a channel move and is not
subject to these rules. Everything here is pure. Signing a pointer is the pipelines' act:
`edgefleet.flows.registry.pointers`.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import datetime
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgefleet.kernel.contracts.layout import version_sort_key
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.signing import PublicKeyLike, verify

log = logging.getLogger(__name__)

RECORD_FILE = ".channel.json"
"""Per model, under `models/<model>/` in the device store: what pull mode accepted."""

Verdict = Literal["accept", "refuse", "expired"]


class ChannelRecord(BaseModel):
    """What a device accepted from a model's channels (kept in `models/<model>/.channel.json`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    highest_version: str | None = None
    """The floor: no lower version is accepted without a signed downgrade pointer."""
    counters: dict[str, int] = Field(default_factory=dict)
    """channel -> highest counter accepted (present once a signed pointer was accepted there)."""
    pointers: dict[str, str] = Field(default_factory=dict)
    """channel -> "<version> <manifest sha256>" of the pointer that carried that counter."""


class Judgement(NamedTuple):
    """A device's decision about a channel pointer."""

    verdict: Verdict
    reason: str


def verify_pointer(public_key: PublicKeyLike, pointer: ChannelPointer, *, source: str) -> None:
    """Checks a schema 2 pointer's signature against the release key.

    Raises:
        VerificationError: unsigned, or not signed by this key (names `source` and the key).
    """
    if not pointer.signed or pointer.signature is None:
        raise VerificationError(
            f"channel pointer {source} is not signed (schema {pointer.schema_})",
            "re-sign the channel with the release key (edgefleet registry promote ... or the resign-channels "
            "deployment)",
        )
    verify(
        public_key,
        pointer.signed_bytes(),
        base64.b64decode(pointer.signature),
        what=f"channel pointer {source} (signed by key {pointer.key_id})",
    )


def judge_pointer(
    pointer: ChannelPointer,
    record: ChannelRecord,
    *,
    now: datetime,
    require_signed: bool = False,
) -> Judgement:
    """Whether a device accepts a (signature-checked) pointer, given what it accepted before. Pure."""
    channel = pointer.channel
    where = f"channel {channel} of model {pointer.model}"
    if not pointer.signed:
        if require_signed:
            return Judgement("refuse", f"{where} is unsigned (schema 1) and this agent requires signed pointers")
        if channel in record.counters:
            return Judgement(
                "refuse",
                f"{where} is unsigned (schema 1) but a signed pointer (counter {record.counters[channel]}) was "
                "accepted before: an unsigned pointer now is a replay or a forgery",
            )
    else:
        assert pointer.counter is not None and pointer.expires_at is not None
        seen = record.counters.get(channel)
        if seen is not None and pointer.counter < seen:
            return Judgement(
                "refuse",
                f"{where} has counter {pointer.counter}, lower than {seen} accepted before: a replayed old "
                "pointer",
            )
        if seen is not None and pointer.counter == seen and record.pointers.get(channel) != _identity(pointer):
            return Judgement(
                "refuse", f"{where} reuses counter {seen} for different content ({pointer.version})"
            )
        if pointer.expires_at <= now:
            return Judgement(
                "expired",
                f"{where} expired at {pointer.expires_at.isoformat()} (names {pointer.version}): staying on "
                "the running version until the channel is re-signed",
            )
    floor = record.highest_version
    if floor is not None and version_sort_key(pointer.version) < version_sort_key(floor):
        if not pointer.downgrade:
            return Judgement(
                "refuse",
                f"{where} names {pointer.version}, lower than {floor} accepted before, and is not a signed "
                "downgrade",
            )
    return Judgement("accept", f"{where} names {pointer.version}")


def accepted(record: ChannelRecord, pointer: ChannelPointer) -> ChannelRecord:
    """The record after accepting `pointer` (pure)."""
    floor = record.highest_version
    if floor is None or pointer.downgrade or version_sort_key(pointer.version) > version_sort_key(floor):
        floor = pointer.version
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
    return f"{pointer.version} {pointer.manifest_sha256} {int(pointer.downgrade)}"
