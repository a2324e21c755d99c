"""Is the agent's trust anchor out of its own user's reach? (doctor's `public_key` check)

The release public key decides which models the device runs. If the agent's user can write it, or any
directory on the way to it (rename `keys/`, plant another `release.pub`), a compromised agent makes itself
the release signer for good. Writable here means by the uid's ownership, a group it is in, or everyone; a
sticky directory (like /tmp) lets others rename only entries they own, so it is safe above a root-owned entry.
Both the path as given and its resolved target are checked (a symbolic link anywhere is a way in too).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Collection
from pathlib import Path

StatFunction = Callable[[Path], os.stat_result]


def _writable(info: os.stat_result, uid: int, gids: Collection[int]) -> bool:
    mode = info.st_mode
    return (info.st_uid == uid or (bool(mode & stat.S_IWGRP) and info.st_gid in gids)
            or bool(mode & stat.S_IWOTH))


def _chain(path: Path) -> list[Path]:
    """`path` and every directory above it, the path first."""
    return [path, *path.parents]


def writable_component(path: Path, uid: int, gids: Collection[int], lstat: StatFunction = os.lstat) -> Path | None:
    """The first of `path` (absolute) and its parent directories that the user `uid` (in `gids`) can change
    or rename away, or None when none can be.

    Raises:
        OSError: a component cannot be examined.
    """
    for candidate in (path, Path(os.path.realpath(path))):
        chain = _chain(candidate)
        for index, component in enumerate(chain):
            info = lstat(component)
            if stat.S_ISLNK(info.st_mode):
                if info.st_uid == uid:
                    return component
                continue
            if not _writable(info, uid, gids):
                continue
            below = chain[index - 1] if index > 0 else None
            sticky_guard = (index > 0 and bool(info.st_mode & stat.S_ISVTX) and below is not None
                            and lstat(below).st_uid not in (uid,) and info.st_uid != uid)
            if not sticky_guard:
                return component
    return None


def anchor_exposure(path: Path) -> Path | None:
    """`writable_component` for this process's user (None when it runs as root: no separation to check)."""
    uid = os.geteuid()
    if uid == 0:
        return None
    return writable_component(Path(os.path.abspath(path)), uid, {os.getegid(), *os.getgroups()})
