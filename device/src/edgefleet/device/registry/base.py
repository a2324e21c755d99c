"""The registry reader: what a device needs from a model registry, shared by the local and the GCS backend.

Layout (both backends, keys relative to the registry root):

    models/<model>/<version>/{model_cpu.tflite, model_edgetpu.tflite?, labels.txt,
                              manifest.json, manifest.sig}
    models/<model>/channels/<channel>.json        a ChannelPointer, changed only by compare-and-swap
    rollouts/<id>.json                            rollout records (`read_json`; written by the pipelines)
    fleet/devices/<device_id>.json                device public keys, signed (`edgefleet.kernel.contracts.devicekey`)
    fleet/revoked/<key_id>.json                   revoked device keys, signed

What a reader relies on (the writer, `edgefleet.flows.registry`, keeps it):

- Versions are immutable, and a version exists once its `manifest.json` exists (written last), so a partial
  publish is never a valid version. Objects larger than a manifest or a signature can be are refused unread.
- Channel pointers and JSON records are read with their *generation*: an opaque integer, compare it only for
  equality; 0 means "the object does not exist". GCS uses the object generation; the local backend a token
  derived from the file content. A writer passes it back to change the object by compare-and-swap.

Open a reader with `open_registry_reader(uri)` (`edgefleet.device.registry.uri`).
"""

from __future__ import annotations

import json
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgefleet.device.registry.object_keys import (
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    checked_channel_key,
    checked_name,
    checked_record_key,
    checked_version_prefix,
)
from edgefleet.device.trust.version_bundle import (
    SIGNED_FILES,
    SignedManifest,
    check_version_files,
    parse_manifest,
    verify_version_dir,
)
from edgefleet.kernel.contracts.layout import (
    CHANNELS_DIR,
    MANIFEST_FILE,
    MODELS_PREFIX,
    SIGNATURE_FILE,
    is_version,
    version_sort_key,
)
from edgefleet.kernel.contracts.manifest import ChannelPointer, Manifest
from edgefleet.kernel.errors import RegistryError, VerificationError
from edgefleet.kernel.trust.signatures import PublicKeyLike, decode_signatures


class RegistryOptions(BaseModel):
    """Tunables shared by the registry backends."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_timeout_s: float = Field(default=30.0, gt=0, description="one GCS request")
    retry_deadline_s: float = Field(default=60.0, gt=0, description="GCS retries of transient errors")
    promote_attempts: int = Field(default=5, ge=1, description="compare-and-swap rounds in promote()")
    lock_timeout_s: float = Field(default=30.0, gt=0, description="local registry lock wait")


class ChannelState(NamedTuple):
    """A channel pointer as read, with the generation to pass to `set_channel`."""

    pointer: ChannelPointer | None
    generation: int
    """Opaque compare-and-swap token; 0 when the channel does not exist yet."""


class JsonRecord(NamedTuple):
    """A JSON object as read, with its generation (0: absent, then `value` is None)."""

    value: Any
    generation: int


class RegistryReader(ABC):
    """A model registry, read: signed versions, channel pointers and JSON records.

    Open one with `open_registry_reader("gs://bucket/prefix" | "/some/dir" | "file:///some/dir")`.
    """

    options: RegistryOptions

    # --- what each backend implements -------------------------------------------------------------

    @property
    @abstractmethod
    def uri(self) -> str:
        """The registry's URI (gs://bucket/prefix or file:///dir)."""

    @abstractmethod
    def describe(self, key: str) -> str:
        """The full URI or path of a key, for messages."""

    @abstractmethod
    def _list_keys(self, prefix: str) -> list[str]:
        """Keys under `prefix` (a key prefix ending in "/"), relative to the registry root."""

    @abstractmethod
    def _read_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""

    @abstractmethod
    def _read_versioned(self, key: str) -> tuple[bytes | None, int]:
        """(bytes, generation) read consistently; (None, 0) when absent."""

    @abstractmethod
    def _download(self, key: str, dest: Path, max_bytes: int | None = None) -> None:
        """Copies one object to a local file (RegistryError when missing).

        With `max_bytes`, an object larger than that is refused before it is downloaded (VerificationError).
        """

    @abstractmethod
    def _read_bounded(self, key: str, max_bytes: int) -> bytes | None:
        """The object's bytes (None when absent); an object over `max_bytes` is refused unread."""

    # --- versions ------------------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        """Models with at least one published version, sorted."""
        models: set[str] = set()
        for key in self._list_keys(f"{MODELS_PREFIX}/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == MANIFEST_FILE and is_version(parts[2]):
                models.add(parts[1])
        return sorted(models)

    def list_versions(self, model: str) -> list[str]:
        """Published versions of `model` (manifest and signature present), oldest first (semver order)."""
        prefix = f"{MODELS_PREFIX}/{checked_name('model', model)}/"
        files: dict[str, set[str]] = {}
        for key in self._list_keys(prefix):
            parts = key[len(prefix) :].split("/")
            if len(parts) == 2 and is_version(parts[0]):
                files.setdefault(parts[0], set()).add(parts[1])
        return sorted(
            (version for version, names in files.items() if SIGNED_FILES <= names), key=version_sort_key
        )

    def read_manifest(self, model: str, version: str) -> SignedManifest:
        """Reads a published version's manifest bytes and signature (the signature is NOT checked here).

        Returns:
            (manifest, raw bytes of manifest.json, raw signature); `.manifest_sha256` is what channel
            pointers name.

        Raises:
            RegistryError: the version is not published.
            VerificationError: manifest.json or manifest.sig is malformed.
        """
        prefix = checked_version_prefix(model, version)
        raw = self._read_bounded(f"{prefix}/{MANIFEST_FILE}", MAX_MANIFEST_BYTES)
        signature_text = self._read_bounded(f"{prefix}/{SIGNATURE_FILE}", MAX_SIGNATURE_BYTES)
        if raw is None or signature_text is None:
            raise RegistryError(
                f"version {version} of model {model} is not published in {self.uri} "
                f"(no {MANIFEST_FILE if raw is None else SIGNATURE_FILE} at {self.describe(prefix)})",
                f"published versions: {', '.join(self.list_versions(model)) or 'none'}; publish it first "
                "(edgefleet release)",
            )
        signature = decode_signatures(signature_text, source=self.describe(f"{prefix}/{SIGNATURE_FILE}"))
        manifest = parse_manifest(raw, source=self.describe(f"{prefix}/{MANIFEST_FILE}"))
        if manifest.model != model or manifest.version != version:
            raise VerificationError(
                f"{self.describe(prefix)} holds a manifest for {manifest.model} {manifest.version}",
                "the registry object was copied or replaced by hand: re-publish the version",
            )
        return SignedManifest(manifest, raw, signature)

    def download_version(self, model: str, version: str, dest_dir: str | os.PathLike[str]) -> Manifest:
        """Downloads a published version into `dest_dir` (created; must be empty) and checks every file.

        Each file's size and sha256 are checked against the manifest; the signature is NOT checked (the
        registry holds no key): verify with `verify_version_dir(dest_dir, public_key)` or install it into a
        `ModelStore`, which does.

        Raises:
            RegistryError: the version or one of its files is missing.
            VerificationError: a downloaded file differs from the manifest (names the registry object).
        """
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise RegistryError(f"download destination {dest} is not empty", "download into a new directory")
        signed = self.read_manifest(model, version)
        prefix = checked_version_prefix(model, version)
        for entry in signed.manifest.files:
            self._download(f"{prefix}/{entry.name}", dest / entry.name, entry.size)
        (dest / MANIFEST_FILE).write_bytes(signed.raw)
        signature_text = self._read_bounded(f"{prefix}/{SIGNATURE_FILE}", MAX_SIGNATURE_BYTES)
        (dest / SIGNATURE_FILE).write_bytes(signature_text or b"")
        try:
            check_version_files(dest, signed.manifest)
        except VerificationError as error:
            raise VerificationError(
                f"{error.message} (downloaded from {self.describe(prefix)})",
                "the registry copy is damaged or was tampered with: re-publish the version from the release "
                "output and check who can write to the registry",
            ) from error
        return signed.manifest

    def verify_version(self, model: str, version: str, public_key: PublicKeyLike) -> Manifest:
        """Downloads a version into a temp directory and verifies signature and files against the key.

        Raises:
            VerificationError: naming what failed.
        """
        with tempfile.TemporaryDirectory(prefix="edgefleet-verify-") as temp:
            self.download_version(model, version, temp)
            return verify_version_dir(temp, public_key, model=model, version=version)

    # --- channels ------------------------------------------------------------------------------------

    def read_channel(self, model: str, channel: str) -> ChannelState:
        """Reads a channel pointer and its generation ((None, 0) when the channel does not exist).

        Conditional: a pointer whose tag (`_version_tag`) did not change since this reader last read it is not
        read again, so an idle poll costs one small request. Its content is judged again every time.

        Raises:
            RegistryError: the pointer object is not a valid pointer for this model/channel.
        """
        key = checked_channel_key(model, channel)
        tag = self._version_tag(key)
        cache: dict[str, tuple[str, ChannelState]] = vars(self).setdefault("_channel_cache", {})
        if tag is not None and key in cache and cache[key][0] == tag:
            return cache[key][1]  # unchanged since the last read: one small request (GCS metadata, a local stat)
        state = self._parse_channel(key, model, channel)
        if tag is not None:
            cache[key] = (tag, state)
        return state

    def _version_tag(self, key: str) -> str | None:
        """A cheap tag of an object's current content (an ETag: GCS's generation, a local file's inode, size and
        times), None when absent or when the backend has none. Equal tags mean unchanged content."""
        return None

    def _parse_channel(self, key: str, model: str, channel: str) -> ChannelState:
        data, generation = self._read_versioned(key)
        if data is None:
            return ChannelState(None, 0)
        try:
            pointer = ChannelPointer.model_validate_json(data)
        except ValidationError as error:
            raise RegistryError(
                f"channel pointer {self.describe(key)} is not a valid pointer ({error.errors()[0]['msg']})",
                f"promote a version again to rewrite it: edgefleet registry promote {model} "
                f"VERSION --channel {channel} --replace-unverified",
            ) from error
        if pointer.model != model or pointer.channel != channel:
            raise RegistryError(
                f"channel pointer {self.describe(key)} is for {pointer.model}/{pointer.channel}",
                f"promote a version again to rewrite it: edgefleet registry promote {model} "
                f"VERSION --channel {channel} --replace-unverified",
            )
        return ChannelState(pointer, generation)

    def list_channels(self, model: str) -> list[str]:
        """Channel names of `model`, sorted."""
        prefix = f"{MODELS_PREFIX}/{checked_name('model', model)}/{CHANNELS_DIR}/"
        return sorted(
            key[len(prefix) : -len(".json")]
            for key in self._list_keys(prefix)
            if key.endswith(".json") and "/" not in key[len(prefix) :]
        )

    # --- JSON records (rollouts) ----------------------------------------------------------------------

    # --- JSON records (rollouts, fleet keys) --------------------------------------------------------

    def get_json(self, key: str) -> Any:
        """The JSON record at `key`, or None when it does not exist."""
        return self.read_json(key).value

    def read_json(self, key: str) -> JsonRecord:
        """The JSON record at `key` with its generation (for `put_json(..., expected_generation=)`)."""
        key = checked_record_key(key)
        data, generation = self._read_versioned(key)
        if data is None:
            return JsonRecord(None, 0)
        try:
            return JsonRecord(json.loads(data), generation)
        except ValueError as error:
            raise RegistryError(
                f"{self.describe(key)} is not valid JSON ({error})",
                "rewrite the record (put_json) or delete it",
            ) from error

    def get_json_bounded(self, key: str, max_bytes: int) -> Any:
        """The JSON record at `key` (None when it does not exist), refused unread when over `max_bytes`
        (VerificationError): for records anyone with write access could make huge (device key records)."""
        key = checked_record_key(key)
        data = self._read_bounded(key, max_bytes)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError as error:
            raise RegistryError(f"{self.describe(key)} is not valid JSON ({error})",
                                "rewrite the record (put_json) or delete it") from error

    def read_object(self, key: str, max_bytes: int) -> bytes | None:
        """Any object's bytes outside `models/` (None when absent), refused unread over `max_bytes`
        (VerificationError): the agent's own releases (`agent/<version>/...`)."""
        return self._read_bounded(checked_record_key(key), max_bytes)

    def download_object(self, key: str, dest: Path, max_bytes: int) -> None:
        """Copies an object outside `models/` to `dest` (RegistryError when missing; VerificationError over
        `max_bytes`)."""
        self._download(checked_record_key(key), dest, max_bytes)

    def list_json(self, prefix: str) -> list[str]:
        """Keys of the JSON records under `prefix` (e.g. "rollouts/"), sorted."""
        prefix = prefix if prefix.endswith("/") else f"{prefix}/"
        checked_record_key(f"{prefix}x")
        return sorted(key for key in self._list_keys(prefix) if key.endswith(".json"))

    def list_json_tagged(self, prefix: str) -> dict[str, str | None]:
        """`list_json` with a tag of each record's current content, sorted by key: equal tags mean unchanged
        content, so a reader that keeps what it read re-reads only the records whose tag changed (the monitor's
        device keys). GCS: the object generation, from the listing itself (no request per record); local: the
        file's stat. None: no usable tag (a file changed a moment ago), read the record."""
        prefix = prefix if prefix.endswith("/") else f"{prefix}/"
        checked_record_key(f"{prefix}x")
        return {key: tag for key, tag in sorted(self._list_tagged(prefix).items()) if key.endswith(".json")}

    def _list_tagged(self, prefix: str) -> dict[str, str | None]:
        """Keys under `prefix` with their `_version_tag` (a backend whose listing carries one overrides this)."""
        return {key: self._version_tag(key) for key in self._list_keys(prefix)}
