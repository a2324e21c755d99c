"""Small crash-safe file system steps shared by the model store and the local registry.

Atomic replacement (write a temp file in the same directory, fsync, `os.replace`, fsync the directory),
symlink switching by rename, and an inter-process lock file with a timeout (`fcntl.flock`, which also
excludes other threads of the same process because each acquisition opens its own file description).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import time
import uuid
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable

from edgefleet.kernel.errors import EdgefleetError

LOCK_POLL_S = 0.01
"""How often a waiting `file_lock` retries; short because locks are held for milliseconds."""
COPY_CHUNK_BYTES = 1 << 20
TooLarge = Callable[[str, int, int], EdgefleetError]
"""Makes the error for a file over its cap: (path, size, max_bytes) -> error (a caller's own wording)."""
_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def temp_name(path: Path, tag: str = "tmp") -> Path:
    """A unique hidden sibling of `path`, in the same directory (so `os.replace` stays atomic)."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_dir(path: Path) -> None:
    """Flushes a directory entry change (create, rename, unlink) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replaces `path` with `data` so readers see either the old or the new content, never a mix.

    The file gets exactly `mode` (not narrowed by the umask: a public key must stay readable by the agent).
    """
    temp = temp_name(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def copy_file_synced(source: Path, dest: Path) -> None:
    """Copies a file and fsyncs the copy (the caller fsyncs the directory)."""
    with open(source, "rb") as reader, open(dest, "wb") as writer:
        shutil.copyfileobj(reader, writer)
        writer.flush()
        os.fsync(writer.fileno())


def _too_large(path: Path, size: int, max_bytes: int, fix: str, error_type: type[EdgefleetError],
               too_large: TooLarge | None) -> EdgefleetError:
    if too_large is not None:
        return too_large(str(path), size, max_bytes)
    return error_type(f"{path} is {size} bytes or more, more than the {max_bytes} expected: refused", fix)


def _check_regular(
    status: os.stat_result, path: Path, max_bytes: int | None, fix: str, error_type: type[EdgefleetError],
    too_large: TooLarge | None,
) -> None:
    if not stat.S_ISREG(status.st_mode):
        kind = next((name for test, name in _KINDS if test(status.st_mode)), "not a plain file")
        raise error_type(f"{path} is not a regular file (it is {kind}): refused unread", fix)
    if max_bytes is not None and status.st_size > max_bytes:
        raise _too_large(path, status.st_size, max_bytes, fix, error_type, too_large)


@contextmanager
def open_regular(
    path: Path, *, max_bytes: int | None, fix: str, error_type: type[EdgefleetError] = EdgefleetError,
    too_large: TooLarge | None = None,
) -> Generator[BinaryIO, None, None]:
    """Opens a file for reading only when it is a regular file of at most `max_bytes` (None: any size).

    A named pipe, a device or a socket (or a symlink to one) is refused before it is opened, and checked
    again on the open descriptor (opened without blocking, so a FIFO swapped in meanwhile cannot hang the
    caller). The caller still bounds its reads: a file may grow after the check.

    Raises:
        FileNotFoundError: there is no such file (callers decide what missing means).
        error_type: not a regular file, or larger than `max_bytes` (names `path`; `fix` says what to do;
            `too_large` makes the size error when given).
    """
    _check_regular(os.stat(path), path, max_bytes, fix, error_type, too_large)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _check_regular(os.fstat(fd), path, max_bytes, fix, error_type, too_large)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def read_regular(
    path: Path, *, max_bytes: int, fix: str, error_type: type[EdgefleetError] = EdgefleetError,
    too_large: TooLarge | None = None,
) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (see `open_regular`)."""
    with open_regular(path, max_bytes=max_bytes, fix=fix, error_type=error_type, too_large=too_large) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew after the check
        raise _too_large(path, len(data), max_bytes, fix, error_type, too_large)
    return data


def copy_regular_synced(
    source: Path, dest: Path, *, max_bytes: int | None, fix: str,
    error_type: type[EdgefleetError] = EdgefleetError, too_large: TooLarge | None = None,
) -> None:
    """`copy_file_synced` of a regular file of at most `max_bytes` (see `open_regular`); the copy is
    refused (and `dest` removed) when the source grows past it meanwhile."""
    with open_regular(source, max_bytes=max_bytes, fix=fix, error_type=error_type, too_large=too_large) as reader:
        with open(dest, "wb") as writer:
            copied = 0
            while chunk := reader.read(COPY_CHUNK_BYTES):
                copied += len(chunk)
                if max_bytes is not None and copied > max_bytes:
                    break
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())
    if max_bytes is not None and copied > max_bytes:  # it grew after the check
        dest.unlink(missing_ok=True)
        raise _too_large(source, copied, max_bytes, fix, error_type, too_large)


def switch_symlink(link: Path, target: str) -> None:
    """Points symlink `link` at `target` atomically: a new link under a temp name, then `os.replace`.

    A reader resolving `link` at any moment sees the old or the new target, never a missing link.
    """
    temp = temp_name(link)
    os.symlink(target, temp)
    try:
        os.replace(temp, link)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(link.parent)


def remove_tree_atomically(path: Path) -> None:
    """Makes a directory disappear in one step (rename to a temp name), then deletes it."""
    doomed = temp_name(path, "removing")
    os.rename(path, doomed)
    fsync_dir(path.parent)
    shutil.rmtree(doomed, ignore_errors=True)


@contextmanager
def file_lock(
    lock_path: Path, *, timeout_s: float, what: str, error_type: type[EdgefleetError] = EdgefleetError
) -> Generator[None, None, None]:
    """Holds an exclusive lock on `lock_path` (created if missing) for the `with` block.

    Args:
        lock_path: the lock file.
        timeout_s: how long to wait for another holder.
        what: what the lock protects, for the error message.
        error_type: the EdgefleetError subclass raised on timeout.

    Raises:
        error_type: the lock was not free within `timeout_s`.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise error_type(
                        f"{what} is locked by another process (lock file {lock_path}) for over "
                        f"{timeout_s:g} s",
                        "wait for the other edgefleet command to finish or stop it (the lock is released "
                        "when "
                        "its process exits)",
                    ) from error
                time.sleep(LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
