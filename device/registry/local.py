"""The registry in a local directory (the embedded default; also any shared file system).

Same layout and rules as GCS (see `edgefleet.device.registry.base`). How the rules are kept here:

- publish: the files are copied into a hidden staging directory next to the version, fsynced and re-hashed
  (the "verified upload"), then the staging directory is renamed to `<version>` in one step. A rename onto
  an existing version fails, so of two concurrent publishes exactly one creates the version.
- compare-and-swap: the generation of a file is a token derived from its content (so a reader gets bytes
  and generation in one read, never mismatched). A write takes an exclusive lock file under
  `<root>/.locks/`, compares the current token with the expected one, and replaces the file by atomic
  rename; `fcntl.flock` makes this safe across processes and threads.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from pathlib import Path

from edgefleet.device.bundle import SIGNED_FILES, check_version_files
from edgefleet.device.registry.base import PublishResult, Registry, RegistryOptions, _version_prefix, too_large
from edgefleet.kernel.contracts.layout import MANIFEST_FILE
from edgefleet.kernel.errors import ConflictError, RegistryError, VerificationError
from edgefleet.kernel.fsutil import atomic_write_bytes, copy_file_synced, file_lock, fsync_dir, temp_name
from edgefleet.kernel.signing import PublicKeyLike

log = logging.getLogger(__name__)

LOCKS_DIR = ".locks"
GENERATION_BYTES = 7
"""Bytes of the content sha256 that make a generation token (56 bits: collisions are not a concern)."""


def content_generation(data: bytes) -> int:
    """The local backend's generation token of some content: never 0 (0 means absent)."""
    return int.from_bytes(hashlib.sha256(data).digest()[:GENERATION_BYTES], "big") + 1


class LocalRegistry(Registry):
    """A registry in a local directory.

    Args:
        root: the registry directory.
        create: create `root` when it does not exist (otherwise operations raise RegistryError).
        options: lock timeout and promote attempts.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, create: bool = False, options: RegistryOptions | None = None
    ) -> None:
        self.root = Path(root).expanduser().absolute()
        self.options = options or RegistryOptions()
        if create:
            self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalRegistry({str(self.root)!r})"

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def describe(self, key: str) -> str:
        return str(self.root / key)

    # --- versions ------------------------------------------------------------------------------------

    def publish_version(
        self,
        model: str,
        version: str,
        local_dir: str | os.PathLike[str],
        *,
        public_key: PublicKeyLike | None = None,
    ) -> PublishResult:
        self._require_root()
        local_dir = Path(local_dir)
        signed, names = self._prepare_publish(model, version, local_dir, public_key)
        target = self.root / _version_prefix(model, version)
        result = PublishResult(model, version, str(target), signed.manifest_sha256, created=True)
        if self._existing_version(model, version, signed):
            log.info("%s %s is already published in %s (identical)", model, version, self.uri)
            return result._replace(created=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = temp_name(target, "publishing")
        staging.mkdir()
        try:
            for name in names + sorted(SIGNED_FILES):
                copy_file_synced(local_dir / name, staging / name)
            fsync_dir(staging)
            try:
                check_version_files(staging, signed.manifest)
            except VerificationError as error:
                raise RegistryError(
                    f"copy into {staging} does not match the manifest: {error.message}",
                    "check the disk of the registry directory and publish again",
                ) from error
            try:
                os.rename(staging, target)
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # Somebody else published this version between our check and the rename.
                if (target / MANIFEST_FILE).is_file() and self._existing_version(model, version, signed):
                    return result._replace(created=False)
                raise RegistryError(
                    f"{target} exists but is not a complete version (no {MANIFEST_FILE})",
                    "it was left by an interrupted copy made by hand: remove the directory and publish again",
                ) from error
            fsync_dir(target.parent)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        log.info("published %s %s to %s", model, version, target)
        return result

    # --- primitives ----------------------------------------------------------------------------------

    def _list_keys(self, prefix: str) -> list[str]:
        self._require_root()
        base = self.root / prefix
        if not base.is_dir():
            return []
        keys = []
        for directory, dirnames, filenames in os.walk(base):
            dirnames[:] = [name for name in dirnames if not name.startswith(".")]
            relative = Path(directory).relative_to(self.root)
            keys.extend(str(relative / name) for name in filenames if not name.startswith("."))
        return sorted(keys)

    def _read_bytes(self, key: str) -> bytes | None:
        self._require_root()
        try:
            return (self.root / key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise RegistryError(
                f"cannot read {self.root / key} ({error.strerror})",
                "check the registry directory's permissions",
            ) from error

    def _read_versioned(self, key: str) -> tuple[bytes | None, int]:
        data = self._read_bytes(key)  # one read: bytes and token always agree
        return (None, 0) if data is None else (data, content_generation(data))

    def _write_versioned(self, key: str, data: bytes, expected_generation: int | None) -> int:
        self._require_root()
        path = self.root / key
        lock_path = self.root / LOCKS_DIR / (key.replace("/", "__") + ".lock")
        with file_lock(
            lock_path,
            timeout_s=self.options.lock_timeout_s,
            what=self.describe(key),
            error_type=RegistryError,
        ):
            _, current = self._read_versioned(key)
            if expected_generation is not None and current != expected_generation:
                raise ConflictError(
                    f"{self.describe(key)} changed since it was read (generation {current}, expected "
                    f"{expected_generation})"
                    if current
                    else f"{self.describe(key)} was deleted since it was read"
                    if expected_generation
                    else f"{self.describe(key)} already exists (expected it not to)",
                    "read it again and decide whether your change still applies",
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
        return content_generation(data)

    def _read_bounded(self, key: str, max_bytes: int) -> bytes | None:
        self._require_root()
        try:
            with open(self.root / key, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > max_bytes:
                    raise too_large(str(self.root / key), size, max_bytes)
                data = handle.read(max_bytes + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise RegistryError(f"cannot read {self.root / key} ({error.strerror})",
                                "check the registry directory's permissions") from error
        if len(data) > max_bytes:
            raise too_large(str(self.root / key), len(data), max_bytes)
        return data

    def _download(self, key: str, dest: Path, max_bytes: int | None = None) -> None:
        source = self.root / key
        if max_bytes is not None:
            try:
                size = source.stat().st_size
            except FileNotFoundError:
                size = None
            if size is not None and size > max_bytes:
                raise too_large(str(source), size, max_bytes)
        try:
            copy_file_synced(source, dest)
        except FileNotFoundError:
            self._require_root()
            raise RegistryError(
                f"{source} is missing from the registry", "the version is incomplete: re-publish it"
            ) from None

    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise RegistryError(
                f"registry directory {self.root} does not exist",
                f"check the path, or create it: mkdir -p {self.root} (or run `edgefleet local up` for the "
                "embedded defaults)",
            )
