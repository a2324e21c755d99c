"""The registry reader of a Google Cloud Storage bucket (or the GCS emulator via STORAGE_EMULATOR_HOST).

Same layout as the local registry (see `edgefleet.device.registry.base`). Compare-and-swap here: the object
generation, read together with the bytes (the download is conditioned on the generation just read); objects
whose size is checked are downloaded at the generation checked. google-cloud-storage errors become edgefleet
errors naming the action (`_errors`); the writer (`edgefleet.flows.registry.gcs`) shares them.

Credentials: the device's `credentials_file` when given (`edgefleet.device.credentials`: the agent and `doctor`
read the same file); else the default Google credentials; with `STORAGE_EMULATOR_HOST` set, anonymous ones.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, cast

import requests
from google.api_core import exceptions as google_errors
from google.api_core.retry import Retry
from google.auth import exceptions as auth_errors

# google-cloud-storage ships no type information: what this module (and the writer) use of it is typed by the
# Protocols below, and a client is narrowed to them where it is made (`_new_client`).
from google.cloud import storage  # pyright: ignore[reportMissingTypeStubs]
from google.cloud.storage.exceptions import DataCorruption  # pyright: ignore[reportMissingTypeStubs]
from google.cloud.storage.retry import DEFAULT_RETRY  # pyright: ignore[reportMissingTypeStubs]

from edgefleet.device.registry.base import RegistryOptions, RegistryReader
from edgefleet.device.registry.object_keys import MAX_RECORD_BYTES, too_large
from edgefleet.kernel.errors import ConflictError, EdgefleetError, RegistryError

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


class GcsBlob(Protocol):
    """What the registry reader and writer use of a `google.cloud.storage.Blob`."""

    @property
    def name(self) -> str: ...
    @property
    def generation(self) -> int | None: ...  # None until the object was read or written
    @property
    def size(self) -> int | None: ...
    @property
    def crc32c(self) -> str | None: ...
    @property
    def md5_hash(self) -> str | None: ...

    def reload(self, *, timeout: float = ..., retry: Retry = ...) -> None: ...
    def download_as_bytes(self, *, if_generation_match: int | None = None, timeout: float = ...,
                          retry: Retry = ...) -> bytes: ...
    def download_to_filename(self, filename: str, *, if_generation_match: int | None = None,
                             timeout: float = ..., checksum: str | None = ..., retry: Retry = ...) -> None: ...
    def upload_from_filename(self, filename: str, content_type: str | None = None, *,
                             if_generation_match: int | None = None, timeout: float = ...,
                             checksum: str | None = ..., retry: Retry = ...) -> None: ...
    def upload_from_string(self, data: bytes | str, content_type: str = ..., *,
                           if_generation_match: int | None = None, timeout: float = ...,
                           checksum: str | None = ..., retry: Retry = ...) -> None: ...
    def delete(self, *, if_generation_match: int | None = None, timeout: float = ...,
               retry: Retry = ...) -> None: ...


class GcsBucket(Protocol):
    """What the registry uses of a `google.cloud.storage.Bucket`."""

    def blob(self, blob_name: str) -> GcsBlob: ...


class GcsClient(Protocol):
    """What the registry uses of a `google.cloud.storage.Client`."""

    def bucket(self, bucket_name: str) -> GcsBucket: ...
    def list_blobs(self, bucket_or_name: str, max_results: int | None = None, *, prefix: str | None = None,
                   timeout: float = ..., retry: Retry = ...) -> Iterable[GcsBlob]: ...


def _new_client(**kwargs: Any) -> GcsClient:
    """A `google.cloud.storage.Client(**kwargs)`, seen as the GcsClient it is (the library's own signatures are
    inferred from its code, e.g. `timeout: int` from a default of 60 where it takes any number)."""
    return cast(GcsClient, storage.Client(**kwargs))


class GcsRegistryReader(RegistryReader):
    """A registry in `gs://bucket/prefix`, read.

    Args:
        bucket: bucket name.
        prefix: key prefix inside the bucket ("" for the bucket root).
        client: a `google.cloud.storage.Client` (a `GcsClient`); default: one made on first use.
        options: request timeout, retry deadline, promote attempts.
        credentials_file: the device's Google credentials file; None: Application Default Credentials.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: GcsClient | None = None,
        options: RegistryOptions | None = None,
        credentials_file: Path | None = None,
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
        self._credentials_file = credentials_file
        self._retry: Retry = DEFAULT_RETRY.with_timeout(self.options.retry_deadline_s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    @property
    def client(self) -> GcsClient:
        """The storage client (made on first use)."""
        if self._client is None:
            if self._credentials_file is not None:
                self._client = self._client_from_file(self._credentials_file)
                return self._client
            try:
                self._client = _new_client()
            except auth_errors.DefaultCredentialsError as error:
                raise RegistryError(
                    f"no Google Cloud credentials to reach {self.uri}",
                    "on a device: set credentials_file in agent.yaml (deploy-agent installs it; the agent and "
                    "`doctor` read the same file); elsewhere: `gcloud auth application-default login`; locally: "
                    "set STORAGE_EMULATOR_HOST to use the GCS emulator",
                ) from error
        return self._client

    def _client_from_file(self, path: Path) -> GcsClient:
        from edgefleet.device.credentials import CredentialsError, load_device_credentials

        try:
            credentials = load_device_credentials(path)
        except CredentialsError as error:
            raise RegistryError(f"cannot reach {self.uri}: {error.message}", error.fix) from error
        return _new_client(project=getattr(credentials, "project_id", None) or None, credentials=credentials)

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket_name}/{self.prefix}" if self.prefix else f"gs://{self.bucket_name}"

    def describe(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._object(key)}"

    # --- primitives ----------------------------------------------------------------------------------

    def _list_keys(self, prefix: str) -> list[str]:
        return sorted(self._list_tagged(prefix))

    def _list_tagged(self, prefix: str) -> dict[str, str | None]:
        """One listing (paged by the client), each key with its object generation (changed by every write)."""
        root = f"{self.prefix}/" if self.prefix else ""
        with self._errors(f"listing {self.describe(prefix)}"):
            blobs = [
                (blob.name, blob.generation)
                for blob in self.client.list_blobs(
                    self.bucket_name,
                    prefix=root + prefix,
                    timeout=self.options.request_timeout_s,
                    retry=self._retry,
                )
            ]
        return {name[len(root) :]: None if generation is None else f"{generation}" for name, generation in blobs}

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
            if blob.size is not None and blob.size > MAX_RECORD_BYTES:  # a pointer or record is kilobytes
                raise too_large(self.describe(key), blob.size, MAX_RECORD_BYTES)
            generation = self._generation(key, blob)  # the download may reset blob.generation from its headers
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

    def _version_tag(self, key: str) -> str | None:
        blob = self._stat(key)  # one metadata request; the object's generation changes with every write
        return None if blob is None or blob.generation is None else f"{blob.generation}"

    def _read_bounded(self, key: str, max_bytes: int) -> bytes | None:
        blob = self._stat(key)
        if blob is None:
            return None
        if blob.size is not None and blob.size > max_bytes:
            raise too_large(self.describe(key), blob.size, max_bytes)
        try:
            with self._errors(f"reading {self.describe(key)}", not_found_ok=True):
                # the generation whose size was checked, never a bigger object swapped in meanwhile
                data = blob.download_as_bytes(if_generation_match=self._generation(key, blob),
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
                conditions["if_generation_match"] = self._generation(key, stat)
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

    def _stat(self, key: str) -> GcsBlob | None:
        blob = self._bucket().blob(self._object(key))
        try:
            with self._errors(f"reading {self.describe(key)}", not_found_ok=True):
                blob.reload(timeout=self.options.request_timeout_s, retry=self._retry)
        except google_errors.NotFound:
            return None
        return blob

    def _generation(self, key: str, blob: GcsBlob) -> int:
        """The generation of an object just read (`_stat`): GCS reports one with every object."""
        if blob.generation is None:
            raise RegistryError(f"{self.describe(key)}: the storage service reported no object generation",
                                "check the GCS endpoint (STORAGE_EMULATOR_HOST, if set) and try again")
        return int(blob.generation)

    def _bucket(self) -> GcsBucket:
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
    def _errors(self, action: str, *, not_found_ok: bool = False) -> Generator[None, None, None]:
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
