"""The registry writer of a Google Cloud Storage bucket (or the GCS emulator via STORAGE_EMULATOR_HOST).

How the rules of `edgefleet.flows.registry.base` are kept here:

- publish: every file is uploaded with `if_generation_match=0` (create only) and checked afterwards: the
  crc32c and md5 GCS reports must equal those of the local file. `manifest.sig`, then `manifest.json` go
  last; `manifest.json`'s create-only upload is the commit point, so of two concurrent publishes of one
  version exactly one commits. On failure the objects this call created are deleted (each with
  `if_generation_match` of what it wrote, so nobody else's object is touched).
- compare-and-swap: writes with `if_generation_match` of the generation read (0 = must not exist); HTTP 412
  becomes ConflictError.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path
from typing import Any

import google_crc32c
import requests
from google.api_core import exceptions as google_errors

from edgefleet.device.registry.gcs import GcsBlob, GcsRegistryReader
from edgefleet.device.trust.version_bundle import HASH_CHUNK_BYTES, SignedManifest
from edgefleet.flows.registry.base import PublishResult, RegistryWriter
from edgefleet.kernel.contracts.layout import MANIFEST_FILE, SIGNATURE_FILE
from edgefleet.kernel.errors import ConflictError, RegistryError

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"


class LocalChecksums:
    """crc32c and md5 of a local file, base64 encoded as GCS reports them."""

    def __init__(self, path: Path) -> None:
        crc = google_crc32c.Checksum()
        md5 = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                crc.update(chunk)
                md5.update(chunk)
        self.crc32c = base64.b64encode(crc.digest()).decode()
        self.md5 = base64.b64encode(md5.digest()).decode()
        self.size = path.stat().st_size

    def matches(self, blob: GcsBlob) -> bool:
        """True when the object GCS reports has exactly this content."""
        return blob.crc32c == self.crc32c and blob.md5_hash == self.md5 and blob.size == self.size


class GcsRegistryWriter(RegistryWriter, GcsRegistryReader):
    """A registry in `gs://bucket/prefix`, written (and read); same arguments as `GcsRegistryReader`."""

    def _upload_version(
        self, prefix: str, local_dir: Path, signed: SignedManifest, names: list[str], result: PublishResult
    ) -> PublishResult:
        model, version = result.model, result.version
        created: list[tuple[str, int]] = []
        try:
            for name in [*names, SIGNATURE_FILE]:
                generation = self._upload_new(f"{prefix}/{name}", local_dir / name)
                if generation is not None:
                    created.append((f"{prefix}/{name}", generation))
            try:
                generation = self._upload_new(
                    f"{prefix}/{MANIFEST_FILE}", local_dir / MANIFEST_FILE, reuse_identical=False
                )
            except ConflictError:
                # Another publish of this version committed first: identical content is fine.
                if self._existing_version(model, version, signed):
                    return result._replace(created=False)
                raise
            if generation is not None:
                created.append((f"{prefix}/{MANIFEST_FILE}", generation))
        except BaseException:
            self._delete_created(created)
            raise
        log.info("published %s %s to %s (%d objects)", model, version, result.uri, len(created))
        return result

    def _upload_new(self, key: str, path: Path, *, reuse_identical: bool = True) -> int | None:
        """Creates one object from a file and checks what GCS stored.

        Returns its generation, or None when an identical object was already there (left by an interrupted
        or concurrent publish of the same content; not ours to delete).

        Raises:
            ConflictError: a different object is already at `key`.
            RegistryError: GCS stored something else than the file (checksum mismatch).
        """
        local = LocalChecksums(path)
        blob = self._bucket().blob(self._object(key))
        content_type = JSON_CONTENT_TYPE if path.suffix == ".json" else BINARY_CONTENT_TYPE
        try:
            with self._errors(f"upload of {path} to {self.describe(key)}"):
                blob.upload_from_filename(
                    str(path),
                    content_type=content_type,
                    if_generation_match=0,
                    checksum="crc32c",
                    timeout=self.options.request_timeout_s,
                    retry=self._retry,
                )
        except ConflictError:
            existing = self._stat(key)
            if reuse_identical and existing is not None and local.matches(existing):
                return None
            raise ConflictError(
                f"{self.describe(key)} already exists with other content (a publish of this version is "
                "running "
                "elsewhere, or an earlier one was interrupted)",
                f"if no other publish is running, delete the incomplete version: gcloud storage rm -r "
                f"{self.describe(key.rsplit('/', 1)[0])}/ , then publish again",
            ) from None
        generation = self._stored_generation(blob, key)
        if not local.matches(blob):
            self._delete_created([(key, generation)])
            raise RegistryError(
                f"upload of {path} to {self.describe(key)} was corrupted (GCS has crc32c {blob.crc32c}, md5 "
                f"{blob.md5_hash}, {blob.size} bytes; the file has {local.crc32c}, {local.md5}, "
                f"{local.size})",
                "publish again; if it persists, check the network path to GCS",
            )
        return generation

    def _stored_generation(self, blob: GcsBlob, key: str) -> int:
        """The generation of the object just written (GCS's answer to a write always carries it)."""
        if blob.generation is None:
            raise RegistryError(f"GCS answered the write of {self.describe(key)} without its generation",
                                "write it again; if it persists, check the network path to GCS")
        return blob.generation

    def _delete_created(self, created: list[tuple[str, int]]) -> None:
        for key, generation in reversed(created):
            try:
                self._bucket().blob(self._object(key)).delete(
                    if_generation_match=generation, timeout=self.options.request_timeout_s, retry=self._retry
                )
                log.info("removed %s after a failed publish", self.describe(key))
            except (google_errors.NotFound, google_errors.PreconditionFailed):
                pass  # gone already, or replaced by somebody else: not ours any more
            except (google_errors.GoogleAPIError, requests.RequestException) as error:
                log.error(
                    "could not remove %s after a failed publish (%s): delete it by hand",
                    self.describe(key),
                    error,
                )

    def _write_versioned(self, key: str, data: bytes, expected_generation: int | None) -> int:
        blob = self._bucket().blob(self._object(key))
        conditions: dict[str, Any] = {}
        if expected_generation is not None:
            conditions = {"if_generation_match": expected_generation, "retry": self._retry}
        try:
            with self._errors(f"writing {self.describe(key)}"):
                blob.upload_from_string(
                    data,
                    content_type=JSON_CONTENT_TYPE,
                    checksum="crc32c",
                    timeout=self.options.request_timeout_s,
                    **conditions,
                )
        except ConflictError:
            what = (
                "already exists (expected it not to)"
                if expected_generation == 0
                else f"changed since it was read (expected generation {expected_generation})"
            )
            raise ConflictError(
                f"{self.describe(key)} {what}",
                "read it again and decide whether your change still applies",
            ) from None
        expected_crc = base64.b64encode(google_crc32c.Checksum(data).digest()).decode()
        if blob.crc32c != expected_crc:
            raise RegistryError(
                f"write of {self.describe(key)} was corrupted (crc32c {blob.crc32c}, expected "
                f"{expected_crc})",
                "write it again",
            )
        return self._stored_generation(blob, key)
