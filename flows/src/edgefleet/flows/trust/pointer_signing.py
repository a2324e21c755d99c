"""Signing channel pointers (schema 2): the release key's act, done by the pipelines.

The device verifies and judges what is signed here (`edgefleet.device.trust.pointers`).
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.kernel.contracts.manifest import (
    CHANNEL_SCHEMA,
    CHANNEL_SCHEMA_V2,
    MAX_POINTER_COUNTER,
    ChannelPointer,
)
from edgefleet.kernel.contracts.rollout import RolloutStage
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.signatures import key_id, sign

DEFAULT_VALIDITY = timedelta(days=14)
"""How long a signed pointer stays valid; the `resign-channels` deployment renews it well before."""


def next_counter(previous: ChannelPointer | None, now: datetime) -> int:
    """The counter of the next pointer: above the previous one, and at least the time in milliseconds, so a
    channel deleted and re-created still counts up. `previous` must be a pointer that verified: the counter of
    one that did not is never a base (`edgefleet.flows.trust.pointer_readback`).

    Raises:
        VerificationError: the next counter would pass the contract's maximum (never reused or clamped: devices
            refuse a reused counter, so that would freeze the channel).
    """
    floor = previous.counter if previous is not None and previous.counter is not None else 0
    counter = max(floor + 1, int(now.timestamp() * 1000))
    if counter > MAX_POINTER_COUNTER:
        raise VerificationError(
            f"channel {previous.channel if previous else '?'} of model {previous.model if previous else '?'}: the "
            f"next counter would be {counter}, above the contract's maximum {MAX_POINTER_COUNTER}",
            "a verified pointer this high was signed by mistake or with a stolen key: rotate the release key and "
            "re-enrol the devices' channel records (remove models/<model>/.channel.json after checking)",
        )
    return counter


def sign_pointer(
    private_key: Ed25519PrivateKey,
    *,
    model: str,
    channel: str,
    version: str,
    manifest_sha256: str,
    previous: ChannelPointer | None,
    downgrade: bool = False,
    validity: timedelta = DEFAULT_VALIDITY,
    updated_by: str | None = None,
    now: datetime | None = None,
    moved_at: datetime | None = None,
    rollout: RolloutStage | None = None,
) -> ChannelPointer:
    """A schema 2 pointer signed with the release key, its counter above `previous`'s; schema 3 when it carries
    a staged `rollout` (a plain pointer stays schema 2, readable by agents that predate schema 3).

    `moved_at` (its `updated_at`, default now) is when the channel was moved to this version: re-signing keeps
    the move's time, so a device that activated something newer since still knows a re-signed downgrade is old.
    """
    now = now or datetime.now(timezone.utc)
    unsigned = ChannelPointer.model_construct(
        schema_=CHANNEL_SCHEMA if rollout is not None else CHANNEL_SCHEMA_V2,
        model=model,
        channel=channel,
        version=version,
        manifest_sha256=manifest_sha256,
        updated_at=moved_at or now,
        updated_by=updated_by,
        counter=next_counter(previous, now),
        expires_at=now + validity,
        downgrade=downgrade,
        key_id=key_id(private_key.public_key()),
        signature=None,
        rollout=rollout,
    )
    signature = base64.b64encode(sign(private_key, unsigned.signed_bytes())).decode()
    fields = unsigned.model_dump(by_alias=True) | {"signature": signature}
    return ChannelPointer.model_validate(fields)
