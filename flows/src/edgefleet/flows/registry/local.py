"""The registry writer of a local directory (the embedded default; also any shared file system).

How the rules of `edgefleet.flows.registry.base` are kept here:

- publish: the files are copied into a hidden staging directory next to the version, fsynced and re-hashed
  (the "verified upload"), then the staging directory is renamed to `<version>` in one step. A rename onto
  an existing version fails, so of two concurrent publishes exactly one creates the version.
- compare-and-swap: the generation of a file is a token derived from its content (`content_generation`). A
  write takes an exclusive lock file under `<root>/.locks/`, compares the current token with the expected
  one, and replaces the file by atomic rename; `fcntl.flock` makes this safe across processes and threads.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

from edgefleet.device.registry.base import RegistryOptions
from edgefleet.device.registry.local import LocalRegistryReader, content_generation
from edgefleet.device.trust.version_bundle import SIGNED_FILES, SignedManifest, check_version_files
from edgefleet.flows.registry.base import PublishResult, RegistryWriter
from edgefleet.kernel.contracts.layout import MANIFEST_FILE
from edgefleet.kernel.errors import ConflictError, RegistryError, VerificationError
from edgefleet.kernel.fsutil import atomic_write_bytes, copy_file_synced, file_lock, fsync_dir, temp_name

log = logging.getLogger(__name__)

LOCKS_DIR = ".locks"


class LocalRegistryWriter(RegistryWriter, LocalRegistryReader):
    """A registry in a local directory, written (and read).

    Args:
        root: the registry directory.
        create: create `root` when it does not exist (otherwise operations raise RegistryError).
        options: lock timeout and promote attempts.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, create: bool = False, options: RegistryOptions | None = None
    ) -> None:
        super().__init__(root, options=options)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)

    def _upload_version(
        self, prefix: str, local_dir: Path, signed: SignedManifest, names: list[str], result: PublishResult
    ) -> PublishResult:
        model, version = result.model, result.version
        target = self.root / prefix
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
