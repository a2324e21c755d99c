"""The registry writer: what the pipelines do to a model registry, on top of what a device reads.

Rules every backend keeps (the layout is in `edgefleet.device.registry.base`):

- Versions are immutable. Publishing the same content again is a no-op; different content under an
  existing version is refused with ConflictError. A version exists once its `manifest.json` exists, and that
  is written last (after the files and `manifest.sig`), so a partial publish is never a valid version; a
  failed publish removes what it uploaded.
- Uploads are verified (GCS: crc32c and md5 of each object against the local file; local: sha256 of the
  copy) before the version is committed.
- Channel pointers and JSON records change by compare-and-swap on the *generation* a read returned (0: the
  object must not exist). GCS uses the object generation (`if_generation_match`); the local backend a token
  derived from the file content, checked under a lock file and replaced by atomic rename. A lost race raises
  ConflictError.

Open a writer with `open_registry_writer(uri)` (`edgefleet.flows.registry.uri`).
"""

from __future__ import annotations

import json
import logging
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel

from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.registry.object_keys import checked_channel_key, checked_record_key, checked_version_prefix
from edgefleet.device.trust.version_bundle import (
    SignedManifest,
    check_manifest_consistency,
    check_version_files,
    read_signed_manifest,
    verify_version_dir,
)
from edgefleet.flows.registry import channels
from edgefleet.flows.trust.pointer_readback import CheckedChannel, check_pointer
from edgefleet.kernel.contracts.layout import MANIFEST_FILE, SIGNATURE_FILE
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import ConflictError, RegistryError, VerificationError
from edgefleet.kernel.trust.release_keyring import KeyringLike
from edgefleet.kernel.trust.signatures import KeyedSignature, PublicKeyLike, decode_signatures

log = logging.getLogger(__name__)


class PublishResult(NamedTuple):
    """What `publish_version` did."""

    model: str
    version: str
    uri: str
    """Where the version lives (gs://... or a directory)."""
    manifest_sha256: str
    created: bool
    """False when the identical version was already there (nothing uploaded)."""



class RegistryWriter(RegistryReader):
    """A model registry, written: publishes immutable signed versions, moves channels, writes JSON records.

    Every writer is also a reader (`edgefleet.device.registry.base.RegistryReader`) and the `ChannelStore` that
    channel moves (`edgefleet.flows.registry.channels`) read and write.
    """

    # --- versions ------------------------------------------------------------------------------------

    def publish_version(
        self,
        model: str,
        version: str,
        local_dir: str | os.PathLike[str],
        *,
        public_key: PublicKeyLike | None = None,
    ) -> PublishResult:
        """Uploads a signed version directory as `models/<model>/<version>/` (immutable).

        Only the files the manifest lists plus `manifest.json` / `manifest.sig` are uploaded, the manifest
        last. The local directory is checked first (manifest names this model/version, every file matches
        its entry; the signature too when `public_key` is given).

        Returns:
            created=False when the identical version is already published (a no-op).

        Raises:
            ConflictError: the version exists with different content (or a concurrent publish of different
                content won).
            VerificationError: the local directory does not match its manifest / signature.
            RegistryError: the registry is unreachable or missing (the bucket; the directory).
        """
        local_dir = Path(local_dir)
        signed, names = self._prepare_publish(model, version, local_dir, public_key)
        prefix = checked_version_prefix(model, version)
        result = PublishResult(model, version, self.describe(prefix), signed.manifest_sha256, created=True)
        if self._existing_version(model, version, signed):
            log.info("%s %s is already published in %s (identical)", model, version, self.uri)
            return result._replace(created=False)
        return self._upload_version(prefix, local_dir, signed, names, result)

    # --- a version's signatures (release key rotation, `edgefleet.flows.trust.key_rotation`) -----------

    def read_signature_file(self, model: str, version: str) -> tuple[bytes | None, int]:
        """A published version's `manifest.sig` and its compare-and-swap generation ((None, 0): absent)."""
        return self._read_versioned(f"{checked_version_prefix(model, version)}/{SIGNATURE_FILE}")

    def write_signature_file(self, model: str, version: str, data: bytes, expected_generation: int) -> int:
        """Replaces a published version's `manifest.sig` if it is still `expected_generation` (ConflictError
        otherwise). Only signatures change: the manifest and files of a version never do."""
        return self._write_versioned(f"{checked_version_prefix(model, version)}/{SIGNATURE_FILE}", data,
                                     expected_generation)

    # --- what each backend implements -------------------------------------------------------------

    @abstractmethod
    def _upload_version(
        self, prefix: str, local_dir: Path, signed: SignedManifest, names: list[str], result: PublishResult
    ) -> PublishResult:
        """Uploads a checked version that is not published yet under `prefix`: the files `names`, then
        `manifest.sig`, then `manifest.json` (the commit point); removes what it uploaded when it fails.

        Returns `result`, with created=False when an identical concurrent publish committed first.
        """

    @abstractmethod
    def _write_versioned(self, key: str, data: bytes, expected_generation: int | None) -> int:
        """Writes `data` if the generation is still `expected_generation` (None: unconditionally).

        Returns the new generation; raises ConflictError when the object changed.
        """

    # --- channels and JSON records --------------------------------------------------------------------

    # The channel moves are `edgefleet.flows.registry.channels`' functions, this writer as their store (one
    # signature, one docstring: see there for the arguments, the retry rule and the errors).
    promote = channels.promote
    resign_channel = channels.resign_channel

    def read_channel_checked(self, model: str, channel: str, public_key: KeyringLike) -> CheckedChannel:
        """Reads a channel pointer and judges it against the release public key (`flows.registry.trusted`):
        what the pipelines use before a pointer is the base of anything. Never raises for the pointer's content.
        """
        key = checked_channel_key(model, channel)
        data, generation = self._read_versioned(key)
        return check_pointer(data, generation, public_key, model=model, channel=channel, source=self.describe(key))

    def set_channel(self, model: str, channel: str, pointer: ChannelPointer, expected_generation: int) -> int:
        """Writes a channel pointer if nobody changed it since it was read (compare-and-swap).

        Args:
            model, channel: which pointer.
            pointer: the new content (its model/channel must match).
            expected_generation: the generation from `read_channel`; 0 = the channel must not exist yet.

        Returns:
            The new generation.

        Raises:
            ConflictError: the pointer changed since `expected_generation` (somebody else won).
        """
        if pointer.model != model or pointer.channel != channel:
            raise RegistryError(
                f"pointer is for {pointer.model}/{pointer.channel}, not {model}/{channel}",
                "build the ChannelPointer with the same model and channel",
            )
        key = checked_channel_key(model, channel)
        return self._write_versioned(key, pointer.to_json_bytes(), expected_generation)

    def put_json(self, key: str, obj: Any, *, expected_generation: int | None = None) -> int:
        """Writes a JSON record (e.g. `rollouts/<id>.json`, see `rollout_key`).

        Args:
            key: a relative key outside `models/` (versions and channels have their own methods).
            obj: JSON-serialisable value or a pydantic model.
            expected_generation: compare-and-swap like `set_channel` (0 = must not exist); None writes
                unconditionally.

        Returns:
            The new generation.

        Raises:
            ConflictError: the record changed since `expected_generation`.
        """
        key = checked_record_key(key)
        if isinstance(obj, BaseModel):
            obj = obj.model_dump(mode="json", by_alias=True)
        data = json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n"
        return self._write_versioned(key, data, expected_generation)

    # --- helpers for backends -------------------------------------------------------------------------

    def _prepare_publish(
        self, model: str, version: str, local_dir: Path, public_key: PublicKeyLike | None
    ) -> tuple[SignedManifest, list[str]]:
        """Checks a local version directory before publishing; returns it and the file names to upload."""
        checked_version_prefix(model, version)
        if public_key is not None:
            verify_version_dir(local_dir, public_key, model=model, version=version)
        signed = read_signed_manifest(local_dir)
        if signed.manifest.model != model or signed.manifest.version != version:
            raise VerificationError(
                f"{local_dir} holds {signed.manifest.model} {signed.manifest.version}, not {model} {version}",
                "publish the directory under the model and version its manifest names",
            )
        check_manifest_consistency(signed.manifest, str(local_dir))
        check_version_files(local_dir, signed.manifest)
        return signed, [entry.name for entry in signed.manifest.files]

    def _existing_version(self, model: str, version: str, signed: SignedManifest) -> bool:
        """True when the identical version is published; ConflictError when a different one is."""
        prefix = checked_version_prefix(model, version)
        raw = self._read_bytes(f"{prefix}/{MANIFEST_FILE}")
        if raw is None:
            return False
        signature_text = self._read_bytes(f"{prefix}/{SIGNATURE_FILE}") or b""
        try:
            ours = signed.signature
            mine = {keyed.signature for keyed in ((KeyedSignature(None, ours),) if isinstance(ours, bytes) else ours)}
            # the same release, maybe re-signed since with a newer key (`edgefleet keys resign` adds a line)
            same_signature = bool(mine & {keyed.signature for keyed in decode_signatures(signature_text)})
        except VerificationError:
            same_signature = False
        if raw == signed.raw and same_signature:
            return True
        existing = self.list_versions(model)
        raise ConflictError(
            f"version {version} of model {model} already exists in {self.uri} with different content "
            f"(manifest {self.describe(prefix + '/' + MANIFEST_FILE)})",
            "versions are immutable: publish under a new version"
            + (f" (latest is {existing[-1]})" if existing else ""),
        )
