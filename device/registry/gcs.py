"""The registry in a Google Cloud Storage bucket (or the GCS emulator via STORAGE_EMULATOR_HOST).

Same layout and rules as the local registry (see `edgefleet.device.registry.base`). How they are kept here:

- publish: every file is uploaded with `if_generation_match=0` (create only) and checked afterwards: the
  crc32c and md5 GCS reports must equal those of the local file. `manifest.sig`, then `manifest.json` go
  last; `manifest.json`'s create-only upload is the commit point, so of two concurrent publishes of one
  version exactly one commits. On failure the objects this call created are deleted (each with
  `if_generation_match` of what it wrote, so nobody else's object is touched).
- compare-and-swap: the object generation, read together with the bytes (the download is conditioned on
  the generation just read), and writes with `if_generation_match` (0 = must not exist). HTTP 412 becomes
  ConflictError.

Credentials: the default Google credentials; with `STORAGE_EMULATOR_HOST` set, anonymous ones.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import google_crc32c
import requests
from google.api_core import exceptions as google_errors
from google.auth import exceptions as auth_errors
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.retry import DEFAULT_RETRY

from edgefleet.device.bundle import HASH_CHUNK_BYTES
from edgefleet.device.registry.base import (
    PublishResult,
    Registry,
    RegistryOptions,
    _version_prefix,
    too_large,
)
from edgefleet.kernel.contracts.layout import MANIFEST_FILE, SIGNATURE_FILE
from edgefleet.kernel.errors import ConflictError, EdgefleetError, RegistryError
from edgefleet.kernel.signing import PublicKeyLike

log = logging.getLogger(__name__)

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
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

    def matches(self, blob: storage.Blob) -> bool:
        """True when the object GCS reports has exactly this content."""
        return blob.crc32c == self.crc32c and blob.md5_hash == self.md5 and blob.size == self.size


class GcsRegistry(Registry):
    """A registry in `gs://bucket/prefix`.

    Args:
        bucket: bucket name.
        prefix: key prefix inside the bucket ("" for the bucket root).
        client: a `google.cloud.storage.Client`; default: one made on first use.
        options: request timeout, retry deadline, promote attempts.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: storage.Client | None = None,
        options: RegistryOptions | None = None,
    ) -> None:
        if not _BUCKET_NAME.fullmatch(bucket):
            raise RegistryError(
                f"{bucket!r} is not a valid GCS bucket name",
                "use gs://BUCKET[/PREFIX] with a bucket name of lowercase letters, digits, '-', '_' and '.'",
            )
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.options = options or RegistryOptions()
        self._client = client
        self._retry = DEFAULT_RETRY.with_timeout(self.options.retry_deadline_s)

    def __repr__(self) -> str:
        return f"GcsRegistry({self.uri!r})"

    @property
    def client(self) -> storage.Client:
        """The storage client (made on first use)."""
        if self._client is None:
            try:
                self._client = storage.Client()
            except auth_errors.DefaultCredentialsError as error:
                raise RegistryError(
                    f"no Google Cloud credentials to reach {self.uri}",
                    "run `gcloud auth application-default login`, set GOOGLE_APPLICATION_CREDENTIALS to a "
                    "service account key, or set STORAGE_EMULATOR_HOST to use the local GCS emulator",
                ) from error
        return self._client

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket_name}/{self.prefix}" if self.prefix else f"gs://{self.bucket_name}"

    def describe(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._object(key)}"

    # --- versions ------------------------------------------------------------------------------------

    def publish_version(
        self,
        model: str,
        version: str,
        local_dir: str | os.PathLike[str],
        *,
        public_key: PublicKeyLike | None = None,
    ) -> PublishResult:
        local_dir = Path(local_dir)
        signed, names = self._prepare_publish(model, version, local_dir, public_key)
        prefix = _version_prefix(model, version)
        result = PublishResult(model, version, self.describe(prefix), signed.manifest_sha256, created=True)
        if self._existing_version(model, version, signed):
            log.info("%s %s is already published in %s (identical)", model, version, self.uri)
            return result._replace(created=False)
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
        if not local.matches(blob):
            self._delete_created([(key, blob.generation)])
            raise RegistryError(
                f"upload of {path} to {self.describe(key)} was corrupted (GCS has crc32c {blob.crc32c}, md5 "
                f"{blob.md5_hash}, {blob.size} bytes; the file has {local.crc32c}, {local.md5}, "
                f"{local.size})",
                "publish again; if it persists, check the network path to GCS",
            )
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

    # --- primitives ----------------------------------------------------------------------------------

    def _list_keys(self, prefix: str) -> list[str]:
        root = f"{self.prefix}/" if self.prefix else ""
        with self._errors(f"listing {self.describe(prefix)}"):
            names = [
                blob.name
                for blob in self.client.list_blobs(
                    self.bucket_name,
                    prefix=root + prefix,
                    timeout=self.options.request_timeout_s,
                    retry=self._retry,
                )
            ]
        return sorted(name[len(root) :] for name in names)

    def _read_bytes(self, key: str) -> bytes | None:
        blob = self._bucket().blob(self._object(key))
        try:
            with self._errors(f"reading {self.describe(key)}", not_found_ok=True):
                return blob.download_as_bytes(timeout=self.options.request_timeout_s, retry=self._retry)
        except google_errors.NotFound:
            return None

    def _read_versioned(self, key: str) -> tuple[bytes | None, int]:
        for _attempt in range(self.options.promote_attempts):
            blob = self._stat(key)
            if blob is None:
                return None, 0
            generation = int(blob.generation)  # the download may reset blob.generation from its headers
            try:
                with self._errors(f"reading {self.describe(key)}", not_found_ok=True):
                    data = blob.download_as_bytes(
                        if_generation_match=generation,
                        timeout=self.options.request_timeout_s,
                        retry=self._retry,
                    )
            except (ConflictError, google_errors.NotFound):
                continue  # replaced or deleted between the two requests: read again
            return data, generation
        raise ConflictError(
            f"{self.describe(key)} kept changing while being read",
            "find out who rewrites it so often, then try again",
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
        return int(blob.generation)

    def _read_bounded(self, key: str, max_bytes: int) -> bytes | None:
        blob = self._stat(key)
        if blob is None:
            return None
        if blob.size is not None and blob.size > max_bytes:
            raise too_large(self.describe(key), blob.size, max_bytes)
        try:
            with self._errors(f"reading {self.describe(key)}", not_found_ok=True):
                # the generation whose size was checked, never a bigger object swapped in meanwhile
                data = blob.download_as_bytes(if_generation_match=int(blob.generation),
                                              timeout=self.options.request_timeout_s, retry=self._retry)
        except google_errors.NotFound:
            return None
        if len(data) > max_bytes:
            raise too_large(self.describe(key), len(data), max_bytes)
        return data

    def _download(self, key: str, dest: Path, max_bytes: int | None = None) -> None:
        conditions: dict[str, Any] = {}
        if max_bytes is not None:
            stat = self._stat(key)
            if stat is not None:
                if stat.size is not None and stat.size > max_bytes:
                    raise too_large(self.describe(key), stat.size, max_bytes)
                conditions["if_generation_match"] = int(stat.generation)
        blob = self._bucket().blob(self._object(key))
        try:
            with self._errors(f"downloading {self.describe(key)}", not_found_ok=True):
                blob.download_to_filename(
                    str(dest), checksum="auto", timeout=self.options.request_timeout_s, retry=self._retry,
                    **conditions,
                )
        except google_errors.NotFound:
            raise RegistryError(
                f"{self.describe(key)} is missing from the registry",
                "the version is incomplete: re-publish it",
            ) from None
        except DataCorruption as error:
            dest.unlink(missing_ok=True)
            raise RegistryError(
                f"download of {self.describe(key)} was corrupted in transit ({error})",
                "try again; if it persists, check the network path to GCS",
            ) from error

    def _stat(self, key: str) -> storage.Blob | None:
        blob = self._bucket().blob(self._object(key))
        try:
            with self._errors(f"reading {self.describe(key)}", not_found_ok=True):
                blob.reload(timeout=self.options.request_timeout_s, retry=self._retry)
        except google_errors.NotFound:
            return None
        return blob

    def _bucket(self) -> storage.Bucket:
        return self.client.bucket(self.bucket_name)

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _bucket_exists(self) -> bool:
        try:
            next(
                iter(
                    self.client.list_blobs(
                        self.bucket_name,
                        max_results=1,
                        timeout=self.options.request_timeout_s,
                        retry=self._retry,
                    )
                ),
                None,
            )
        except google_errors.NotFound:
            return False
        except (google_errors.GoogleAPIError, requests.RequestException):
            return True  # cannot tell (e.g. no list permission): report the original error instead
        return True

    def _missing_bucket(self) -> RegistryError:
        return RegistryError(
            f"bucket {self.bucket_name} does not exist (registry {self.uri})",
            f"create it: `gcloud storage buckets create gs://{self.bucket_name}` (or `gsutil mb "
            f"gs://{self.bucket_name}`), or `pulumi up` to provision the project's bucket, or `edgefleet "
            "local "
            "up` for the local emulator; and check the registry URI for typos",
        )

    @contextmanager
    def _errors(self, action: str, *, not_found_ok: bool = False) -> Iterator[None]:
        """Turns google-cloud-storage errors into edgefleet errors naming `action`.

        412 -> ConflictError; 404 -> the missing-bucket error when the bucket is missing, else re-raised
        (not_found_ok) or RegistryError; 401/403 -> credentials error; network and 5xx -> RegistryError
        (transient for pull mode).
        """
        try:
            yield
        except EdgefleetError:
            raise
        except google_errors.PreconditionFailed as error:
            raise ConflictError(
                f"{action}: the object changed meanwhile (HTTP 412)", "read it again and retry"
            ) from error
        except google_errors.NotFound as error:
            if not self._bucket_exists():
                raise self._missing_bucket() from error
            if not_found_ok:
                raise
            raise RegistryError(f"{action}: not found", "check the registry URI and key") from error
        except (google_errors.Forbidden, google_errors.Unauthorized) as error:
            raise RegistryError(
                f"{action}: permission denied ({error.code})",
                "give the caller's service account access to the bucket (devices: "
                "roles/storage.objectViewer; "
                "release pipeline: roles/storage.objectAdmin), or check `gcloud auth application-default "
                "login`",
            ) from error
        except (google_errors.GoogleAPIError, requests.RequestException, auth_errors.TransportError) as error:
            raise RegistryError(
                f"{action} failed: {error}",
                "check the network connection to GCS (or that the emulator at "
                "STORAGE_EMULATOR_HOST is running) and try again",
            ) from error
