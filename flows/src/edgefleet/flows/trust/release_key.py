"""The release signing key: from a Prefect Secret block, a key file, or a local development key.

With no key configured, a development key pair is created once at `signing.dev_key_file` (and its public key
beside it, `.pub`), and the release says so: devices must be given that public key, and production releases
should use a real key kept in a Prefect Secret block.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.flows.trust.keysource import (
    PUBLIC_KEY_SUFFIX,
    KeyRole,
    KeySource,
    SigningKey,
    load_key,
    public_key_path,
)
from edgefleet.flows.trust.signing_params import SigningParams

__all__ = ["PUBLIC_KEY_SUFFIX", "RELEASE_KEY", "SigningKey", "channel_signing_key", "public_key_path",
           "resolve_signing_key"]

RELEASE_KEY = KeyRole(name="release signing key", setting="signing", flag="--signing-key",
                      purpose="release manifests")


def resolve_signing_key(
    params: SigningParams, *, registry_uri: str | None = None, create: bool = True
) -> SigningKey:
    """Loads the configured release signing key, creating the development key when nothing is configured
    (a release does; channel moves and re-signing do not: a fresh key would sign pointers no device trusts).
    See `edgefleet.flows.trust.keysource.load_key`."""
    source = KeySource(params.secret_block, params.key_file, params.dev_key_file, params.allow_development_key)
    return load_key(source, RELEASE_KEY, registry_uri=registry_uri, create=create)


def channel_signing_key(params: SigningParams, registry_uri: str) -> Ed25519PrivateKey:
    """The release key for moving or re-signing channels of `registry_uri` (never creates a key)."""
    return resolve_signing_key(params, registry_uri=registry_uri, create=False).private_key
