"""Moving channels: promote a version to a channel, re-sign a channel's pointer (compare-and-swap, signed).

A pointer is only ever written for a published version whose manifest verifies against the release key, and
a concurrent move by somebody else is never silently overridden (see `ChannelMoves.promote`).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from datetime import timedelta
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.device.bundle import verify_manifest_bytes
from edgefleet.device.channel import verify_pointer
from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.registry.keys import checked_channel_key, checked_version_prefix
from edgefleet.flows.registry.pointers import DEFAULT_VALIDITY, sign_pointer
from edgefleet.kernel.contracts.layout import MANIFEST_FILE, version_sort_key
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import ConflictError, RegistryError, VerificationError
from edgefleet.kernel.signing import PublicKeyLike

if TYPE_CHECKING:
    from types import EllipsisType  # Python 3.10+

log = logging.getLogger(__name__)


class ChannelMoves(RegistryReader):
    """Promotion and re-signing of channel pointers, on a registry that can `set_channel`."""

    @abstractmethod
    def set_channel(self, model: str, channel: str, pointer: ChannelPointer, expected_generation: int) -> int:
        """Writes a channel pointer by compare-and-swap (see `RegistryWriter.set_channel`)."""

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

        Returns:
            The pointer now in the registry.

        Raises:
            RegistryError: the version is not published.
            VerificationError: the manifest does not verify against `public_key`.
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
        state = self.read_channel(model, channel)
        baseline = state.pointer.version if state.pointer else None
        want_signed = signing_key is not None
        if expected_version is not ... and expected_version != baseline:
            if done := _naming(state.pointer, version, signed.manifest_sha256, want_signed):
                return done
            raise _moved_error(self, model, channel, version, expected_version, state.pointer)
        if baseline is not None and not downgrade and version_sort_key(version) < version_sort_key(baseline):
            raise ConflictError(
                f"channel {channel} of model {model} names {baseline}; {version} is lower, and devices refuse "
                "a lower version unless the signed pointer marks a deliberate downgrade",
                "promote it as a downgrade (edgefleet registry promote ... --downgrade, or downgrade: true)",
            )
        for _attempt in range(self.options.promote_attempts):
            if done := _naming(state.pointer, version, signed.manifest_sha256, want_signed):
                return done
            if signing_key is not None:
                pointer = sign_pointer(
                    signing_key,
                    model=model,
                    channel=channel,
                    version=version,
                    manifest_sha256=signed.manifest_sha256,
                    previous=state.pointer,
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
                self.set_channel(model, channel, pointer, state.generation)
            except ConflictError:
                state = self.read_channel(model, channel)
                now = state.pointer.version if state.pointer else None
                if done := _naming(state.pointer, version, signed.manifest_sha256, want_signed):
                    return done
                if now != baseline:
                    raise _moved_error(self, model, channel, version, baseline, state.pointer) from None
                log.info("channel %s/%s was re-written at %s meanwhile; retrying", model, channel, now)
                continue
            log.info("promoted %s %s to channel %s (was %s)", model, version, channel, baseline)
            return pointer
        raise ConflictError(
            f"channel {channel} of model {model} kept changing; gave up after "
            f"{self.options.promote_attempts} attempts",
            "find out who else writes this channel, then promote again",
        )

    def resign_channel(
        self,
        model: str,
        channel: str,
        signing_key: Ed25519PrivateKey,
        *,
        validity: timedelta = DEFAULT_VALIDITY,
        by: str | None = None,
    ) -> ChannelPointer:
        """Re-signs a channel pointer with a new counter and expiry (same version, manifest and downgrade
        flag); turns an unsigned schema 1 pointer into a signed one.

        The pointer is re-signed only if the manifest it names is still the published one and verifies
        against the signing key, and (schema 2) its own signature verifies: a tampered pointer is never
        laundered into a freshly signed one.

        Raises:
            RegistryError: the channel does not exist.
            VerificationError: the pointer or its manifest does not verify.
            ConflictError: the channel changed while re-signing (the next run tries again).
        """
        state = self.read_channel(model, channel)
        if state.pointer is None:
            raise RegistryError(
                f"channel {channel} of model {model} does not exist in {self.uri}",
                f"channels: {', '.join(self.list_channels(model)) or 'none'}",
            )
        old = state.pointer
        source = self.describe(checked_channel_key(model, channel))
        if old.signed:
            verify_pointer(signing_key.public_key(), old, source=source)
        signed = self.read_manifest(model, old.version)
        if signed.manifest_sha256 != old.manifest_sha256:
            raise VerificationError(
                f"channel pointer {source} names manifest {old.manifest_sha256[:16]}... of {old.version}, the "
                f"registry holds {signed.manifest_sha256[:16]}...",
                "find out who replaced the manifest; promote a good version again",
            )
        verify_manifest_bytes(signed.raw, signed.signature, signing_key.public_key(), source=source)
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
        )
        self.set_channel(model, channel, pointer, state.generation)
        log.info("re-signed %s/%s (%s, counter %s)", model, channel, old.version, pointer.counter)
        return pointer


def _naming(
    pointer: ChannelPointer | None, version: str, manifest_sha256: str, signed: bool = False
) -> ChannelPointer | None:
    """`pointer` when it already names this version and manifest (signed, when `signed`), else None."""
    if (
        pointer is not None
        and pointer.version == version
        and pointer.manifest_sha256 == manifest_sha256
        and (pointer.signed or not signed)
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
