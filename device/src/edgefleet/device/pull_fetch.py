"""Pull mode's download: the version a verified pointer names, read, checked against the pointer and the release
key, downloaded into the store's staging directory, every file verified, installed (not activated). Used for a
version to activate (`edgefleet.device.pull`) and for a shadow candidate (`edgefleet.device.pull_shadow`) alike.
"""

from __future__ import annotations

from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.store import ModelStore
from edgefleet.device.trust.version_bundle import PublicKeyLike, sha256_file, verify_manifest_bytes
from edgefleet.kernel.contracts.layout import MANIFEST_FILE
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import VerificationError


def download_and_install(
    registry: RegistryReader, store: ModelStore, pointer: ChannelPointer, key: PublicKeyLike
) -> None:
    """Reads, checks and downloads the version the pointer names, and installs it (VerificationError when
    anything does not match the pointer or the key)."""
    model, version, channel = pointer.model, pointer.version, pointer.channel
    signed = registry.read_manifest(model, version)
    if signed.manifest_sha256 != pointer.manifest_sha256:
        raise VerificationError(
            f"the manifest of {model} {version} in {registry.uri} has sha256 {signed.manifest_sha256[:16]}..., "
            f"channel {channel} names {pointer.manifest_sha256[:16]}...: the manifest was replaced after promotion"
        )
    verify_manifest_bytes(signed.raw, signed.signature, key, source=f"{registry.uri} {model} {version} {MANIFEST_FILE}")
    with store.staging_dir() as staging:
        download_dir = staging / version
        registry.download_version(model, version, download_dir)
        downloaded_sha = sha256_file(download_dir / MANIFEST_FILE)
        if downloaded_sha != pointer.manifest_sha256:
            raise VerificationError(
                f"the downloaded manifest of {model} {version} has sha256 {downloaded_sha[:16]}..., channel "
                f"{channel} names {pointer.manifest_sha256[:16]}..."
            )
        store.install(download_dir, key)
