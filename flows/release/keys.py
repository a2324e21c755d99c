"""The release signing key: from a Prefect Secret block, a key file, or a local development key.

With no key configured, a development key pair is created once at `signing.dev_key_file` (and its public key
beside it, `.pub`), and the release says so: devices must be given that public key, and production releases
should use a real key kept in a Prefect Secret block.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.flows.release.params import SigningParams, expand
from edgefleet.kernel.errors import ConfigError
from edgefleet.kernel.signing import (
    generate_keypair,
    key_id,
    load_private_key,
    save_private_key,
    save_public_key,
)

log = logging.getLogger(__name__)

PUBLIC_KEY_SUFFIX = ".pub"


class SigningKey(NamedTuple):
    """A loaded signing key and how to name it in the report."""

    private_key: Ed25519PrivateKey
    description: str
    generated: bool
    development: bool = False
    """The local development key (manifests say so; agents can refuse them; refused for gs:// registries
    unless `signing.allow_development_key`)."""


def public_key_path(private_key_file: Path) -> Path:
    """Where the public key of a key file lives: `<file>.pub`."""
    return private_key_file.with_name(private_key_file.name + PUBLIC_KEY_SUFFIX)


def _from_secret_block(name: str) -> Ed25519PrivateKey:
    from prefect.blocks.system import Secret

    try:
        pem = Secret.load(name).get()
    except ValueError as error:
        raise ConfigError(
            f"Prefect Secret block {name!r} cannot be loaded ({error})",
            f"create it (prefect block create secret, name {name}) holding the Ed25519 PEM private "
            "key, or set signing.key_file instead",
        ) from error
    try:
        key = serialization.load_pem_private_key(str(pem).encode(), password=None)
    except (ValueError, TypeError) as error:
        raise ConfigError(
            f"Prefect Secret block {name!r} does not hold a PEM private key ({error})",
            "store the unencrypted PKCS#8 PEM of the Ed25519 release key in it",
        ) from error
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"Prefect Secret block {name!r} holds a {type(key).__name__}, not an Ed25519 key",
            "release manifests are signed with Ed25519: store an Ed25519 key",
        )
    return key


def resolve_signing_key(
    params: SigningParams, *, registry_uri: str | None = None, create: bool = True
) -> SigningKey:
    """Loads the configured signing key, creating the development key when nothing is configured.

    Args:
        params: where the key is.
        registry_uri: the registry the key signs for: the development key is refused for a `gs://` registry
            unless `params.allow_development_key`.
        create: create the development key when missing (a release does; channel moves and re-signing do
            not: a fresh key would sign pointers no device trusts).

    Raises:
        ConfigError: the Secret block is missing or holds no Ed25519 key; the development key is refused
            or missing.
        VerificationError: the key file is missing or not an Ed25519 PEM key.
    """
    if params.secret_block:
        key = _from_secret_block(params.secret_block)
        return SigningKey(
            key, f"Prefect Secret block {params.secret_block!r} (key id {key_id(key.public_key())})", False
        )
    if params.key_file:
        path = expand(params.key_file)
        key = load_private_key(path)
        return SigningKey(key, f"key file {path} (key id {key_id(key.public_key())})", False)
    path = expand(params.dev_key_file)
    if registry_uri is not None and registry_uri.startswith("gs://") and not params.allow_development_key:
        raise ConfigError(
            f"no signing key is configured for the cloud registry {registry_uri}, and the development key "
            f"({path}) is not used for cloud registries",
            "set signing.secret_block (a Prefect Secret block holding the release key) or signing.key_file; "
            "or, for a test bucket only, signing.allow_development_key: true",
        )
    generated = not path.exists()
    if generated and not create:
        raise ConfigError(
            f"no signing key is configured and there is no development key at {path}",
            "name the release signing key (signing.secret_block or signing.key_file; on the command line "
            "--signing-key FILE)",
        )
    if generated:
        private_key, public_key = generate_keypair()
        save_private_key(private_key, path)
        save_public_key(public_key, public_key_path(path))
        log.warning(
            "No signing key configured: created a DEVELOPMENT key pair at %s (public key %s). Give "
            "devices that public key; use signing.secret_block for production releases.",
            path,
            public_key_path(path),
        )
    key = load_private_key(path)
    note = "created now" if generated else "existing"
    return SigningKey(
        key,
        f"DEVELOPMENT key {path} ({note}; public key {public_key_path(path)}, key id "
        f"{key_id(key.public_key())})",
        generated,
        development=True,
    )


def channel_signing_key(params: SigningParams, registry_uri: str) -> Ed25519PrivateKey:
    """The release key for moving or re-signing channels of `registry_uri` (never creates a key)."""
    return resolve_signing_key(params, registry_uri=registry_uri, create=False).private_key
