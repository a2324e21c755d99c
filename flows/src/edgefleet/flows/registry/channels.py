"""Moving channels: promote a version to a channel, re-sign a channel's pointer (compare-and-swap, signed).

A pointer is only ever written for a published version whose manifest verifies against the release key, and
a concurrent move by somebody else is never silently overridden (see `promote`). The decisions are pure
(`edgefleet.flows.registry.moves`); this module reads and writes around them through `ChannelStore`, the storage
a move needs, which every registry writer is (`RegistryWriter.promote` and `.resign_channel` call these).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.device.registry.base import ChannelState, RegistryOptions
from edgefleet.device.registry.object_keys import checked_version_prefix
from edgefleet.device.trust.version_bundle import SignedManifest, verify_manifest_bytes
from edgefleet.flows.registry.history import record_signed
from edgefleet.flows.registry.moves import (
    Move,
    Seen,
    after_lost_swap,
    already_done,
    refuse_downgrade,
    resignable,
    settled_or_moved,
)
from edgefleet.flows.trust.pointer_readback import ABSENT, CheckedChannel, untrusted_error
from edgefleet.flows.trust.pointer_signing import DEFAULT_VALIDITY, sign_pointer
from edgefleet.kernel.contracts.layout import MANIFEST_FILE
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import ConflictError, RegistryError, VerificationError
from edgefleet.kernel.trust.release_keyring import KeyringLike
from edgefleet.kernel.trust.signatures import PublicKeyLike

if TYPE_CHECKING:
    from types import EllipsisType  # Python 3.10+

log = logging.getLogger(__name__)


class ChannelStore(Protocol):
    """The storage a channel move reads and writes (every `RegistryWriter` is one)."""

    @property
    def uri(self) -> str: ...
    @property
    def options(self) -> RegistryOptions: ...
    def describe(self, key: str) -> str: ...
    def read_manifest(self, model: str, version: str) -> SignedManifest: ...
    def list_channels(self, model: str) -> list[str]: ...
    def read_channel(self, model: str, channel: str) -> ChannelState: ...
    def read_channel_checked(self, model: str, channel: str, public_key: KeyringLike) -> CheckedChannel: ...
    def read_json(self, key: str) -> Any: ...
    def set_channel(self, model: str, channel: str, pointer: ChannelPointer, expected_generation: int) -> int: ...
    def put_json(self, key: str, obj: Any, *, expected_generation: int | None = None) -> int: ...


@dataclass(frozen=True)
class _Keys:
    """How a promotion signs and judges: the release key (None: an unsigned pointer), the key the channel's
    pointer is checked with, the signed pointer's validity, and whether an unverified pointer may be replaced."""

    signing_key: Ed25519PrivateKey | None
    pointer_key: PublicKeyLike | None
    validity: timedelta
    replace_unverified: bool


def promote(
    store: ChannelStore,
    model: str,
    version: str,
    channel: str,
    *,
    by: str | None = None,
    expected_version: str | None | EllipsisType = ...,
    public_key: PublicKeyLike | None = None,
    signing_key: Ed25519PrivateKey | None = None,
    downgrade: bool = False,
    validity: timedelta = DEFAULT_VALIDITY,
    replace_unverified: bool = False,
) -> ChannelPointer:
    """Points `channel` at a published version, with compare-and-swap and careful retries.

    The version must be published (and its signature must verify when `public_key` is given). The
    pointer names the version and the sha256 of its manifest.

    Retry rule: when the compare-and-swap loses, the channel is read again and
    - if it now names `version` (with the same manifest), somebody did the same promotion: done;
    - if it still names the version it named before (the *baseline*: `expected_version` when given,
      else what the first read found; e.g. the pointer was only re-stamped), the swap is retried, at
      most `options.promote_attempts` times;
    - otherwise somebody moved the channel to another version meanwhile: ConflictError, because
      silently overriding a concurrent promotion is exactly what the compare-and-swap prevents.

    Args:
        store: the registry written.
        model, version, channel: what to point where.
        by: who promotes (kept in the pointer's `updated_by`).
        expected_version: the version the caller believes the channel names now (None: the channel must
            not exist yet). Default: whatever it names at the first read.
        public_key: verify the manifest signature before pointing at it (default with `signing_key`: its
            public key, so a pointer never vouches for a manifest the release key did not sign).
        signing_key: the release key: writes a signed schema 2 pointer (counter above the previous one,
            expiry `validity` from now). None writes an unsigned schema 1 pointer, for fleets whose
            agents are not upgraded yet.
        downgrade: mark the pointer as a deliberate downgrade (needed to point at a lower version than
            the channel names: devices refuse a lower version otherwise).
        validity: how long the signed pointer is valid.
        replace_unverified: overwrite a pointer that does not verify against the release key (forged,
            or out of the contract's bounds); it is treated as absent: never the base of the counter,
            never taken for a done promotion. Without it, such a pointer is a VerificationError.

    The pointer read back is verified (against the signing key's public half; `public_key` for an unsigned
    move) before it is used as the baseline, the counter base or a promotion already done.

    Returns:
        The pointer now in the registry.

    Raises:
        RegistryError: the version is not published.
        VerificationError: the manifest does not verify against `public_key`; the channel's pointer does
            not verify (without `replace_unverified`).
        ConflictError: the channel moved elsewhere concurrently, or is not at `expected_version`.
    """
    if public_key is None and signing_key is not None:
        public_key = signing_key.public_key()
    signed = _release(store, model, version, public_key)
    keys = _Keys(signing_key, signing_key.public_key() if signing_key is not None else public_key, validity,
                 replace_unverified)
    move = Move(model, version, channel, signed.manifest_sha256, signed=signing_key is not None,
                downgrade=downgrade, by=by)
    seen = _seen(store, model, channel, keys)
    baseline = seen.pointer.version if seen.pointer else None
    if expected_version is not ... and expected_version != baseline:
        return settled_or_moved(move, seen.pointer, expected_version, store.uri)
    refuse_downgrade(move, seen.pointer)
    return _swap(store, move, seen, keys)


def _release(store: ChannelStore, model: str, version: str, public_key: PublicKeyLike | None) -> SignedManifest:
    """The published version's manifest, verified against `public_key` when given."""
    signed = store.read_manifest(model, version)
    if public_key is not None:
        source = store.describe(f"{checked_version_prefix(model, version)}/{MANIFEST_FILE}")
        verify_manifest_bytes(signed.raw, signed.signature, public_key, source=source)
    return signed


def _swap(store: ChannelStore, move: Move, seen: Seen, keys: _Keys) -> ChannelPointer:
    """Writes the move's pointer by compare-and-swap on `seen`, retrying per `promote`'s rule."""
    baseline = seen.pointer.version if seen.pointer else None
    for _attempt in range(store.options.promote_attempts):
        if done := already_done(seen.pointer, move):
            return done
        pointer = _pointer(move, seen.pointer, keys)
        if not _written(store, pointer, seen.generation):
            seen = _seen(store, move.model, move.channel, keys)
            if done := after_lost_swap(move, seen.pointer, baseline, store.uri):
                return done
            log.info("channel %s/%s was re-written at %s meanwhile; retrying", move.model, move.channel, baseline)
            continue
        if pointer.signed:
            record_signed(store, pointer)
        log.info("promoted %s %s to channel %s (was %s)", move.model, move.version, move.channel, baseline)
        return pointer
    raise ConflictError(
        f"channel {move.channel} of model {move.model} kept changing; gave up after "
        f"{store.options.promote_attempts} attempts",
        "find out who else writes this channel, then promote again",
    )


def _pointer(move: Move, previous: ChannelPointer | None, keys: _Keys) -> ChannelPointer:
    """The pointer the move writes over `previous`: signed with the release key, or unsigned (the transition)."""
    if keys.signing_key is None:
        return ChannelPointer(model=move.model, channel=move.channel, version=move.version,
                              manifest_sha256=move.manifest_sha256, updated_by=move.by)
    return sign_pointer(keys.signing_key, model=move.model, channel=move.channel, version=move.version,
                        manifest_sha256=move.manifest_sha256, previous=previous, downgrade=move.downgrade,
                        validity=keys.validity, updated_by=move.by)


def _written(store: ChannelStore, pointer: ChannelPointer, generation: int) -> bool:
    """Writes the pointer if the channel is still at `generation`; False when the compare-and-swap lost."""
    try:
        store.set_channel(pointer.model, pointer.channel, pointer, generation)
    except ConflictError:
        return False
    return True


def _seen(store: ChannelStore, model: str, channel: str, keys: _Keys) -> Seen:
    """The channel as a move may build on: a verified (or, in the transition, unsigned) pointer; a forged or
    invalid one is an error, or, with `replace_unverified`, treated as absent (never a counter base)."""
    if keys.pointer_key is None:  # an unsigned move with no key to check anything with (the transition)
        state = store.read_channel(model, channel)
        return Seen(state.pointer, state.generation)
    checked = store.read_channel_checked(model, channel, keys.pointer_key)
    if not checked.untrusted:
        return Seen(checked.pointer, checked.generation)
    if not keys.replace_unverified:
        raise untrusted_error(checked, "moving the channel")
    log.warning("replacing channel pointer %s, which %s", checked.source, checked.problem)
    return Seen(None, checked.generation)


def resign_channel(
    store: ChannelStore,
    model: str,
    channel: str,
    signing_key: Ed25519PrivateKey,
    *,
    validity: timedelta = DEFAULT_VALIDITY,
    by: str | None = None,
    trusted: KeyringLike | None = None,
) -> ChannelPointer:
    """Re-signs a channel pointer that verifies, with a new counter and expiry (same version, manifest,
    downgrade flag and staged rollout block).

    `trusted` is what the pointer and its manifest must verify with (default: the signing key's public half);
    while the release key is rotated, the keyring of the old and the new key (`edgefleet keys resign`).

    Only a pointer whose own signature verifies against the signing key, and whose manifest is still the
    published one and verifies, is re-signed: a tampered pointer is never laundered into a freshly signed
    one, and neither is an unsigned one (converting that is its own act: `flows.channels.convert`).

    Raises:
        RegistryError: the channel does not exist.
        VerificationError: the pointer is unsigned, forged or invalid, or its manifest does not verify.
        ConflictError: the channel changed while re-signing (the next run tries again).
    """
    trusted = trusted if trusted is not None else signing_key.public_key()
    checked = store.read_channel_checked(model, channel, trusted)
    if checked.trust == ABSENT:
        raise RegistryError(
            f"channel {channel} of model {model} does not exist in {store.uri}",
            f"channels: {', '.join(store.list_channels(model)) or 'none'}",
        )
    old = resignable(checked)
    verified_pointed_manifest(store, old, trusted, source=checked.source,
                              fix="find out who replaced the manifest; promote a good version again")
    pointer = sign_pointer(
        signing_key,
        model=model,
        channel=channel,
        version=old.version,
        manifest_sha256=old.manifest_sha256,
        previous=old,
        downgrade=old.downgrade,
        validity=validity,
        updated_by=by or old.updated_by,
        moved_at=old.updated_at,  # re-signing is not a move: a re-signed downgrade stays as old as it was
        rollout=old.rollout,  # a staged rollout stays at its share
    )
    store.set_channel(model, channel, pointer, checked.generation)
    record_signed(store, pointer)
    log.info("re-signed %s/%s (%s, counter %s)", model, channel, old.version, pointer.counter)
    return pointer


class _ManifestSource(Protocol):
    """What `verified_pointed_manifest` reads of a registry (any reader)."""

    def read_manifest(self, model: str, version: str) -> SignedManifest: ...


def verified_pointed_manifest(
    registry: _ManifestSource, pointer: ChannelPointer, public_key: KeyringLike, *, source: str, fix: str
) -> SignedManifest:
    """The manifest a pointer names, as the registry holds it: the same bytes (sha256) and signed by the key.

    Raises:
        VerificationError: the registry holds another manifest for that version, or it does not verify.
    """
    signed = registry.read_manifest(pointer.model, pointer.version)
    if signed.manifest_sha256 != pointer.manifest_sha256:
        raise VerificationError(
            f"channel pointer {source} names manifest {pointer.manifest_sha256[:16]}... of {pointer.version}, the "
            f"registry holds {signed.manifest_sha256[:16]}...",
            fix,
        )
    verify_manifest_bytes(signed.raw, signed.signature, public_key, source=source)
    return signed
