"""Rotating the release key over the agent's own releases (`edgefleet.flows.trust.key_rotation` calls these for
`edgefleet keys resign|retire`).

What is in use: every `agent/channels/<channel>.json` pointer and the agent manifest each names. Re-signing one
adds the new key's signature to `agent/<version>/agent-manifest.sig` (revision 2: one `<key id> <base64>` line
per key, compare-and-swap on the file; the manifest keeps its bytes, so the sha256 the pointer names stays), then
signs the pointer again with the new key (a new counter; the same version, manifest, downgrade flag, move time and
staged rollout block). Only what verifies with the keyring is ever re-signed: a tampered pointer or manifest is
reported, never laundered.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from edgefleet.device.registry.object_keys import checked_record_key
from edgefleet.device.trust.agent_signatures import check_agent_signatures, keyed_agent_signatures
from edgefleet.device.trust.pointers import verify_pointer
from edgefleet.flows.registry.base import RegistryWriter
from edgefleet.flows.trust.pointer_signing import sign_pointer
from edgefleet.kernel.contracts.agent_release import (
    AGENT_MANIFEST_FILE,
    AGENT_POINTER_MODEL,
    AGENT_PREFIX,
    AGENT_SIGNATURE_FILE,
    MAX_AGENT_MANIFEST_BYTES,
    agent_channel_key,
    agent_file_key,
    manifest_signed_bytes,
)
from edgefleet.kernel.contracts.layout import CHANNELS_DIR
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import EdgefleetError, RegistryError, VerificationError
from edgefleet.kernel.trust.release_keyring import Keyring
from edgefleet.kernel.trust.signatures import KEY_ID_HEX_CHARS, KeyedSignature, encode_signatures, key_id, sign

REPUBLISH_FIX = "find out who changed it; promote a good agent release again (edgefleet registry agent promote)"


def agent_channels(registry: RegistryWriter) -> list[str]:
    """The agent channels of the registry (`agent/channels/<channel>.json`), sorted."""
    prefix = f"{AGENT_PREFIX}/{CHANNELS_DIR}/"
    names = (key[len(prefix):-len(".json")] for key in registry.list_json(prefix))
    return sorted(name for name in names if "/" not in name)


def verified_agent_pointer(registry: RegistryWriter, ring: Keyring, channel: str) -> tuple[ChannelPointer, int]:
    """The agent channel's pointer, verified with `ring`, and its generation.

    Raises:
        RegistryError: no such channel.
        VerificationError: not a signed agent pointer that a key of `ring` verifies (UnknownKeyError: signed by a
            key the ring does not hold).
    """
    key = agent_channel_key(channel)
    record = registry.read_json(key)
    if record.value is None:
        raise RegistryError(f"agent channel {registry.describe(key)} does not exist", "list agent/channels/")
    try:
        pointer = ChannelPointer.model_validate(record.value)
    except ValidationError as error:
        raise VerificationError(f"{registry.describe(key)} is not a channel pointer ({error.errors()[0]['msg']})",
                                REPUBLISH_FIX) from error
    if pointer.model != AGENT_POINTER_MODEL or pointer.channel != channel:
        raise VerificationError(f"{registry.describe(key)} names {pointer.model}/{pointer.channel}", REPUBLISH_FIX)
    verify_pointer(ring, pointer, source=registry.describe(key))
    return pointer, record.generation


def _signed_manifest(registry: RegistryWriter, pointer: ChannelPointer) -> tuple[bytes, bytes, int]:
    """(manifest bytes, signature file bytes, its generation) of the agent release the pointer names.

    Raises:
        VerificationError: the manifest is missing or not the one the pointer names.
    """
    manifest_key = agent_file_key(pointer.version, AGENT_MANIFEST_FILE)
    data = registry.read_object(manifest_key, MAX_AGENT_MANIFEST_BYTES)
    if data is None or hashlib.sha256(data).hexdigest() != pointer.manifest_sha256:
        raise VerificationError(f"{registry.describe(manifest_key)} is "
                                f"{'missing' if data is None else 'not the manifest the pointer names'}",
                                REPUBLISH_FIX)
    signature_key = checked_record_key(agent_file_key(pointer.version, AGENT_SIGNATURE_FILE))
    signature, generation = registry._read_versioned(signature_key)  # noqa: SLF001 - compare-and-swap read
    return data, signature or b"", generation


def add_agent_manifest_signature(registry: RegistryWriter, pointer: ChannelPointer, ring: Keyring,
                                 signing_key: Ed25519PrivateKey) -> bool:
    """Adds `signing_key`'s signature to the agent manifest the pointer names, keeping the signatures that verify
    with `ring` (each now named by its key id). False when it already carries one.

    Raises:
        VerificationError: the manifest does not verify with the keyring (never signed again).
        ConflictError: `agent-manifest.sig` changed meanwhile (run again).
    """
    data, signature_file, generation = _signed_manifest(registry, pointer)
    what = f"agent manifest {registry.describe(agent_file_key(pointer.version, AGENT_MANIFEST_FILE))}"
    existing = keyed_agent_signatures(data, signature_file, source=f"{what} signature")
    keyed = []
    for one in existing:  # keep only the signatures that verify, each named by its key
        try:
            signer = check_agent_signatures(ring, data, (one,), what=what)
        except VerificationError:
            continue
        keyed.append(KeyedSignature(one.key_id or signer, one.signature))
    if not keyed:
        check_agent_signatures(ring, data, existing, what=what)  # raises, naming why
    new_id = key_id(signing_key.public_key())
    if any(one.key_id is not None and one.key_id[:KEY_ID_HEX_CHARS] == new_id for one in keyed):
        return False
    keyed.append(KeyedSignature(new_id, sign(signing_key, manifest_signed_bytes(data))))
    signature_key = checked_record_key(agent_file_key(pointer.version, AGENT_SIGNATURE_FILE))
    registry._write_versioned(signature_key, encode_signatures(keyed), generation)  # noqa: SLF001
    return True


def resign_agent_channel(registry: RegistryWriter, ring: Keyring, signing_key: Ed25519PrivateKey, channel: str, *,
                         validity: timedelta, by: str | None) -> tuple[str, str]:
    """Re-signs one agent channel and the manifest it names; (outcome, detail): resigned | current.

    Raises:
        EdgefleetError: it does not verify with the keyring, or it changed meanwhile.
    """
    new_id = key_id(signing_key.public_key())
    pointer, generation = verified_agent_pointer(registry, ring, channel)
    added = add_agent_manifest_signature(registry, pointer, ring, signing_key)
    if pointer.key_id == new_id:
        return "current", (f"agent {pointer.version} already signed by {new_id}"
                           + ("; manifest signature added" if added else ""))
    resigned = sign_pointer(signing_key, model=AGENT_POINTER_MODEL, channel=channel, version=pointer.version,
                            manifest_sha256=pointer.manifest_sha256, previous=pointer, downgrade=pointer.downgrade,
                            validity=validity, updated_by=by or pointer.updated_by, moved_at=pointer.updated_at,
                            rollout=pointer.rollout)
    registry.put_json(agent_channel_key(channel), resigned, expected_generation=generation)
    return "resigned", f"agent {resigned.version}: key {pointer.key_id} -> {new_id}, counter {resigned.counter}"


def agent_blockers(registry: RegistryWriter, rest: Keyring) -> list[str]:
    """What of the agent's releases in use would stop verifying with `rest` (the ring without the retired key):
    `agent/<channel>: why` for each such channel pointer or the manifest it names."""
    blockers = []
    for channel in agent_channels(registry):
        try:
            pointer, _ = verified_agent_pointer(registry, rest, channel)
            data, signature_file, _ = _signed_manifest(registry, pointer)
            what = f"agent manifest {pointer.version}"
            check_agent_signatures(rest, data, keyed_agent_signatures(data, signature_file, source=what), what=what)
        except EdgefleetError as error:
            blockers.append(f"{AGENT_PREFIX}/{channel}: {error.message}")
    return blockers
