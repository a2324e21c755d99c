"""Rotating the release key in three steps, none of which stops a device (TUF's root rotation cut down).

1. **add** the new public key to the keyring everywhere: the operator's keyring directory (`edgefleet keys add`),
   the devices (`deploy-agent` with `public_key:` naming that directory installs it as `keys/release.d/`), and
   the pipelines' `public_key` settings (a keyring directory is accepted wherever a key file is);
2. **re-sign** what is in use with the new key (`resign_in_use`, `edgefleet keys resign`): every channel pointer
   that verifies with the keyring is signed again by the new key (a new counter, the same version, manifest,
   downgrade flag and move time), and the manifest each one names gets the new key's signature beside the old
   one (`manifest.sig` revision 2: the manifest keeps its bytes, so its sha256, which pointers and devices
   name, does not change); the agent's channels and manifests the same way (`agent-manifest.sig` revision 2);
3. **retire** the old key (`retirement_blockers`, `edgefleet keys retire`): refused while a channel pointer or a
   manifest it names verifies with that key only; then its file leaves the keyring and deploy-agent removes it
   from the devices. From then on nothing signed by it verifies anywhere.

A device that meets a signature by a key it does not hold yet never records a refusal (`UnknownKeyError`): it
keeps running what it runs and tries again when its keyring changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.device.registry.object_keys import checked_version_prefix
from edgefleet.device.trust.version_bundle import check_manifest_signatures
from edgefleet.flows.registry.base import RegistryWriter
from edgefleet.flows.trust.agent_key_rotation import agent_blockers, agent_channels, resign_agent_channel
from edgefleet.flows.trust.pointer_readback import VERIFIED
from edgefleet.flows.trust.pointer_signing import DEFAULT_VALIDITY
from edgefleet.kernel.contracts.agent_release import AGENT_PREFIX
from edgefleet.kernel.errors import ConfigError, EdgefleetError, VerificationError
from edgefleet.kernel.fsutil import atomic_write_bytes
from edgefleet.kernel.trust.release_keyring import (
    KEY_FILE_SUFFIX,
    Keyring,
    full_key_id,
    key_file_name,
    load_keyring,
)
from edgefleet.kernel.trust.signatures import (
    KEY_ID_HEX_CHARS,
    KeyedSignature,
    encode_signatures,
    key_id,
    public_key_from_bytes,
    sign,
)

log = logging.getLogger(__name__)

RING_DIR_MODE = 0o755
KEY_FILE_MODE = 0o644


@dataclass(frozen=True)
class ChannelRotation:
    """What re-signing did to one channel (and the manifest it names)."""

    model: str
    channel: str
    outcome: str
    """resigned | current (already signed by the new key) | failed"""
    detail: str = ""


# --- the keyring directory (step 1 and 3) ---------------------------------------------------------------


def add_key(ring_dir: Path, public_key_file: Path) -> Path:
    """Copies a release public key into the keyring directory as `<key id>.pub` (the directory is created 0755).

    Raises:
        ConfigError: the file is a private key, or not an Ed25519 public key.
    """
    data = public_key_file.read_bytes()
    if b"PRIVATE KEY" in data:
        raise ConfigError(f"{public_key_file} holds a PRIVATE key: a keyring holds public keys only",
                          "give the public key file (the .pub beside the signing key)")
    try:
        key = public_key_from_bytes(data, source=str(public_key_file))
    except VerificationError as error:
        raise ConfigError(error.message, error.fix) from error
    ring_dir.mkdir(mode=RING_DIR_MODE, parents=True, exist_ok=True)
    target = ring_dir / key_file_name(key)
    atomic_write_bytes(target, data if data.endswith(b"\n") else data + b"\n", mode=KEY_FILE_MODE)
    return target


def retire_key_file(ring_dir: Path, retired_id: str) -> Path:
    """Removes the key `retired_id` names from the keyring directory (refused when it is the last key).

    Raises:
        ConfigError: no such key in the directory, or it is the only one.
    """
    ring = load_keyring(ring_dir)
    key = ring.find(retired_id)
    if key is None:
        raise ConfigError(f"{ring.describe()} holds no key {retired_id}", "`edgefleet keys list RING` shows its keys")
    if len(ring.keys) == 1:
        raise ConfigError(f"key {retired_id} is the only key of {ring_dir}: retiring it would trust nothing",
                          "add the new key first (edgefleet keys add), re-sign (edgefleet keys resign), then retire")
    path = ring_dir / key_file_name(key)
    path.unlink()
    return path


def remaining(ring: Keyring, retired_id: str) -> Keyring:
    """The keyring without the key `retired_id` names (pure)."""
    gone = ring.find(retired_id)
    kept = tuple((full, key) for full, key in ring.keys if key is not gone)
    return Keyring(kept, f"{ring.source} without {retired_id}")


# --- step 2: re-sign what is in use -----------------------------------------------------------------------


def resign_in_use(registry: RegistryWriter, ring: Keyring, signing_key: Ed25519PrivateKey, *,
                  validity: timedelta = DEFAULT_VALIDITY, by: str | None = None) -> list[ChannelRotation]:
    """Re-signs every channel pointer that verifies with `ring` by `signing_key`, and adds its signature to the
    manifest each names; the same for the agent's channels (`agent/channels/`, reported as model "agent":
    `edgefleet.flows.trust.agent_key_rotation`). One channel's failure is reported and the others go on.

    Raises:
        ConfigError: the new key is not in `ring` (add it everywhere first: devices would not trust it).
    """
    new_id = key_id(signing_key.public_key())
    if ring.find(new_id) is None:
        raise ConfigError(f"the signing key {new_id} is not in {ring.describe()}",
                          "step 1 first: edgefleet keys add RING NEW.pub, and deploy-agent the keyring to the "
                          "devices; then re-sign")
    results = []
    for model in registry.list_models():
        for channel in registry.list_channels(model):
            try:
                results.append(_resign_channel(registry, ring, signing_key, model, channel, validity, by))
            except EdgefleetError as error:
                results.append(ChannelRotation(model, channel, "failed", error.message))
    for channel in agent_channels(registry):  # the agent's own releases (`agent/channels/`), model "agent"
        try:
            outcome, detail = resign_agent_channel(registry, ring, signing_key, channel, validity=validity, by=by)
        except EdgefleetError as error:
            outcome, detail = "failed", error.message
        results.append(ChannelRotation(AGENT_PREFIX, channel, outcome, detail))
    return results


def _resign_channel(registry: RegistryWriter, ring: Keyring, signing_key: Ed25519PrivateKey, model: str,
                    channel: str, validity: timedelta, by: str | None) -> ChannelRotation:
    new_id = key_id(signing_key.public_key())
    checked = registry.read_channel_checked(model, channel, ring)
    pointer = checked.verified
    if pointer is None:
        return ChannelRotation(model, channel, "failed",
                               f"not re-signed: {checked.source} {checked.problem or 'is absent'}")
    added = add_manifest_signature(registry, model, pointer.version, ring, signing_key)
    if pointer.key_id == new_id:
        return ChannelRotation(model, channel, "current", f"{pointer.version} already signed by {new_id}"
                               + ("; manifest signature added" if added else ""))
    resigned = registry.resign_channel(model, channel, signing_key, validity=validity, by=by, trusted=ring)
    return ChannelRotation(model, channel, "resigned",
                           f"{resigned.version}: key {pointer.key_id} -> {new_id}, counter {resigned.counter}")


def add_manifest_signature(registry: RegistryWriter, model: str, version: str, ring: Keyring,
                           signing_key: Ed25519PrivateKey) -> bool:
    """Adds `signing_key`'s signature to a published manifest that verifies with `ring` (compare-and-swap on
    `manifest.sig`; the manifest's bytes never change). Returns False when it already carries one.

    Raises:
        VerificationError: the manifest does not verify with the keyring (never signed again).
        ConflictError: `manifest.sig` changed meanwhile (run again).
    """
    new_id = key_id(signing_key.public_key())
    _, generation = registry.read_signature_file(model, version)
    signed = registry.read_manifest(model, version)
    existing = signed.signature if isinstance(signed.signature, tuple) else (KeyedSignature(None, signed.signature),)
    what = f"manifest {registry.describe(checked_version_prefix(model, version))}"
    keyed = []
    for one in existing:  # name every signature's key (revision 1 names none), keeping only those that verify
        try:
            signer = check_manifest_signatures(signed.raw, (one,), ring, what=what)
        except VerificationError:
            continue
        keyed.append(KeyedSignature(one.key_id or signer, one.signature))
    if not keyed:
        check_manifest_signatures(signed.raw, existing, ring, what=what)  # raises, naming why
    if any(one.key_id is not None and one.key_id[:KEY_ID_HEX_CHARS] == new_id for one in keyed):
        return False
    keyed.append(KeyedSignature(new_id, sign(signing_key, signed.raw)))
    registry.write_signature_file(model, version, encode_signatures(keyed), generation)
    log.info("added the signature of key %s to %s", new_id, what)
    return True


# --- step 3: may the old key go? --------------------------------------------------------------------------


def retirement_blockers(registry: RegistryWriter, ring: Keyring, retired_id: str) -> list[str]:
    """What would stop verifying if `retired_id` left the keyring: channel pointers (models' and the agent's) that
    do not verify with the other keys, and manifests (models' and agent manifests) named by channels that carry no
    signature of another key. Empty: safe to retire."""
    rest = remaining(ring, retired_id)
    blockers = []
    for model in registry.list_models():
        for channel in registry.list_channels(model):
            checked = registry.read_channel_checked(model, channel, rest)
            if checked.trust != VERIFIED or checked.pointer is None:
                blockers.append(f"{model}/{channel}: {checked.problem or checked.trust}")
                continue
            signed = registry.read_manifest(model, checked.pointer.version)
            try:
                check_manifest_signatures(signed.raw, signed.signature, rest, what=f"{model} {signed.manifest.version}")
            except VerificationError as error:
                blockers.append(f"{model}/{channel} names {signed.manifest.version}: {error.message}")
    return blockers + agent_blockers(registry, rest)


def describe_ring_files(ring_dir: Path) -> list[tuple[str, str]]:
    """(file, key id or problem) for each `.pub` file of a keyring directory, for `edgefleet keys list`."""
    rows = []
    for path in sorted(ring_dir.glob(f"*{KEY_FILE_SUFFIX}")):
        try:
            key = public_key_from_bytes(path.read_bytes(), source=str(path))
        except (VerificationError, OSError) as error:
            rows.append((path.name, f"not a public key: {getattr(error, 'message', error)}"))
            continue
        ok = path.name == key_file_name(key)
        rows.append((path.name, full_key_id(key)[:KEY_ID_HEX_CHARS] + ("" if ok else "  (MISNAMED: not trusted)")))
    return rows
