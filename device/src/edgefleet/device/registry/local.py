"""The registry reader of a local directory (the embedded default; also any shared file system).

Same layout as GCS (see `edgefleet.device.registry.base`). The generation of a file is a token derived from
its content, so a reader gets bytes and generation in one read, never mismatched. The writer
(`edgefleet.flows.registry.local`) changes files by atomic rename under a lock, so a read never sees half a
file.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from edgefleet.device.registry.base import RegistryOptions, RegistryReader
from edgefleet.device.registry.object_keys import MAX_RECORD_BYTES, too_large
from edgefleet.kernel.errors import EdgefleetError, RegistryError, VerificationError
from edgefleet.kernel.fsutil import copy_regular_synced, read_regular

NOT_AN_OBJECT_FIX = (
    "a registry object is a plain file written by the pipelines: remove what is there and re-publish or "
    "re-promote, and check who can write to the registry directory"
)
RACY_WINDOW_S = 2.0
"""A pointer file changed this recently is read again at every poll (see `_version_tag`)."""
GENERATION_BYTES = 7
"""Bytes of the content sha256 that make a generation token (56 bits: collisions are not a concern)."""


def content_generation(data: bytes) -> int:
    """The local backend's generation token of some content: never 0 (0 means absent)."""
    return int.from_bytes(hashlib.sha256(data).digest()[:GENERATION_BYTES], "big") + 1


class LocalRegistryReader(RegistryReader):
    """A registry in a local directory, read.

    Args:
        root: the registry directory (operations raise RegistryError while it does not exist).
        options: timeouts and retry counts.
    """

    def __init__(self, root: str | os.PathLike[str], *, options: RegistryOptions | None = None) -> None:
        self.root = Path(root).expanduser().absolute()
        self.options = options or RegistryOptions()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def describe(self, key: str) -> str:
        return str(self.root / key)

    # --- primitives ----------------------------------------------------------------------------------

    def _list_keys(self, prefix: str) -> list[str]:
        self._require_root()
        base = self.root / prefix
        if not base.is_dir():
            return []
        keys: list[str] = []
        for directory, dirnames, filenames in os.walk(base):
            dirnames[:] = [name for name in dirnames if not name.startswith(".")]
            relative = Path(directory).relative_to(self.root)
            keys.extend(str(relative / name) for name in filenames if not name.startswith("."))
        return sorted(keys)

    def _read_bytes(self, key: str) -> bytes | None:
        """A channel pointer or record: like a malformed one, one that is not a plain file (or too large) is a
        RegistryError (pull mode tries again at the next poll)."""
        return self._read_regular(key, MAX_RECORD_BYTES, RegistryError)

    def _read_versioned(self, key: str) -> tuple[bytes | None, int]:
        data = self._read_bytes(key)  # one read: bytes and token always agree
        return (None, 0) if data is None else (data, content_generation(data))

    def _version_tag(self, key: str) -> str | None:
        """inode, size, modification and change times: a write or a replacement changes one of them (the change
        time cannot be set back by hand). None for a file changed within `RACY_WINDOW_S` (file system clocks
        are coarse: a second write in the same tick could keep every field, git's "racily clean" case)."""
        try:
            stat = (self.root / key).stat()
        except OSError:
            return None
        if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) < RACY_WINDOW_S * 1e9:
            return None
        return f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"

    def _read_bounded(self, key: str, max_bytes: int) -> bytes | None:
        return self._read_regular(key, max_bytes, VerificationError)

    def _read_regular(self, key: str, max_bytes: int, error_type: type[EdgefleetError]) -> bytes | None:
        """Regular files only (a FIFO or a device there is refused, not waited on), at most `max_bytes`."""
        self._require_root()
        try:
            return read_regular(self.root / key, max_bytes=max_bytes, fix=NOT_AN_OBJECT_FIX, error_type=error_type,
                                too_large=too_large if error_type is VerificationError else None)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise RegistryError(f"cannot read {self.root / key} ({error.strerror})",
                                "check the registry directory's permissions") from error

    def _download(self, key: str, dest: Path, max_bytes: int | None = None) -> None:
        source = self.root / key
        try:
            copy_regular_synced(source, dest, max_bytes=max_bytes, fix=NOT_AN_OBJECT_FIX,
                                error_type=VerificationError, too_large=too_large)
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
