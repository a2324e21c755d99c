"""A channel pointer as the pipelines read it back: judged against the release key before it is used.

Whatever comes back from the registry was written by whoever can write the bucket. A pointer is the base of
the next counter, a "done" promotion, the version a rollout sends or the pointer a re-signing renews only when
its signature verifies against the release public key (`verified`). Anything else is named for what it is:

- `absent`: no pointer object;
- `unsigned`: a schema 1 pointer (the transition; never re-signed as is: `edgefleet registry convert-unsigned`);
- `forged`: a schema 2 pointer whose signature does not verify (tampered, or signed by another key);
- `invalid`: not a valid pointer at all (out of the contract's bounds, e.g. a counter above
  `MAX_POINTER_COUNTER` or an expiry without a timezone, or for another model/channel).

A forged or invalid pointer is replaced only by an explicit signed move (`promote(..., replace_unverified=True)`,
`edgefleet registry promote ... --replace-unverified`), whose counter comes from the clock, never from it.
Pure, apart from resolving the key; written for Python 3.9 like the rest of this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from edgefleet.device.trust.pointers import verify_pointer
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import RegistryError, VerificationError
from edgefleet.kernel.trust.release_keyring import KeyringLike, resolve_keyring

ABSENT, VERIFIED, UNSIGNED, FORGED, INVALID = "absent", "verified", "unsigned", "forged", "invalid"


@dataclass(frozen=True)
class CheckedChannel:
    """A channel pointer object as read, with the judgement of it."""

    model: str
    channel: str
    source: str
    """The pointer object's URI or path, for messages."""
    generation: int
    """The compare-and-swap token of what is in the registry (0: absent)."""
    trust: str
    """absent | verified | unsigned | forged | invalid (see the module doc)."""
    pointer: ChannelPointer | None = None
    """The pointer as parsed (None when absent or invalid); trust it only when `trust == "verified"`."""
    problem: str = ""
    """Why the object is not trusted (empty when absent or verified)."""

    @property
    def verified(self) -> ChannelPointer | None:
        """The pointer when it verified, else None."""
        return self.pointer if self.trust == VERIFIED else None

    @property
    def untrusted(self) -> bool:
        """True for a forged or invalid pointer (an unsigned one is the transition, judged by the caller)."""
        return self.trust in (FORGED, INVALID)


def check_pointer(
    data: bytes | None,
    generation: int,
    public_key: KeyringLike,
    *,
    model: str,
    channel: str,
    source: str,
) -> CheckedChannel:
    """Judges a pointer object's bytes (None: absent) against the release keyring (one key, a key file, or a
    keyring: while a key is being rotated, a pointer signed by either key verifies).

    Raises:
        ConfigError / VerificationError: the public key itself cannot be read (a setup problem, not the pointer's).
    """
    key = resolve_keyring(public_key)
    key_description = key.describe()
    base = {"model": model, "channel": channel, "source": source, "generation": generation}
    if data is None:
        return CheckedChannel(trust=ABSENT, **base)
    try:
        pointer = ChannelPointer.model_validate_json(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "pointer"
        return CheckedChannel(trust=INVALID, problem=f"is not a valid pointer ({where}: {first['msg']})", **base)
    if pointer.model != model or pointer.channel != channel:
        return CheckedChannel(
            trust=INVALID, problem=f"is a pointer for {pointer.model}/{pointer.channel}", **base
        )
    if not pointer.signed:
        return CheckedChannel(trust=UNSIGNED, pointer=pointer, problem="is not signed (schema 1)", **base)
    try:
        verify_pointer(key, pointer, source=source)
    except VerificationError:
        return CheckedChannel(
            trust=FORGED,
            pointer=pointer,
            problem=f"does not verify: its signature is not by a release key ({key_description}); it claims key "
            f"{pointer.key_id}, counter {pointer.counter}: tampered, or signed by another key",
            **base,
        )
    return CheckedChannel(trust=VERIFIED, pointer=pointer, **base)


def untrusted_error(checked: CheckedChannel, doing: str) -> VerificationError:
    """The error for building on a forged, invalid or unsigned pointer (`doing`: e.g. "moving the channel")."""
    return VerificationError(
        f"channel pointer {checked.source} {checked.problem}: {doing} refused",
        "find out who wrote it (the bucket's audit log); then replace it with a signed move naming the version "
        f"you checked: edgefleet registry promote {checked.model} VERSION --channel {checked.channel} "
        "--replace-unverified",
    )


def require_followable(checked: CheckedChannel, now: datetime) -> ChannelPointer:
    """The pointer a rollout may follow: present, verified and not expired.

    Raises:
        RegistryError: the channel does not exist.
        VerificationError: the pointer is unsigned, forged, invalid or expired (named, with the fix).
    """
    if checked.trust == ABSENT:
        raise RegistryError(
            f"channel {checked.channel} of model {checked.model} does not exist ({checked.source})",
            f"promote a version to it first: edgefleet registry promote {checked.model} VERSION --channel "
            f"{checked.channel}",
        )
    pointer = checked.verified
    if pointer is None:
        raise untrusted_error(checked, "rolling out what it names")
    if pointer.expires_at is not None and pointer.expires_at <= now:
        raise VerificationError(
            f"channel pointer {checked.source} (names {pointer.version}) expired at {pointer.expires_at.isoformat()}"
            ": devices no longer follow it, and neither does a rollout",
            f"re-sign it (edgefleet registry resign {checked.model} --channel {checked.channel}) or promote a "
            "version again",
        )
    return pointer
