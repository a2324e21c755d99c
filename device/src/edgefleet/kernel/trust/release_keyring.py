"""The release keyring: the release public keys a device (or a pipeline) trusts, each known by its key id.

A signature names the key that made it (`ChannelPointer.key_id`, `Manifest.signing.key_id`, the key id of a
`manifest.sig` line); the verifier picks that key from the ring. Several keys make rotation possible without
stopping anything (TUF's root rotation cut down): add the new key everywhere, re-sign what is in use, retire
the old key.

On disk a keyring is a directory of public key files, one key each, named by the key's id:

    keys/release.d/<key id>.pub        (PEM, or the raw key in base64 on one line)

A file whose name is not its key's id is NOT trusted (it is reported in `Keyring.problems`, and `doctor` fails):
retiring a key removes the file of that id, and a key hiding under another name would outlive its retirement.
The single trust anchor of older installs (`keys/release.pub`) is still read: a key file path gives that key
plus the keyring directory beside it (`release.pub` -> `release.d/`), when there is one; a missing
`release.pub` next to an existing `release.d/` (a retired single anchor) is the directory alone.

A signature by a key the ring does not hold raises `UnknownKeyError`: the device may simply not have the key
yet, so it is never a lasting verdict on the release (never recorded as a refusal); a signature that a known key
does not verify is tampering, `VerificationError` as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.signatures import KEY_ID_HEX_CHARS, load_public_key, public_key_raw

log = logging.getLogger(__name__)

KEY_FILE_SUFFIX = ".pub"
RING_DIR_SUFFIX = ".d"
"""`keys/release.pub` -> `keys/release.d/`: the keyring directory beside a single key file."""
MAX_RING_KEYS = 16
"""More keys than any rotation needs (two while rotating): a directory with more is refused, not scanned."""

def add_key_fix(keyring: Keyring) -> str:
    """The fix for a signature by a key `keyring` does not hold."""
    return (f"if the key is new, add its public key to {keyring.source} (edgefleet keys add RING NEW.pub, then "
            "deploy-agent with public_key: RING); if it was retired, re-sign with a current key (edgefleet keys "
            "resign); if it is no release key of yours, do not use what it signed")


class UnknownKeyError(VerificationError):
    """Signed by a key this keyring does not hold: not (yet) trusted here, never proof of tampering. A device
    retries when its keyring changes and never records it as a refusal of the release."""


def full_key_id(public_key: Ed25519PublicKey) -> str:
    """The sha256 (hex) of the raw key; a key id is a prefix of it of at least 16 hex digits."""
    return hashlib.sha256(public_key_raw(public_key)).hexdigest()


def key_file_name(public_key: Ed25519PublicKey) -> str:
    """`<key id>.pub`: the only name under which a keyring directory trusts the key."""
    return full_key_id(public_key)[:KEY_ID_HEX_CHARS] + KEY_FILE_SUFFIX


@dataclass(frozen=True)
class Keyring:
    """Release public keys by full key id (sha256 hex), and where they came from."""

    keys: tuple[tuple[str, Ed25519PublicKey], ...]
    source: str
    """What to call the ring in messages (its files)."""
    problems: tuple[str, ...] = ()
    """Files that were not trusted, and why (a misnamed or unreadable key file): doctor reports them."""

    @classmethod
    def of(cls, keys: Iterable[Ed25519PublicKey], source: str = "keyring") -> Keyring:
        unique = {full_key_id(key): key for key in keys}
        return cls(tuple(sorted(unique.items())), source)

    @property
    def ids(self) -> tuple[str, ...]:
        """The short key ids (16 hex digits), as signatures name them."""
        return tuple(full[:KEY_ID_HEX_CHARS] for full, _ in self.keys)

    def find(self, key_id: str) -> Ed25519PublicKey | None:
        """The key whose id `key_id` names (a prefix of its sha256, at least 16 hex digits), or None."""
        if len(key_id) < KEY_ID_HEX_CHARS:
            return None
        return next((key for full, key in self.keys if full.startswith(key_id.lower())), None)

    def describe(self) -> str:
        return f"{self.source} (key ids {', '.join(self.ids) or 'none'})"


KeyringLike = Union[Keyring, Ed25519PublicKey, str, os.PathLike[str]]
"""A keyring, one public key, or the path of a key file or keyring directory (Python 3.9: no `X | Y` here)."""


def ring_dir_beside(key_file: Path) -> Path:
    """`keys/release.pub` -> `keys/release.d`."""
    return key_file.with_name(key_file.stem + RING_DIR_SUFFIX)


def ring_paths(path: str | os.PathLike[str]) -> list[Path]:
    """Every file system entry the keyring at `path` is read from (the files and the directory), for the checks
    that nobody but root can change them (`edgefleet.device.trust.anchor`)."""
    path = Path(path)
    directory = path if path.is_dir() else ring_dir_beside(path)
    found = [path] if path.is_file() else []
    if directory.is_dir():
        found.append(directory)
        found.extend(sorted(entry for entry in directory.iterdir() if entry.name.endswith(KEY_FILE_SUFFIX)))
    return found


def load_keyring(path: str | os.PathLike[str]) -> Keyring:
    """Reads the keyring at `path`: a keyring directory, or a key file (plus the directory beside it).

    Raises:
        VerificationError: nothing there, a key file that is not an Ed25519 public key (the single anchor), too
            many files, or no trusted key at all (every file misnamed).
    """
    path = Path(path)
    directory = path if path.is_dir() else ring_dir_beside(path)
    keys: list[Ed25519PublicKey] = []
    problems: list[str] = []
    if not path.is_dir() and (path.exists() or not directory.is_dir()):
        keys.append(load_public_key(path))  # the single anchor (old installs): missing -> its clear error
    if directory.is_dir():
        _read_ring_dir(directory, keys, problems)
    source = f"keyring {directory}" if path.is_dir() else (
        f"public key file {path}" + (f" and keyring {directory}" if directory.is_dir() else ""))
    if not keys:
        raise VerificationError(f"{source} holds no trusted release key ({'; '.join(problems) or 'no .pub file'})",
                                "install the release public key(s) there as <key id>.pub (deploy-agent does; "
                                "`edgefleet keys list RING` shows each file's key id)")
    ring = Keyring.of(keys, source)
    return Keyring(ring.keys, source, tuple(problems))


def _read_ring_dir(directory: Path, keys: list[Ed25519PublicKey], problems: list[str]) -> None:
    names = sorted(entry.name for entry in directory.iterdir() if entry.name.endswith(KEY_FILE_SUFFIX))
    if len(names) > MAX_RING_KEYS:
        raise VerificationError(f"keyring {directory} holds {len(names)} key files, more than {MAX_RING_KEYS}",
                                "keep the current release key(s) only: retire the others (edgefleet keys retire)")
    for name in names:
        try:
            key = load_public_key(directory / name)
        except VerificationError as error:
            problems.append(f"{directory / name}: {error.message}")
            continue
        if name != key_file_name(key):
            problems.append(f"{directory / name} holds key {key_file_name(key)[:-len(KEY_FILE_SUFFIX)]}, not the "
                            f"key its name says: not trusted (rename it to {key_file_name(key)} if it is a current "
                            "release key, else remove it)")
            continue
        keys.append(key)
    for problem in problems:
        log.warning("release keyring: %s", problem)


def keyring_stamp(path: str | os.PathLike[str]) -> tuple[tuple[str, int, int, int], ...]:
    """What changes when the keyring at `path` changes (its entries' names, sizes and times): cheap to take at
    every poll, so a version waiting for a key is tried again as soon as the key is installed."""
    stamp: list[tuple[str, int, int, int]] = []
    for entry in ring_paths(path):
        try:
            info = entry.stat()
        except OSError:
            continue
        stamp.append((str(entry), info.st_size, info.st_mtime_ns, info.st_ino))
    return tuple(stamp)


def resolve_keyring(ring: KeyringLike) -> Keyring:
    """A Keyring for a keyring, one key object, or a key file / keyring directory path."""
    if isinstance(ring, Keyring):
        return ring
    if isinstance(ring, Ed25519PublicKey):
        return Keyring.of([ring], f"public key {full_key_id(ring)[:KEY_ID_HEX_CHARS]}")
    return load_keyring(ring)


def verify_by_key_id(ring: KeyringLike, data: bytes, signature: bytes, *, key_id: str | None,
                     what: str) -> str:
    """Checks a signature with the ring's key that `key_id` names (every key in turn when the signature names
    none: signatures older than key ids); returns the short id of the key that verified.

    Raises:
        UnknownKeyError: `key_id` names a key the ring does not hold.
        VerificationError: the named key (or, unnamed, every key) does not verify it: altered or forged.
    """
    keyring = resolve_keyring(ring)
    if key_id is not None:
        key = keyring.find(key_id)
        if key is None:
            raise UnknownKeyError(f"{what} is not signed by a key this keyring holds: it names key {key_id}, "
                                  f"which {keyring.describe()} does not hold", add_key_fix(keyring))
        candidates = [(full_key_id(key), key)]
    else:
        candidates = list(keyring.keys)
    for full, key in candidates:
        try:
            key.verify(signature, data)
        except InvalidSignature:
            continue
        return full[:KEY_ID_HEX_CHARS]
    signer = f"key {key_id}" if key_id is not None else "any key of the keyring"
    raise VerificationError(
        f"signature check failed: {what} is not signed by {signer} ({keyring.describe()})",
        f"check that {keyring.source} holds the release public key matching the signing key; if it does, the "
        "signed content was altered after signing: do not use it, re-download or re-publish it")
