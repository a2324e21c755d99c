"""Where a pipeline's private key comes from: a Prefect Secret block, a key file, or a local development key.

One loader for every private key the pipelines hold (the release signing key, the fleet enrolment key), so
each is found, refused and reported the same way; a `KeyRole` names the key and its settings in errors.
With nothing configured, a development key pair is made once at the role's development path (0600, its
public key beside it as `<file>.pub`), and never for a `gs://` registry unless explicitly allowed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.kernel.errors import ConfigError
from edgefleet.kernel.trust.signatures import (
    generate_keypair,
    key_id,
    load_private_key,
    save_private_key,
    save_public_key,
)

log = logging.getLogger(__name__)

PUBLIC_KEY_SUFFIX = ".pub"


class KeyRole(NamedTuple):
    """Which key is loaded, as errors and logs name it."""

    name: str
    """e.g. "release signing key"."""
    setting: str
    """the parameters' section, e.g. "signing" (signing.secret_block, signing.key_file, ...)."""
    flag: str
    """the command-line option naming a key file, e.g. "--signing-key"."""
    purpose: str
    """what the key signs, for the Ed25519 fix text, e.g. "release manifests"."""


class KeySource(NamedTuple):
    """The settings of one key, as every key's parameters spell them."""

    secret_block: str | None
    key_file: str | None
    dev_key_file: str
    allow_development_key: bool


class SigningKey(NamedTuple):
    """A loaded signing key and how to name it in the report."""

    private_key: Ed25519PrivateKey
    description: str
    generated: bool
    development: bool = False
    """The local development key (manifests say so; agents can refuse them; refused for gs:// registries
    unless the role's `allow_development_key`)."""


def expand(path: str) -> Path:
    """`~` and environment variables expanded: how every path parameter is read."""
    return Path(os.path.expandvars(path)).expanduser()


def public_key_path(private_key_file: Path) -> Path:
    """Where the public key of a key file lives: `<file>.pub`."""
    return private_key_file.with_name(private_key_file.name + PUBLIC_KEY_SUFFIX)


def load_key(source: KeySource, role: KeyRole, *, registry_uri: str | None = None, create: bool = True) -> SigningKey:
    """Loads the configured key, creating the development key when nothing is configured.

    Args:
        source: where the key is.
        role: which key, for errors and logs.
        registry_uri: the registry the key signs for: the development key is refused for a `gs://` registry
            unless `source.allow_development_key`.
        create: create the development key when missing (a key that only re-signs what exists must not be new:
            nothing would trust it).

    Raises:
        ConfigError: the Secret block is missing or holds no Ed25519 key; the development key is refused
            or missing.
        VerificationError: the key file is missing or not an Ed25519 PEM key.
    """
    if source.secret_block:
        key = private_key_from_secret_block(source.secret_block, role)
        return SigningKey(key, f"Prefect Secret block {source.secret_block!r} (key id {key_id(key.public_key())})",
                          False)
    if source.key_file:
        path = expand(source.key_file)
        key = load_private_key(path)
        return SigningKey(key, f"key file {path} (key id {key_id(key.public_key())})", False)
    return _development_key(source, role, registry_uri=registry_uri, create=create)


def _development_key(source: KeySource, role: KeyRole, *, registry_uri: str | None, create: bool) -> SigningKey:
    path = expand(source.dev_key_file)
    if registry_uri is not None and registry_uri.startswith("gs://") and not source.allow_development_key:
        raise ConfigError(
            f"no {role.name} is configured for the cloud registry {registry_uri}, and the development key "
            f"({path}) is not used for cloud registries",
            f"set {role.setting}.secret_block (a Prefect Secret block holding the {role.name}) or "
            f"{role.setting}.key_file; or, for a test bucket only, {role.setting}.allow_development_key: true",
        )
    generated = not path.exists()
    if generated and not create:
        raise ConfigError(
            f"no {role.name} is configured and there is no development key at {path}",
            f"name the {role.name} ({role.setting}.secret_block or {role.setting}.key_file; on the command "
            f"line {role.flag} FILE)",
        )
    if generated:
        private_key, public_key = generate_keypair()
        save_private_key(private_key, path)
        save_public_key(public_key, public_key_path(path))
        log.warning("No %s configured: created a DEVELOPMENT key pair at %s (public key %s); use "
                    "%s.secret_block in production.", role.name, path, public_key_path(path), role.setting)
    key = load_private_key(path)
    note = "created now" if generated else "existing"
    return SigningKey(
        key,
        f"DEVELOPMENT key {path} ({note}; public key {public_key_path(path)}, key id {key_id(key.public_key())})",
        generated,
        development=True,
    )


def private_key_from_secret_block(name: str, role: KeyRole) -> Ed25519PrivateKey:
    """The Ed25519 private key a Prefect Secret block holds (unencrypted PKCS#8 PEM).

    Raises:
        ConfigError: the block cannot be loaded, or holds no Ed25519 PEM key.
    """
    from prefect.blocks.system import Secret

    try:
        block = Secret.load(name)
    except ValueError as error:
        raise ConfigError(
            f"Prefect Secret block {name!r} cannot be loaded ({error})",
            f"create it (prefect block create secret, name {name}) holding the Ed25519 PEM private key of the "
            f"{role.name}, or set {role.setting}.key_file instead",
        ) from error
    if not isinstance(block, Secret):  # Prefect's load answers a caller inside an event loop with a coroutine
        block.close()
        raise ConfigError(f"Prefect Secret block {name!r} was asked for from inside an event loop",
                          "load the signing key from synchronous code (the flows here are synchronous)")
    pem = block.get()
    try:
        key = serialization.load_pem_private_key(str(pem).encode(), password=None)
    except (ValueError, TypeError) as error:
        raise ConfigError(
            f"Prefect Secret block {name!r} does not hold a PEM private key ({error})",
            f"store the unencrypted PKCS#8 PEM of the Ed25519 {role.name} in it",
        ) from error
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"Prefect Secret block {name!r} holds a {type(key).__name__}, not an Ed25519 key",
            f"{role.purpose} are signed with Ed25519: store an Ed25519 key",
        )
    return key
