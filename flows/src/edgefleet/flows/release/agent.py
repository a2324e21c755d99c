"""Publishing the agent itself (issue 23, item 4): its wheel and hashed locks as a signed `agent` release, moved
by a signed channel pointer, so devices behind NAT upgrade by pulling (`edgefleet.device.selfupdate`).

`publish_agent` writes `agent/<version>/` (contract: `edgefleet.kernel.contracts.agent_release`): the wheel, the
locks of `flows/locks/` (the same hashed locks deploy-agent installs), then the signature, then the manifest (the
commit point); each object create-only, so a published release never changes. `promote_agent` signs the channel
pointer with the release key (`edgefleet.flows.trust.pointer_signing.sign_pointer`, the models' signing) over the
manifest's sha256, compare-and-swap on the pointer's generation; a move to a lower version needs `downgrade`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from edgefleet.device.trust.pointers import verify_pointer
from edgefleet.flows.registry.base import RegistryWriter
from edgefleet.flows.trust.pointer_signing import DEFAULT_VALIDITY, sign_pointer
from edgefleet.kernel.contracts.agent_release import (
    AGENT_MANIFEST_FILE,
    AGENT_POINTER_MODEL,
    AGENT_SIGNATURE_FILE,
    LOCK_EXTRA,
    MAX_AGENT_MANIFEST_BYTES,
    AgentManifest,
    agent_channel_key,
    agent_file_key,
    manifest_signed_bytes,
    sha256_hex,
)
from edgefleet.kernel.contracts.layout import version_sort_key
from edgefleet.kernel.contracts.manifest import ChannelPointer, FileEntry
from edgefleet.kernel.errors import ConflictError, EdgefleetError, VerificationError
from edgefleet.kernel.trust.signatures import encode_signature, key_id, sign


class AgentPublished(NamedTuple):
    version: str
    manifest_sha256: str
    created: bool


def _entry(path: Path) -> FileEntry:
    data = path.read_bytes()
    return FileEntry(name=path.name, sha256=sha256_hex(data), size=len(data))


def build_manifest(wheel: Path, locks: list[Path], version: str, *, signing_key: Ed25519PrivateKey,
                   source_commit: str | None = None) -> tuple[bytes, bytes]:
    """(manifest bytes, signature file bytes) of an agent release.

    Raises:
        ValueError: the wheel name does not match the version, or no lock.
    """
    if not locks:
        raise ValueError("an agent release needs the hashed locks (flows/src/edgefleet/flows/locks/device-py*.txt)")
    manifest = AgentManifest(version=version, wheel=_entry(wheel), locks=tuple(_entry(lock) for lock in locks),
                             source_commit=source_commit, signing_key_id=key_id(signing_key.public_key()))
    data = manifest.to_json_bytes()
    return data, encode_signature(sign(signing_key, manifest_signed_bytes(data)))


def _create(registry: RegistryWriter, key: str, data: bytes) -> bool:
    """Writes `key` unless it exists with the same bytes (False); ConflictError when it exists with others."""
    existing = registry.read_object(key, max(len(data), 1) * 2 + 1024)
    if existing is not None:
        if existing != data:
            raise ConflictError(f"{registry.describe(key)} exists with other content: agent releases never change",
                                "publish a new version")
        return False
    registry._write_versioned(key, data, 0)  # noqa: SLF001 - create-only: the registry's own primitive
    return True


def publish_agent(registry: RegistryWriter, wheel: Path, version: str, *, signing_key: Ed25519PrivateKey,
                  locks: list[Path] | None = None, source_commit: str | None = None) -> AgentPublished:
    """Publishes `agent/<version>/` (files, signature, manifest last); idempotent for the same content.

    Raises:
        ConflictError: the version is published with other content.
    """
    if locks is None:
        from edgefleet.flows.deploy_agent.locks import locks_dir  # tomllib: not on the devices' Python 3.9

        locks = sorted(locks_dir().glob(f"{LOCK_EXTRA}-py*.txt"))
    lock_files = locks
    manifest, signature = build_manifest(wheel, lock_files, version, signing_key=signing_key,
                                         source_commit=source_commit)
    manifest_key = agent_file_key(version, AGENT_MANIFEST_FILE)
    published = registry.read_object(manifest_key, MAX_AGENT_MANIFEST_BYTES)
    if published is not None:
        old = AgentManifest.model_validate_json(published)
        new = AgentManifest.model_validate_json(manifest)
        if (old.wheel, old.locks) != (new.wheel, new.locks):
            raise ConflictError(f"agent {version} is published with other content ({registry.describe(manifest_key)})",
                                "publish a new version")
        return AgentPublished(version, sha256_hex(published), created=False)
    for path in [wheel, *lock_files]:
        _create(registry, agent_file_key(version, path.name), path.read_bytes())
    _create(registry, agent_file_key(version, AGENT_SIGNATURE_FILE), signature)
    _create(registry, manifest_key, manifest)
    return AgentPublished(version, sha256_hex(manifest), created=True)


def current_pointer(registry: RegistryWriter, channel: str,
                    release_key: Ed25519PrivateKey) -> tuple[ChannelPointer | None, int]:
    """The channel's pointer if it verifies with the release key (None: none, or one that does not: never a
    base for the next counter), and its generation."""
    record = registry.read_json(agent_channel_key(channel))
    if record.value is None:
        return None, record.generation
    try:
        pointer = ChannelPointer.model_validate(record.value)
        verify_pointer(release_key.public_key(), pointer, source=registry.describe(agent_channel_key(channel)))
    except (ValidationError, VerificationError):
        return None, record.generation
    return (pointer if pointer.model == AGENT_POINTER_MODEL else None), record.generation


def promote_agent(registry: RegistryWriter, version: str, channel: str, *, signing_key: Ed25519PrivateKey,
                  by: str | None = None, downgrade: bool = False, validity: timedelta = DEFAULT_VALIDITY,
                  now: datetime | None = None) -> ChannelPointer:
    """Points `agent/channels/<channel>.json` at a published agent version (signed with the release key).

    Raises:
        EdgefleetError: the version is not published; a lower version without `downgrade`.
        ConflictError: the pointer changed meanwhile.
    """
    manifest = registry.read_object(agent_file_key(version, AGENT_MANIFEST_FILE), MAX_AGENT_MANIFEST_BYTES)
    if manifest is None:
        raise EdgefleetError(f"agent {version} is not published in {registry.uri}",
                             "publish it first (edgefleet.flows.release.agent.publish_agent)")
    previous, generation = current_pointer(registry, channel, signing_key)
    if (previous is not None and not downgrade
            and version_sort_key(version) < version_sort_key(previous.version)):
        raise EdgefleetError(f"agent channel {channel} names {previous.version}; {version} is lower",
                             "pass downgrade to move devices back on purpose")
    pointer = sign_pointer(signing_key, model=AGENT_POINTER_MODEL, channel=channel, version=version,
                           manifest_sha256=sha256_hex(manifest), previous=previous, downgrade=downgrade,
                           validity=validity, updated_by=by, now=now or datetime.now(timezone.utc))
    registry.put_json(agent_channel_key(channel), pointer, expected_generation=generation)
    return pointer
