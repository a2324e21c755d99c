"""Is the agent's trust anchor out of its own user's reach? (doctor's `public_key` check)

The release public key decides which models the device runs. If the agent's user can write it, or any
directory on the way to it (rename `keys/`, plant another `release.pub`), a compromised agent makes itself
the release signer for good. Writable here means by the uid's ownership, a group it is in, or everyone; a
sticky directory (like /tmp) lets others rename only entries they own, so it is safe above a root-owned entry.
Both the path as given and its resolved target are checked (a symbolic link anywhere is a way in too).

A release keyring (`keys/release.d/`, `edgefleet.kernel.trust.release_keyring`) is as much the trust anchor as the
single file: the directory (planting a key there makes its owner a release signer) and every key file in it are checked,
`ring_exposure` / `ring_foreign_writable`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from edgefleet.kernel.trust.release_keyring import ring_paths

StatFunction = Callable[[Path], os.stat_result]
_Found = TypeVar("_Found")


def _writable(info: os.stat_result, uid: int, gids: Collection[int]) -> bool:
    mode = info.st_mode
    return (info.st_uid == uid or (bool(mode & stat.S_IWGRP) and info.st_gid in gids)
            or bool(mode & stat.S_IWOTH))


def _chain(path: Path) -> list[Path]:
    """`path` and every directory above it, the path first."""
    return [path, *path.parents]


@dataclass(frozen=True)
class _Component:
    """One component of a path's chain (`chain[index]`), with its lstat."""

    chain: list[Path]
    index: int
    info: os.stat_result

    @property
    def path(self) -> Path:
        return self.chain[self.index]


def _components(path: Path, lstat: StatFunction) -> Iterator[_Component]:
    """Every component of `path` as given, then of its resolved target (a symbolic link anywhere is a way in
    too), each path before the directories above it; examined one at a time, as they are asked for.

    Raises:
        OSError: a component cannot be examined.
    """
    for candidate in (path, Path(os.path.realpath(path))):
        chain = _chain(candidate)
        for index, component in enumerate(chain):
            yield _Component(chain, index, lstat(component))


def writable_component(path: Path, uid: int, gids: Collection[int], lstat: StatFunction = os.lstat) -> Path | None:
    """The first of `path` (absolute) and its parent directories that the user `uid` (in `gids`) can change
    or rename away, or None when none can be.

    Raises:
        OSError: a component cannot be examined.
    """
    for component in _components(path, lstat):
        info = component.info
        if stat.S_ISLNK(info.st_mode):
            if info.st_uid == uid:
                return component.path
            continue
        if not _writable(info, uid, gids):
            continue
        if not _sticky_guarded(component.chain, component.index, info, uid, lstat):
            return component.path
    return None


def _sticky_guarded(chain: list[Path], index: int, info: os.stat_result, uid: int, lstat: StatFunction) -> bool:
    """A sticky directory (like /tmp) the user does not own lets it rename only its own entries: safe above an
    entry it does not own."""
    return (index > 0 and bool(info.st_mode & stat.S_ISVTX) and info.st_uid != uid
            and lstat(chain[index - 1]).st_uid != uid)


def foreign_writable_component(path: Path, uid: int, gids: Collection[int],
                               lstat: StatFunction = os.lstat) -> tuple[Path, int] | None:
    """The first of `path` (absolute) and its parent directories that a user other than `uid` and root can
    change or rename away, with that user's uid (-1: a group or everyone), or None when none can be.

    The store commands run as the SSH login (root or an operator) against an agent root that the agent's own
    user may own: a key there is the agent user's to replace, not the caller's to trust.

    Raises:
        OSError: a component cannot be examined.
    """
    for component in _components(path, lstat):
        info = component.info
        if info.st_uid not in (0, uid):
            return component.path, info.st_uid
        if stat.S_ISLNK(info.st_mode):
            continue
        mode = info.st_mode
        shared = bool(mode & stat.S_IWOTH) or (bool(mode & stat.S_IWGRP) and info.st_gid not in gids)
        # In a sticky directory others can rename only entries they own, and the entry below was checked.
        if shared and not (component.index > 0 and bool(mode & stat.S_ISVTX)):
            return component.path, -1
    return None


def ring_foreign_writable(path: Path, uid: int, gids: Collection[int],
                          lstat: StatFunction = os.lstat) -> tuple[Path, int] | None:
    """`foreign_writable_component` for every entry the keyring at `path` is read from (the anchor file, the
    keyring directory, each key file in it)."""
    return _first_in_ring(path, lambda entry: foreign_writable_component(entry, uid, gids, lstat))


def ring_writable_component(path: Path, uid: int, gids: Collection[int],
                            lstat: StatFunction = os.lstat) -> Path | None:
    """`writable_component` for every entry the keyring at `path` is read from: the anchor file, the keyring
    directory (a key planted there is trusted) and each key file in it."""
    return _first_in_ring(path, lambda entry: writable_component(entry, uid, gids, lstat))


def _first_in_ring(path: Path, find: Callable[[Path], _Found | None]) -> _Found | None:
    """What `find` first finds of the entries the keyring at `path` is read from (the anchor file alone when
    there is no keyring directory)."""
    for entry in ring_paths(Path(os.path.abspath(path))) or [Path(os.path.abspath(path))]:
        found = find(entry)
        if found is not None:
            return found
    return None


def ring_exposure(path: Path) -> Path | None:
    """`ring_writable_component` for this process's user (None when it runs as root)."""
    uid = os.geteuid()
    if uid == 0:
        return None
    return ring_writable_component(Path(os.path.abspath(path)), uid, {os.getegid(), *os.getgroups()})


def anchor_exposure(path: Path) -> Path | None:
    """`writable_component` for this process's user (None when it runs as root: no separation to check)."""
    uid = os.geteuid()
    if uid == 0:
        return None
    return writable_component(Path(os.path.abspath(path)), uid, {os.getegid(), *os.getgroups()})
