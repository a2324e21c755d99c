"""The model registry interface, shared by the local-directory and the GCS backends.

Layout (both backends, keys relative to the registry root):

    models/<model>/<version>/{model_cpu.tflite, model_edgetpu.tflite?, labels.txt,
                              manifest.json, manifest.sig}
    models/<model>/channels/<channel>.json        a ChannelPointer, changed only by compare-and-swap
    rollouts/<id>.json                            rollout records (`put_json` / `get_json`)

Rules every backend keeps:

- Versions are immutable. Publishing the same content again is a no-op; different content under an
  existing version is refused with ConflictError. A version exists once its `manifest.json` exists, and that
  is written last (after the files and `manifest.sig`), so a partial publish is never a valid version; a
  failed publish removes what it uploaded.
- Uploads are verified (GCS: crc32c and md5 of each object against the local file; local: sha256 of the
  copy) before the version is committed.
- Channel pointers and JSON records change by compare-and-swap on a *generation* token: an opaque integer,
  compare it only for equality; 0 means "the object does not exist". GCS uses the object generation
  (`if_generation_match`); the local backend a token derived from the file content, checked under a lock
  file and replaced by atomic rename. A lost race raises ConflictError.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from abc import ABC, abstractmethod
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from types import EllipsisType  # Python 3.10+

from edgefleet.device.bundle import (
    SIGNED_FILES,
    SignedManifest,
    check_manifest_consistency,
    check_version_files,
    parse_manifest,
    read_signed_manifest,
    verify_manifest_bytes,
    verify_version_dir,
)
from edgefleet.device.channel import DEFAULT_VALIDITY, sign_pointer, verify_pointer
from edgefleet.kernel.contracts.layout import (
    CHANNELS_DIR,
    MANIFEST_FILE,
    MODELS_PREFIX,
    ROLLOUTS_PREFIX,
    SIGNATURE_FILE,
    channel_key,
    check_name,
    is_version,
    version_prefix,
    version_sort_key,
)
from edgefleet.kernel.contracts.manifest import ChannelPointer, Manifest
from edgefleet.kernel.errors import ConflictError, RegistryError, VerificationError
from edgefleet.kernel.signing import PublicKeyLike, decode_signature

log = logging.getLogger(__name__)

_KEY_PART = re.compile(r"^[A-Za-z0-9._=-]+$")
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
"""A manifest larger than this is refused unread (real ones are kilobytes; golden outputs included)."""
MAX_SIGNATURE_BYTES = 1024


def too_large(what: str, size: int, max_bytes: int) -> VerificationError:
    return VerificationError(
        f"{what} is {size} bytes, more than the {max_bytes} expected: refused before downloading it",
        "the registry object was replaced (or the manifest is wrong): re-publish the version and check who can "
        "write to the registry",
    )


class RegistryOptions(BaseModel):
    """Tunables shared by the registry backends."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_timeout_s: float = Field(default=30.0, gt=0, description="one GCS request")
    retry_deadline_s: float = Field(default=60.0, gt=0, description="GCS retries of transient errors")
    promote_attempts: int = Field(default=5, ge=1, description="compare-and-swap rounds in promote()")
    lock_timeout_s: float = Field(default=30.0, gt=0, description="local registry lock wait")


class PublishResult(NamedTuple):
    """What `publish_version` did."""

    model: str
    version: str
    uri: str
    """Where the version lives (gs://... or a directory)."""
    manifest_sha256: str
    created: bool
    """False when the identical version was already there (nothing uploaded)."""


class ChannelState(NamedTuple):
    """A channel pointer as read, with the generation to pass to `set_channel`."""

    pointer: ChannelPointer | None
    generation: int
    """Opaque compare-and-swap token; 0 when the channel does not exist yet."""


class JsonRecord(NamedTuple):
    """A JSON object as read, with its generation (0: absent, then `value` is None)."""

    value: Any
    generation: int


class Registry(ABC):
    """A model registry: immutable signed versions, channel pointers and JSON records.

    Open one with `Registry.from_uri("gs://bucket/prefix" | "/some/dir" | "file:///some/dir")`.
    """

    options: RegistryOptions

    # --- construction --------------------------------------------------------------------------------

    @staticmethod
    def from_uri(
        uri: str | os.PathLike[str],
        *,
        create: bool = False,
        client: Any = None,
        options: RegistryOptions | None = None,
    ) -> Registry:
        """Opens the registry at `uri`.

        Args:
            uri: `gs://bucket[/prefix]`, `file:///abs/dir`, or a directory path.
            create: local directories only: create the directory when missing (otherwise an error).
            client: GCS only: a `google.cloud.storage.Client` to use.
            options: timeouts and retry counts.

        Raises:
            RegistryError: unsupported scheme or invalid bucket name.
        """
        from edgefleet.device.registry.gcs import GcsRegistry
        from edgefleet.device.registry.local import LocalRegistry

        text = os.fspath(uri)
        if text.startswith("gs://"):
            bucket, _, prefix = text[len("gs://") :].partition("/")
            return GcsRegistry(bucket, prefix, client=client, options=options)
        if text.startswith("file://"):
            return LocalRegistry(text[len("file://") :], create=create, options=options)
        if "://" in text:
            raise RegistryError(
                f"registry URI {text!r} has an unsupported scheme",
                "use gs://BUCKET[/PREFIX] or a local directory (path or file:///path)",
            )
        return LocalRegistry(text, create=create, options=options)

    # --- what each backend implements -------------------------------------------------------------

    @property
    @abstractmethod
    def uri(self) -> str:
        """The registry's URI (gs://bucket/prefix or file:///dir)."""

    @abstractmethod
    def describe(self, key: str) -> str:
        """The full URI or path of a key, for messages."""

    @abstractmethod
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
    def _write_versioned(self, key: str, data: bytes, expected_generation: int | None) -> int:
        """Writes `data` if the generation is still `expected_generation` (None: unconditionally).

        Returns the new generation; raises ConflictError when the object changed.
        """

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
        models = set()
        for key in self._list_keys(f"{MODELS_PREFIX}/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == MANIFEST_FILE and is_version(parts[2]):
                models.add(parts[1])
        return sorted(models)

    def list_versions(self, model: str) -> list[str]:
        """Published versions of `model` (manifest and signature present), oldest first (semver order)."""
        prefix = f"{MODELS_PREFIX}/{_name('model', model)}/"
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
        prefix = _version_prefix(model, version)
        raw = self._read_bounded(f"{prefix}/{MANIFEST_FILE}", MAX_MANIFEST_BYTES)
        signature_text = self._read_bounded(f"{prefix}/{SIGNATURE_FILE}", MAX_SIGNATURE_BYTES)
        if raw is None or signature_text is None:
            raise RegistryError(
                f"version {version} of model {model} is not published in {self.uri} "
                f"(no {MANIFEST_FILE if raw is None else SIGNATURE_FILE} at {self.describe(prefix)})",
                f"published versions: {', '.join(self.list_versions(model)) or 'none'}; publish it first "
                "(edgefleet release)",
            )
        signature = decode_signature(signature_text, source=self.describe(f"{prefix}/{SIGNATURE_FILE}"))
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
        prefix = _version_prefix(model, version)
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

        Raises:
            RegistryError: the pointer object is not a valid pointer for this model/channel.
        """
        key = _channel_key(model, channel)
        data, generation = self._read_versioned(key)
        if data is None:
            return ChannelState(None, 0)
        try:
            pointer = ChannelPointer.model_validate_json(data)
        except ValidationError as error:
            raise RegistryError(
                f"channel pointer {self.describe(key)} is not a valid pointer ({error.errors()[0]['msg']})",
                f"promote a version again to rewrite it: edgefleet registry promote {model} "
                f"VERSION --channel {channel}",
            ) from error
        if pointer.model != model or pointer.channel != channel:
            raise RegistryError(
                f"channel pointer {self.describe(key)} is for {pointer.model}/{pointer.channel}",
                f"promote a version again to rewrite it: edgefleet registry promote {model} "
                f"VERSION --channel {channel}",
            )
        return ChannelState(pointer, generation)

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
        key = _channel_key(model, channel)
        return self._write_versioned(key, pointer.to_json_bytes(), expected_generation)

    def promote(
        self,
        model: str,
        version: str,
        channel: str,
        *,
        by: str | None = None,
        expected_version: str | None | EllipsisType = ...,
        public_key: PublicKeyLike | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        downgrade: bool = False,
        validity: timedelta = DEFAULT_VALIDITY,
    ) -> ChannelPointer:
        """Points `channel` at a published version, with compare-and-swap and careful retries.

        The version must be published (and its signature must verify when `public_key` is given). The
        pointer names the version and the sha256 of its manifest.

        Retry rule: when the compare-and-swap loses, the channel is read again and
        - if it now names `version` (with the same manifest), somebody did the same promotion: done;
        - if it still names the version it named before (the *baseline*: `expected_version` when given,
          else what the first read found; e.g. the pointer was only re-stamped), the swap is retried, at
          most `options.promote_attempts` times;
        - otherwise somebody moved the channel to another version meanwhile: ConflictError, because
          silently overriding a concurrent promotion is exactly what the compare-and-swap prevents.

        Args:
            model, version, channel: what to point where.
            by: who promotes (kept in the pointer's `updated_by`).
            expected_version: the version the caller believes the channel names now (None: the channel must
                not exist yet). Default: whatever it names at the first read.
            public_key: verify the manifest signature before pointing at it (default with `signing_key`: its
                public key, so a pointer never vouches for a manifest the release key did not sign).
            signing_key: the release key: writes a signed schema 2 pointer (counter above the previous one,
                expiry `validity` from now). None writes an unsigned schema 1 pointer, for fleets whose
                agents are not upgraded yet.
            downgrade: mark the pointer as a deliberate downgrade (needed to point at a lower version than
                the channel names: devices refuse a lower version otherwise).
            validity: how long the signed pointer is valid.

        Returns:
            The pointer now in the registry.

        Raises:
            RegistryError: the version is not published.
            VerificationError: the manifest does not verify against `public_key`.
            ConflictError: the channel moved elsewhere concurrently, or is not at `expected_version`.
        """
        signed = self.read_manifest(model, version)
        if public_key is None and signing_key is not None:
            public_key = signing_key.public_key()
        if public_key is not None:
            verify_manifest_bytes(
                signed.raw,
                signed.signature,
                public_key,
                source=self.describe(f"{_version_prefix(model, version)}/{MANIFEST_FILE}"),
            )
        state = self.read_channel(model, channel)
        baseline = state.pointer.version if state.pointer else None
        want_signed = signing_key is not None
        if expected_version is not ... and expected_version != baseline:
            if done := _naming(state.pointer, version, signed.manifest_sha256, want_signed):
                return done
            raise _moved_error(self, model, channel, version, expected_version, state.pointer)
        if baseline is not None and not downgrade and version_sort_key(version) < version_sort_key(baseline):
            raise ConflictError(
                f"channel {channel} of model {model} names {baseline}; {version} is lower, and devices refuse "
                "a lower version unless the signed pointer marks a deliberate downgrade",
                "promote it as a downgrade (edgefleet registry promote ... --downgrade, or downgrade: true)",
            )
        for _attempt in range(self.options.promote_attempts):
            if done := _naming(state.pointer, version, signed.manifest_sha256, want_signed):
                return done
            if signing_key is not None:
                pointer = sign_pointer(
                    signing_key,
                    model=model,
                    channel=channel,
                    version=version,
                    manifest_sha256=signed.manifest_sha256,
                    previous=state.pointer,
                    downgrade=downgrade,
                    validity=validity,
                    updated_by=by,
                )
            else:
                pointer = ChannelPointer(
                    model=model,
                    channel=channel,
                    version=version,
                    manifest_sha256=signed.manifest_sha256,
                    updated_by=by,
                )
            try:
                self.set_channel(model, channel, pointer, state.generation)
            except ConflictError:
                state = self.read_channel(model, channel)
                now = state.pointer.version if state.pointer else None
                if done := _naming(state.pointer, version, signed.manifest_sha256, want_signed):
                    return done
                if now != baseline:
                    raise _moved_error(self, model, channel, version, baseline, state.pointer) from None
                log.info("channel %s/%s was re-written at %s meanwhile; retrying", model, channel, now)
                continue
            log.info("promoted %s %s to channel %s (was %s)", model, version, channel, baseline)
            return pointer
        raise ConflictError(
            f"channel {channel} of model {model} kept changing; gave up after "
            f"{self.options.promote_attempts} attempts",
            "find out who else writes this channel, then promote again",
        )

    def resign_channel(
        self,
        model: str,
        channel: str,
        signing_key: Ed25519PrivateKey,
        *,
        validity: timedelta = DEFAULT_VALIDITY,
        by: str | None = None,
    ) -> ChannelPointer:
        """Re-signs a channel pointer with a new counter and expiry (same version, manifest and downgrade
        flag); turns an unsigned schema 1 pointer into a signed one.

        The pointer is re-signed only if the manifest it names is still the published one and verifies
        against the signing key, and (schema 2) its own signature verifies: a tampered pointer is never
        laundered into a freshly signed one.

        Raises:
            RegistryError: the channel does not exist.
            VerificationError: the pointer or its manifest does not verify.
            ConflictError: the channel changed while re-signing (the next run tries again).
        """
        state = self.read_channel(model, channel)
        if state.pointer is None:
            raise RegistryError(
                f"channel {channel} of model {model} does not exist in {self.uri}",
                f"channels: {', '.join(self.list_channels(model)) or 'none'}",
            )
        old = state.pointer
        source = self.describe(_channel_key(model, channel))
        if old.signed:
            verify_pointer(signing_key.public_key(), old, source=source)
        signed = self.read_manifest(model, old.version)
        if signed.manifest_sha256 != old.manifest_sha256:
            raise VerificationError(
                f"channel pointer {source} names manifest {old.manifest_sha256[:16]}... of {old.version}, the "
                f"registry holds {signed.manifest_sha256[:16]}...",
                "find out who replaced the manifest; promote a good version again",
            )
        verify_manifest_bytes(signed.raw, signed.signature, signing_key.public_key(), source=source)
        pointer = sign_pointer(
            signing_key,
            model=model,
            channel=channel,
            version=old.version,
            manifest_sha256=old.manifest_sha256,
            previous=old,
            downgrade=old.downgrade,
            validity=validity,
            updated_by=by or old.updated_by,
        )
        self.set_channel(model, channel, pointer, state.generation)
        log.info("re-signed %s/%s (%s, counter %s)", model, channel, old.version, pointer.counter)
        return pointer

    def list_channels(self, model: str) -> list[str]:
        """Channel names of `model`, sorted."""
        prefix = f"{MODELS_PREFIX}/{_name('model', model)}/{CHANNELS_DIR}/"
        return sorted(
            key[len(prefix) : -len(".json")]
            for key in self._list_keys(prefix)
            if key.endswith(".json") and "/" not in key[len(prefix) :]
        )

    # --- JSON records (rollouts) ----------------------------------------------------------------------

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
        key = _record_key(key)
        if isinstance(obj, BaseModel):
            obj = obj.model_dump(mode="json", by_alias=True)
        data = json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n"
        return self._write_versioned(key, data, expected_generation)

    def get_json(self, key: str) -> Any:
        """The JSON record at `key`, or None when it does not exist."""
        return self.read_json(key).value

    def read_json(self, key: str) -> JsonRecord:
        """The JSON record at `key` with its generation (for `put_json(..., expected_generation=)`)."""
        key = _record_key(key)
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

    def list_json(self, prefix: str) -> list[str]:
        """Keys of the JSON records under `prefix` (e.g. "rollouts/"), sorted."""
        prefix = prefix if prefix.endswith("/") else f"{prefix}/"
        _record_key(f"{prefix}x")
        return sorted(key for key in self._list_keys(prefix) if key.endswith(".json"))

    # --- helpers for backends -------------------------------------------------------------------------

    def _prepare_publish(
        self, model: str, version: str, local_dir: Path, public_key: PublicKeyLike | None
    ) -> tuple[SignedManifest, list[str]]:
        """Checks a local version directory before publishing; returns it and the file names to upload."""
        _version_prefix(model, version)
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
        prefix = _version_prefix(model, version)
        raw = self._read_bytes(f"{prefix}/{MANIFEST_FILE}")
        if raw is None:
            return False
        signature_text = self._read_bytes(f"{prefix}/{SIGNATURE_FILE}") or b""
        try:
            same_signature = decode_signature(signature_text) == signed.signature
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


def rollout_key(rollout_id: str) -> str:
    """The record key of a rollout: `rollouts/<id>.json`."""
    return f"{ROLLOUTS_PREFIX}/{_name('rollout id', rollout_id)}.json"


def _naming(
    pointer: ChannelPointer | None, version: str, manifest_sha256: str, signed: bool = False
) -> ChannelPointer | None:
    """`pointer` when it already names this version and manifest (signed, when `signed`), else None."""
    if (
        pointer is not None
        and pointer.version == version
        and pointer.manifest_sha256 == manifest_sha256
        and (pointer.signed or not signed)
    ):
        return pointer
    return None


def _moved_error(
    registry: Registry,
    model: str,
    channel: str,
    version: str,
    expected: str | None,
    pointer: ChannelPointer | None,
) -> ConflictError:
    now = pointer.version if pointer else "nothing"
    who = f" by {pointer.updated_by}" if pointer and pointer.updated_by else ""
    return ConflictError(
        f"channel {channel} of model {model} in {registry.uri} names {now}{who}, not "
        f"{expected or 'nothing'} as "
        f"expected: somebody else changed it while {version} was being promoted",
        f"check the channel (edgefleet registry show {model} ...) and promote {version} again if still "
        "wanted",
    )


def _name(kind: str, value: str) -> str:
    try:
        return check_name(kind, value)
    except ValueError as error:
        raise RegistryError(str(error), f"use a valid {kind}") from None


def _version_prefix(model: str, version: str) -> str:
    try:
        return version_prefix(model, version)
    except ValueError as error:
        raise RegistryError(str(error), "use the model name and semantic version from the manifest") from None


def _channel_key(model: str, channel: str) -> str:
    try:
        return channel_key(model, channel)
    except ValueError as error:
        raise RegistryError(str(error), "use a valid model and channel name, e.g. canary or stable") from None


def _record_key(key: str) -> str:
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or any(not _KEY_PART.fullmatch(part) or part in {".", ".."} for part in parts)
    ):
        raise RegistryError(
            f"record key {key!r} is not a plain relative key",
            "use keys like rollouts/<id>.json (letters, digits, '._=-', '/' between parts)",
        )
    if parts[0] == MODELS_PREFIX:
        raise RegistryError(
            f"record key {key!r} is inside {MODELS_PREFIX}/",
            "versions and channels change only through publish_version and set_channel/promote",
        )
    return key

