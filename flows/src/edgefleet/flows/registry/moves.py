"""The decisions of a channel move, pure: is the promotion already done, did the channel move under us, is it a
downgrade, may a pointer be re-signed. `edgefleet.flows.registry.channels` reads and writes around them.

Every function here takes what was read (the pointer a move builds on, the checked channel) and returns the
decision or raises the error that refuses the move; none reads or writes a registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from edgefleet.flows.trust.pointer_readback import UNSIGNED, CheckedChannel, untrusted_error
from edgefleet.kernel.contracts.layout import version_sort_key
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.rollout import SHARE_BP_FULL
from edgefleet.kernel.errors import ConflictError, VerificationError


@dataclass(frozen=True)
class Move:
    """One promotion: point `channel` of `model` at `version` (its manifest `manifest_sha256`)."""

    model: str
    version: str
    channel: str
    manifest_sha256: str
    signed: bool
    """Written as a signed pointer (with the release key): only a signed pointer counts as the move done."""
    downgrade: bool = False
    by: str | None = None


class Seen(NamedTuple):
    """A channel as a move builds on it: the pointer to trust (None: absent or replaced) and its generation."""

    pointer: ChannelPointer | None
    generation: int


def already_done(pointer: ChannelPointer | None, move: Move) -> ChannelPointer | None:
    """`pointer` when it already names the move's version and manifest for every device (signed, when the move
    is), else None. A staged rollout below 100 % names it for a share of the fleet only: promoting it is a move."""
    if (
        pointer is not None
        and pointer.version == move.version
        and pointer.manifest_sha256 == move.manifest_sha256
        and (pointer.signed or not move.signed)
        and (pointer.rollout is None or pointer.rollout.share_bp >= SHARE_BP_FULL)
    ):
        return pointer
    return None


def settled_or_moved(move: Move, pointer: ChannelPointer | None, expected: str | None, uri: str) -> ChannelPointer:
    """The channel does not name `expected`: the pointer when it already is the move done, else the move is
    refused (somebody else moved the channel).

    Raises:
        ConflictError: the channel names another version than `expected` and not the move's.
    """
    if done := already_done(pointer, move):
        return done
    raise moved_error(move, expected, pointer, uri)


def after_lost_swap(
    move: Move, pointer: ChannelPointer | None, baseline: str | None, uri: str
) -> ChannelPointer | None:
    """After a lost compare-and-swap, given the channel read again: the pointer when somebody did the same move,
    None to retry (the channel still names `baseline`, e.g. only re-stamped).

    Raises:
        ConflictError: somebody moved the channel to another version meanwhile (never silently overridden).
    """
    if done := already_done(pointer, move):
        return done
    if (pointer.version if pointer else None) == baseline:
        return None
    raise moved_error(move, baseline, pointer, uri)


def refuse_downgrade(move: Move, pointer: ChannelPointer | None) -> None:
    """Refuses a move to a lower version than the channel names, unless the move is a deliberate downgrade.

    A signed move compares with a signed pointer only: an unsigned one may be anybody's (devices keep their own
    floor), and must not talk the operator into signing a downgrade.

    Raises:
        ConflictError: the version is lower than the channel's and the move is not marked a downgrade.
    """
    floor = pointer if pointer is not None and (pointer.signed or not move.signed) else None
    if floor is None or move.downgrade or version_sort_key(move.version) >= version_sort_key(floor.version):
        return
    raise ConflictError(
        f"channel {move.channel} of model {move.model} names {floor.version}; {move.version} is lower, and devices "
        "refuse a lower version unless the signed pointer marks a deliberate downgrade",
        "promote it as a downgrade (edgefleet registry promote ... --downgrade, or downgrade: true)",
    )


def moved_error(move: Move, expected: str | None, pointer: ChannelPointer | None, uri: str) -> ConflictError:
    """The error of a channel somebody else moved while `move` was being made."""
    now = pointer.version if pointer else "nothing"
    who = f" by {pointer.updated_by}" if pointer and pointer.updated_by else ""
    return ConflictError(
        f"channel {move.channel} of model {move.model} in {uri} names {now}{who}, not {expected or 'nothing'} as "
        f"expected: somebody else changed it while {move.version} was being promoted",
        f"check the channel (edgefleet registry show {move.model} ...) and promote {move.version} again if still "
        "wanted",
    )


def resignable(checked: CheckedChannel) -> ChannelPointer:
    """The pointer re-signing may renew: one whose own signature verifies (a channel that exists).

    Raises:
        VerificationError: the pointer is unsigned (converting it is its own act), forged or invalid: a tampered
            or anybody's pointer is never laundered into a freshly signed one.
    """
    if checked.trust == UNSIGNED:
        raise VerificationError(
            f"channel pointer {checked.source} is not signed (schema 1): re-signing renews only pointers "
            "that verify, and an unsigned one may be anybody's",
            f"after checking what it names, convert it explicitly (edgefleet registry convert-unsigned "
            f"{checked.model} --channel {checked.channel}), or promote the version it should name with the "
            "release key",
        )
    if checked.verified is None:
        raise untrusted_error(checked, "re-signing")
    return checked.verified
