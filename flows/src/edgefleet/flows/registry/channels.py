"""Moving channels: promote a version to a channel, re-sign a channel's pointer (compare-and-swap, signed).

A pointer is only ever written for a published version whose manifest verifies against the release key, and
a concurrent move by somebody else is never silently overridden (see `ChannelMoves.promote`).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.device.bundle import SignedManifest, verify_manifest_bytes
from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.registry.keys import checked_channel_key, checked_version_prefix
from edgefleet.flows.registry.history import record_signed
from edgefleet.flows.registry.pointers import DEFAULT_VALIDITY, sign_pointer
from edgefleet.flows.registry.trusted import ABSENT, UNSIGNED, CheckedChannel, check_pointer, untrusted_error
from edgefleet.kernel.contracts.layout import MANIFEST_FILE, version_sort_key
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.rollout import SHARE_BP_FULL
from edgefleet.kernel.errors import ConflictError, RegistryError, VerificationError
from edgefleet.kernel.keyring import KeyringLike
from edgefleet.kernel.signing import PublicKeyLike

if TYPE_CHECKING:
    from types import EllipsisType  # Python 3.10+

log = logging.getLogger(__name__)


class ChannelMoves(RegistryReader):
    """Promotion and re-signing of channel pointers, on a registry that can `set_channel`."""

    @abstractmethod
    def set_channel(self, model: str, channel: str, pointer: ChannelPointer, expected_generation: int) -> int:
        """Writes a channel pointer by compare-and-swap (see `RegistryWriter.set_channel`)."""

    @abstractmethod
    def put_json(self, key: str, obj: Any, *, expected_generation: int | None = None) -> int:
        """Writes a JSON record by compare-and-swap (see `RegistryWriter.put_json`)."""

    def promote(
        self,
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
        signed = self.read_manifest(model, version)
        if public_key is None and signing_key is not None:
            public_key = signing_key.public_key()
        if public_key is not None:
            verify_manifest_bytes(
                signed.raw,
                signed.signature,
                public_key,
                source=self.describe(f"{checked_version_prefix(model, version)}/{MANIFEST_FILE}"),
            )
        pointer_key = signing_key.public_key() if signing_key is not None else public_key
        seen = self._seen(model, channel, pointer_key, replace_unverified)
        baseline = seen.pointer.version if seen.pointer else None
        want_signed = signing_key is not None
        if expected_version is not ... and expected_version != baseline:
            if done := _naming(seen.pointer, version, signed.manifest_sha256, want_signed):
                return done
            raise _moved_error(self, model, channel, version, expected_version, seen.pointer)
        # a signed move compares with a verified pointer only: an unsigned one may be anybody's (devices keep
        # their own floor), and must not talk the operator into signing a downgrade
        floor = seen.pointer if seen.pointer is not None and (seen.pointer.signed or not want_signed) else None
        if floor is not None and not downgrade and version_sort_key(version) < version_sort_key(floor.version):
            raise ConflictError(
                f"channel {channel} of model {model} names {baseline}; {version} is lower, and devices refuse "
                "a lower version unless the signed pointer marks a deliberate downgrade",
                "promote it as a downgrade (edgefleet registry promote ... --downgrade, or downgrade: true)",
            )
        for _attempt in range(self.options.promote_attempts):
            if done := _naming(seen.pointer, version, signed.manifest_sha256, want_signed):
                return done
            if signing_key is not None:
                pointer = sign_pointer(
                    signing_key,
                    model=model,
                    channel=channel,
                    version=version,
                    manifest_sha256=signed.manifest_sha256,
                    previous=seen.pointer,
                    downgrade=downgrade,
                    validity=validity,
                    updated_by=by,
                )
            else:
                pointer = ChannelPointer(
                    model=model,
                    channel=channel,
                    version=version,
                    manifest_sha256=signed.manifest_sha256,
                    updated_by=by,
                )
            try:
                self.set_channel(model, channel, pointer, seen.generation)
            except ConflictError:
                seen = self._seen(model, channel, pointer_key, replace_unverified)
                now = seen.pointer.version if seen.pointer else None
                if done := _naming(seen.pointer, version, signed.manifest_sha256, want_signed):
                    return done
                if now != baseline:
                    raise _moved_error(self, model, channel, version, baseline, seen.pointer) from None
                log.info("channel %s/%s was re-written at %s meanwhile; retrying", model, channel, now)
                continue
            if pointer.signed:
                record_signed(self, pointer)
            log.info("promoted %s %s to channel %s (was %s)", model, version, channel, baseline)
            return pointer
        raise ConflictError(
            f"channel {channel} of model {model} kept changing; gave up after "
            f"{self.options.promote_attempts} attempts",
            "find out who else writes this channel, then promote again",
        )

    def read_channel_checked(self, model: str, channel: str, public_key: KeyringLike) -> CheckedChannel:
        """Reads a channel pointer and judges it against the release public key (`flows.registry.trusted`):
        what the pipelines use before a pointer is the base of anything. Never raises for the pointer's content.
        """
        key = checked_channel_key(model, channel)
        data, generation = self._read_versioned(key)
        return check_pointer(data, generation, public_key, model=model, channel=channel, source=self.describe(key))

    def _seen(
        self, model: str, channel: str, pointer_key: PublicKeyLike | None, replace_unverified: bool
    ) -> _Seen:
        """The channel as a move may build on: a verified (or, in the transition, unsigned) pointer; a forged or
        invalid one is an error, or, with `replace_unverified`, treated as absent (never a counter base)."""
        if pointer_key is None:  # an unsigned move with no key to check anything with (the transition)
            state = self.read_channel(model, channel)
            return _Seen(state.pointer, state.generation)
        checked = self.read_channel_checked(model, channel, pointer_key)
        if not checked.untrusted:
            return _Seen(checked.pointer, checked.generation)
        if not replace_unverified:
            raise untrusted_error(checked, "moving the channel")
        log.warning("replacing channel pointer %s, which %s", checked.source, checked.problem)
        return _Seen(None, checked.generation)

    def resign_channel(
        self,
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
        checked = self.read_channel_checked(model, channel, trusted)
        if checked.trust == ABSENT:
            raise RegistryError(
                f"channel {channel} of model {model} does not exist in {self.uri}",
                f"channels: {', '.join(self.list_channels(model)) or 'none'}",
            )
        if checked.trust == UNSIGNED:
            raise VerificationError(
                f"channel pointer {checked.source} is not signed (schema 1): re-signing renews only pointers "
                "that verify, and an unsigned one may be anybody's",
                f"after checking what it names, convert it explicitly (edgefleet registry convert-unsigned {model} "
                f"--channel {channel}), or promote the version it should name with the release key",
            )
        old = checked.verified
        if old is None:
            raise untrusted_error(checked, "re-signing")
        source = checked.source
        verified_pointed_manifest(self, old, trusted, source=source,
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
        self.set_channel(model, channel, pointer, checked.generation)
        record_signed(self, pointer)
        log.info("re-signed %s/%s (%s, counter %s)", model, channel, old.version, pointer.counter)
        return pointer


def verified_pointed_manifest(
    registry: RegistryReader, pointer: ChannelPointer, public_key: KeyringLike, *, source: str, fix: str
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


class _Seen(NamedTuple):
    """A channel as a move builds on it: the pointer to trust (None: absent or replaced) and its generation."""

    pointer: ChannelPointer | None
    generation: int


def _naming(
    pointer: ChannelPointer | None, version: str, manifest_sha256: str, signed: bool = False
) -> ChannelPointer | None:
    """`pointer` when it already names this version and manifest for every device (signed, when `signed`), else
    None. A staged rollout below 100 % names it for a share of the fleet only: promoting it is a move."""
    if (
        pointer is not None
        and pointer.version == version
        and pointer.manifest_sha256 == manifest_sha256
        and (pointer.signed or not signed)
        and (pointer.rollout is None or pointer.rollout.share_bp >= SHARE_BP_FULL)
    ):
        return pointer
    return None


def _moved_error(
    registry: RegistryReader,
    model: str,
    channel: str,
    version: str,
    expected: str | None,
    pointer: ChannelPointer | None,
) -> ConflictError:
    now = pointer.version if pointer else "nothing"
    who = f" by {pointer.updated_by}" if pointer and pointer.updated_by else ""
    return ConflictError(
        f"channel {channel} of model {model} in {registry.uri} names {now}{who}, not "
        f"{expected or 'nothing'} as "
        f"expected: somebody else changed it while {version} was being promoted",
        f"check the channel (edgefleet registry show {model} ...) and promote {version} again if still "
        "wanted",
    )
