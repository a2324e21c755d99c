"""Reading the on-device model store: where things are, the installed versions, the pointers, the refusals.

Layout under the agent root (`EDGEFLEET_AGENT_ROOT`, default `~/.edgefleet-agent`):

    models/<model>/<version>/      model files + manifest.json + manifest.sig, immutable once installed
    models/<model>/current         symlink -> "<version>" (relative), the version the agent runs
    models/<model>/previous        symlink -> "<version>", the version `rollback` returns to
    models/<model>/.refused.json   versions refused by pull mode or the agent (not retried)
    models/<model>/.floor.json     the version floor: the highest version activated (edgefleet.device.floor)
    models/<model>/.channel.json   what pull mode accepted from each channel (edgefleet.device.trust.pointers)
    keys/release.pub               the release public key (default), with the keyring keys/release.d/ beside it
                                   (<key id>.pub files, edgefleet.kernel.trust.release_keyring);
                                   deploy-agent's is root-owned

A version's `manifest.sig` may be replaced (never its manifest or files): after a release key rotation, by the
registry's signatures of the same manifest (`ModelStore.adopt_signatures`).

`StoreReader` only reads (what the running agent needs to watch `current`); `edgefleet.device.store.ModelStore`
adds the changes (install, activate, rollback, remove, refusals), each under a per-model lock.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edgefleet.device.floor import FLOOR_FILE, MAX_FLOOR_BYTES, FloorRecord, VersionFloor, parse_floor
from edgefleet.device.trust.version_bundle import PublicKeyLike, read_signed_manifest
from edgefleet.kernel.contracts.layout import (
    AGENT_ROOT_ENV,
    CURRENT_POINTER,
    DEFAULT_AGENT_ROOT,
    DEVICE_MODELS_DIR,
    MANIFEST_FILE,
    PREVIOUS_POINTER,
    REFUSED_FILE,
    check_name,
    check_version,
    is_version,
    version_sort_key,
)
from edgefleet.kernel.contracts.manifest import Manifest
from edgefleet.kernel.contracts.refusal import Refusal, find_refusal, parse_refusals
from edgefleet.kernel.errors import StoreError
from edgefleet.kernel.fsutil import read_regular

log = logging.getLogger(__name__)

ROOT_ENV = AGENT_ROOT_ENV
DEFAULT_ROOT = DEFAULT_AGENT_ROOT
PUBLIC_KEY_FILE = "keys/release.pub"
MAX_STATE_FILE_BYTES = 1 << 20
"""A per-model state file (channel record, floor) larger than this is not one: refused unread."""


@dataclass(frozen=True)
class InstalledVersion:
    """A version installed in the store (its directory is complete and immutable)."""

    model: str
    version: str
    path: Path
    manifest: Manifest
    manifest_sha256: str
    """sha256 of the installed manifest.json (compare with a channel pointer's)."""


def default_root() -> Path:
    """The agent root: `$EDGEFLEET_AGENT_ROOT`, else `~/.edgefleet-agent`."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT).expanduser()


class StoreReader:
    """Installed model versions under `<root>/models` and their `current` and `previous` pointers, read-only.

    Args:
        root: the agent root directory.
        public_key: the release public key (object or file) the store verifies with; default
            `<root>/keys/release.pub`.
    """

    def __init__(self, root: str | os.PathLike[str], public_key: PublicKeyLike | None = None) -> None:
        self.root = Path(root).expanduser()
        self.models_dir = self.root / DEVICE_MODELS_DIR
        self.public_key: PublicKeyLike = public_key if public_key is not None else self.root / PUBLIC_KEY_FILE

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    # --- paths -------------------------------------------------------------------------------------

    def model_dir(self, model: str) -> Path:
        """`<root>/models/<model>`."""
        return self.models_dir / _checked_name(model)

    def version_dir(self, model: str, version: str) -> Path:
        """`<root>/models/<model>/<version>` (whether or not it is installed)."""
        return self.model_dir(model) / checked_version(version)

    # --- queries -----------------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Names of the models with at least one installed version, sorted."""
        if not self.models_dir.is_dir():
            return []
        return sorted(
            entry.name
            for entry in os.scandir(self.models_dir)
            if entry.is_dir(follow_symlinks=False) and self.versions(entry.name)
        )

    def versions(self, model: str) -> list[str]:
        """Installed versions of `model`, oldest first (semantic version order)."""
        model_dir = self.model_dir(model)
        if not model_dir.is_dir():
            return []
        found: list[str] = []
        for entry in os.scandir(model_dir):
            if (
                entry.is_dir(follow_symlinks=False)
                and is_version(entry.name)
                and (Path(entry.path) / MANIFEST_FILE).is_file()
            ):
                found.append(entry.name)
        return sorted(found, key=version_sort_key)

    def installed(self, model: str, version: str) -> InstalledVersion | None:
        """The installed version, or None when it is not installed (its manifest is read, not verified)."""
        path = self.version_dir(model, version)
        if not (path / MANIFEST_FILE).is_file():
            return None
        signed = read_signed_manifest(path)
        return InstalledVersion(model, version, path, signed.manifest, signed.manifest_sha256)

    def current(self, model: str) -> InstalledVersion | None:
        """The version `current` points at, or None when the model has no current version.

        Raises:
            StoreError: the pointer names a version that is not installed (the store was edited by hand).
        """
        return self._pointed(model, CURRENT_POINTER)

    def previous(self, model: str) -> InstalledVersion | None:
        """The version `previous` points at (what `rollback` returns to), or None."""
        return self._pointed(model, PREVIOUS_POINTER)

    def floor(self, model: str) -> VersionFloor | None:
        """The model's version floor (`edgefleet.device.floor`): its record; for a store an older agent left
        (no record), the current version; None when nothing was ever activated.

        Raises:
            StoreError: the floor record is damaged.
        """
        record = self.floor_record(model)
        if record is not None:
            return VersionFloor(record.version, record.since)
        current = self.pointer(model, CURRENT_POINTER)
        return VersionFloor(current, None) if current is not None else None

    def floor_record(self, model: str) -> FloorRecord | None:
        """The floor record as stored (None: none yet). Raises StoreError when it is damaged."""
        data = self.read_model_file(model, FLOOR_FILE, max_bytes=MAX_FLOOR_BYTES)
        return parse_floor(data, source=str(self.model_dir(model) / FLOOR_FILE))

    def pointer(self, model: str, name: str) -> str | None:
        """The version a pointer (`current` / `previous`) names, without reading the version."""
        link = self.model_dir(model) / name
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StoreError(
                f"{link} is not a version pointer ({error.strerror})",
                f"remove it and activate a version: edgefleet-agent activate {model} VERSION",
            ) from error
        if not is_version(target):
            raise StoreError(
                f"{link} points at {target!r}, not at a version directory",
                f"remove it and activate a version: edgefleet-agent activate {model} VERSION",
            )
        return target

    # --- refused versions (pull mode and the agent's smoke test) -----------------------------------

    def refusal(self, model: str, version: str, manifest_sha256: str) -> Refusal | None:
        """The refusal recorded for this exact version and manifest, or None."""
        return find_refusal(self._read_refused(model), version, manifest_sha256)

    def refusals(self, model: str) -> list[Refusal]:
        """All refusals recorded for `model`."""
        return self._read_refused(model)

    # --- small per-model state files (pull mode's channel record) -------------------------------------

    def read_model_file(self, model: str, name: str, *, max_bytes: int = MAX_STATE_FILE_BYTES) -> bytes | None:
        """The bytes of `models/<model>/<name>` (a hidden state file), or None when absent.

        Raises:
            StoreError: it is not a regular file, or larger than `max_bytes`.
        """
        path = self.model_dir(model) / state_name(name)
        try:
            return read_regular(path, max_bytes=max_bytes, error_type=StoreError,
                                fix="remove it: state files are plain files the agent writes")
        except FileNotFoundError:
            return None

    # --- internals ---------------------------------------------------------------------------------

    def _pointed(self, model: str, name: str) -> InstalledVersion | None:
        version = self.pointer(model, name)
        if version is None:
            return None
        installed = self.installed(model, version)
        if installed is None:
            raise StoreError(
                f"the {name} pointer of model {model} names version {version}, which is not installed in "
                f"{self.root}",
                f"activate an installed version: edgefleet-agent activate {model} VERSION "
                f"(installed: {', '.join(self.versions(model)) or 'none'})",
            )
        return installed

    def _read_refused(self, model: str) -> list[Refusal]:
        path = self.model_dir(model) / REFUSED_FILE
        try:
            return list(parse_refusals(path.read_bytes()))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:
            log.warning("ignoring unreadable refusal list %s: %s", path, error)
            return []


def _checked_name(model: str) -> str:
    try:
        return check_name("model", model)
    except ValueError as error:
        raise StoreError(str(error), "use the model name from the release manifest") from None


def state_name(name: str) -> str:
    """`name` when it is a hidden plain file name (a per-model state file); else StoreError."""
    if not name.startswith(".") or "/" in name or name in {".", ".."}:
        raise StoreError(f"state file name {name!r} is not a hidden plain name", "use a name like .channel.json")
    return name


def checked_version(version: str) -> str:
    """`version` when it is a version name; else StoreError."""
    try:
        return check_version(version)
    except ValueError as error:
        raise StoreError(str(error), "use a version from the release manifest, e.g. 1.0.0") from None
