"""Converting an unsigned (schema 1) channel pointer into a signed one: an explicit act, never a side effect.

An unsigned pointer may have been written by anybody who can write the bucket. Signing it as it is would vouch
for the writer's choice with the release key, so conversion is separate from re-signing
(`edgefleet registry convert-unsigned`, never the scheduled `resign-channels`), shows what it will sign
(model, channel, version, manifest sha256, and which signed pointers named that version before), and refuses
a version no signed pointer ever named (`edgefleet.flows.registry.history`): for that, the operator names the
version with `edgefleet registry promote`. The plan is computed first (`plan_conversion`, read-only) and carried
out by compare-and-swap on exactly what was shown (`convert_unsigned`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.flows.registry import RegistryWriter
from edgefleet.flows.registry.channels import verified_pointed_manifest
from edgefleet.flows.registry.history import record_signed, signed_pointers
from edgefleet.flows.trust.pointer_readback import ABSENT, UNSIGNED, VERIFIED, untrusted_error
from edgefleet.flows.trust.pointer_signing import sign_pointer
from edgefleet.kernel.contracts.layout import version_sort_key
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import ConflictError, RegistryError, VerificationError


@dataclass(frozen=True)
class Conversion:
    """What converting one unsigned pointer will sign, and the signed pointers that named that version before."""

    model: str
    channel: str
    version: str
    manifest_sha256: str
    source: str
    generation: int
    named_before: tuple[ChannelPointer, ...]
    highest_on_channel: ChannelPointer | None = None
    """The signed pointer of this channel with the highest counter seen (the new counter goes above it)."""

    def lines(self) -> list[str]:
        """What to show before signing."""
        named = ", ".join(
            f"{p.channel} (counter {p.counter}, by {p.updated_by or '-'})" for p in self.named_before
        )
        return [
            f"will sign the unsigned pointer {self.source}:",
            f"  model            {self.model}",
            f"  channel          {self.channel}",
            f"  version          {self.version}",
            f"  manifest sha256  {self.manifest_sha256}",
            f"  named before by signed pointers on: {named}",
        ]


def plan_conversion(registry: RegistryWriter, model: str, channel: str, signing_key: Ed25519PrivateKey) -> Conversion:
    """Checks an unsigned pointer can be converted and says what would be signed (reads only).

    Raises:
        RegistryError: the channel does not exist.
        ConflictError: the pointer is already signed and verifies (nothing to convert: re-sign it instead).
        VerificationError: the pointer is forged or invalid; its manifest is not the published one or does not
            verify; or no signed pointer ever named its version and manifest.
    """
    public_key = signing_key.public_key()
    checked = registry.read_channel_checked(model, channel, public_key)
    if checked.trust == ABSENT:
        raise RegistryError(f"channel {channel} of model {model} does not exist in {registry.uri}",
                            f"channels: {', '.join(registry.list_channels(model)) or 'none'}")
    if checked.trust == VERIFIED:
        raise ConflictError(f"channel pointer {checked.source} is already signed and verifies: nothing to convert",
                            f"renew it with edgefleet registry resign {model} --channel {channel}")
    if checked.trust != UNSIGNED or checked.pointer is None:
        raise untrusted_error(checked, "converting")
    pointer = checked.pointer
    verified_pointed_manifest(
        registry, pointer, public_key, source=checked.source,
        fix="find out who replaced the manifest or the pointer; promote a good version with the release key")
    on_channel = [p for p in signed_pointers(registry, model, public_key) if p.channel == channel]
    named = tuple(p for p in on_channel if (p.version, p.manifest_sha256) == (pointer.version, pointer.manifest_sha256))
    yourself = (f"if you checked that {pointer.version} is what {channel} should name, name it yourself with the "
                f"release key: edgefleet registry promote {model} {pointer.version} --channel {channel}")
    if not named:
        raise VerificationError(
            f"unsigned pointer {checked.source} names {model} {pointer.version} (manifest "
            f"{pointer.manifest_sha256}), a version no signed pointer ever named on channel {channel}: signing it "
            "would vouch for whatever the last writer of the bucket chose",
            yourself,
        )
    latest = max(on_channel, key=lambda p: p.counter or 0)
    if version_sort_key(pointer.version) < version_sort_key(latest.version):
        raise VerificationError(
            f"unsigned pointer {checked.source} names {model} {pointer.version}, lower than {latest.version} that "
            f"the last signed pointer of {channel} named: converting it would sign a downgrade as a plain move",
            yourself + " --downgrade",
        )
    return Conversion(model, channel, pointer.version, pointer.manifest_sha256, checked.source, checked.generation,
                      named, latest)


def convert_unsigned(
    registry: RegistryWriter,
    conversion: Conversion,
    signing_key: Ed25519PrivateKey,
    *,
    validity: timedelta,
    by: str,
) -> ChannelPointer:
    """Signs exactly what `conversion` showed, if the channel did not change since (compare-and-swap); the
    counter goes above every signed pointer of that channel seen before.

    Raises:
        ConflictError: the channel changed after the plan was shown.
    """
    pointer = sign_pointer(signing_key, model=conversion.model, channel=conversion.channel,
                           version=conversion.version, manifest_sha256=conversion.manifest_sha256,
                           previous=conversion.highest_on_channel, validity=validity, updated_by=by)
    registry.set_channel(conversion.model, conversion.channel, pointer, conversion.generation)
    record_signed(registry, pointer)
    return pointer
