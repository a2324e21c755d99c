"""The on-device model store: verified, immutable versions and atomic `current` / `previous` pointers.

Layout under the agent root (`EDGEFLEET_AGENT_ROOT`, default `~/.edgefleet-agent`):

    models/<model>/<version>/      model files + manifest.json + manifest.sig, immutable once installed
    models/<model>/current         symlink -> "<version>" (relative), the version the agent runs
    models/<model>/previous        symlink -> "<version>", the version `rollback` returns to
    models/<model>/.refused.json   versions refused by pull mode or the agent (not retried)
    keys/release.pub               the release public key (default)

Guarantees for a concurrent reader (the running agent watches `current` and reads its manifest):
a version directory appears in one rename after it was copied, fsynced and verified, and never changes
afterwards; a pointer changes by renaming a new symlink over the old one. So `current` always resolves to a
complete, verified directory. Writers (install, activate, rollback, remove) serialize on a per-model lock
file, and every failed operation leaves the store as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.device.bundle import (
    SIGNED_FILES,
    read_signed_manifest,
    refuse_development_signed,
    sha256_bytes,
    verify_version_dir,
)
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
from edgefleet.kernel.contracts.refusal import Refusal, dump_refusals, find_refusal, parse_refusals
from edgefleet.kernel.errors import StoreError
from edgefleet.kernel.fsutil import (
    atomic_write_bytes,
    copy_file_synced,
    file_lock,
    fsync_dir,
    remove_tree_atomically,
    switch_symlink,
    temp_name,
)
from edgefleet.kernel.signing import PublicKeyLike

log = logging.getLogger(__name__)

ROOT_ENV = AGENT_ROOT_ENV
DEFAULT_ROOT = DEFAULT_AGENT_ROOT
PUBLIC_KEY_FILE = "keys/release.pub"
LOCK_FILE = ".lock"
STAGING_DIR = ".staging"


class StoreOptions(BaseModel):
    """Tunables of a `ModelStore`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lock_timeout_s: float = Field(default=30.0, gt=0, description="wait for another writer of the same model")
    refuse_development_keys: bool = Field(
        default=False, description="refuse versions whose manifest says a development key signed them"
    )


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


class ModelStore:
    """Installed model versions under `<root>/models`, with atomic `current` and `previous` pointers.

    Args:
        root: the agent root directory (created on first install).
        public_key: the release public key (object or file) used to verify on install and activate;
            default `<root>/keys/release.pub`.
        options: lock timeout.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        public_key: PublicKeyLike | None = None,
        *,
        options: StoreOptions | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.models_dir = self.root / DEVICE_MODELS_DIR
        self.public_key: PublicKeyLike = public_key if public_key is not None else self.root / PUBLIC_KEY_FILE
        self.options = options or StoreOptions()

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # --- paths -------------------------------------------------------------------------------------

    def model_dir(self, model: str) -> Path:
        """`<root>/models/<model>`."""
        return self.models_dir / _checked_name(model)

    def version_dir(self, model: str, version: str) -> Path:
        """`<root>/models/<model>/<version>` (whether or not it is installed)."""
        return self.model_dir(model) / _checked_version(version)

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
        found = []
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

    # --- changes -----------------------------------------------------------------------------------

    def install(self, src_dir: str | os.PathLike[str], public_key: PublicKeyLike | None = None) -> Manifest:
        """Verifies a version directory and installs a copy of it as `models/<model>/<version>`.

        The copy is made in a temp directory inside the store, fsynced, verified again (the source might
        change while being copied) and renamed into place, so the version appears complete or not at all.
        Installing an identical version again is a no-op. Does not change any pointer.

        Args:
            src_dir: a signed version directory (manifest.json, manifest.sig and the listed files).
            public_key: overrides the store's release public key.

        Returns:
            The verified manifest.

        Raises:
            VerificationError: the source does not verify (nothing is installed).
            StoreError: the same version is installed with different content.
        """
        key = public_key if public_key is not None else self.public_key
        src_dir = Path(src_dir)
        manifest = verify_version_dir(src_dir, key)
        if self.options.refuse_development_keys:
            refuse_development_signed(manifest, str(src_dir))
        model_dir = self.model_dir(manifest.model)
        model_dir.mkdir(parents=True, exist_ok=True)
        with self._lock(manifest.model):
            target = model_dir / manifest.version
            if target.exists():
                return self._same_as_installed(src_dir, target, manifest)
            staging = temp_name(target, "installing")
            staging.mkdir()
            try:
                for name in [entry.name for entry in manifest.files] + sorted(SIGNED_FILES):
                    copy_file_synced(src_dir / name, staging / name)
                fsync_dir(staging)
                installed_manifest = verify_version_dir(
                    staging, key, model=manifest.model, version=manifest.version
                )
                os.rename(staging, target)
                fsync_dir(model_dir)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        log.info("installed %s %s into %s", manifest.model, manifest.version, target)
        return installed_manifest

    def activate(self, model: str, version: str, public_key: PublicKeyLike | None = None) -> InstalledVersion:
        """Verifies an installed version again and makes it current; the old current becomes previous.

        Activating the current version changes nothing.

        Raises:
            StoreError: the version is not installed.
            VerificationError: its files no longer verify (pointers unchanged).
        """
        key = public_key if public_key is not None else self.public_key
        with self._lock(model):
            installed = self._verified(model, version, key)
            current = self.pointer(model, CURRENT_POINTER)
            if current == version:
                return installed
            model_dir = self.model_dir(model)
            # previous first: a crash between the two switches leaves previous == current, both valid.
            if current is not None:
                switch_symlink(model_dir / PREVIOUS_POINTER, current)
            switch_symlink(model_dir / CURRENT_POINTER, version)
        log.info("activated %s %s (previous: %s)", model, version, current)
        return installed

    def rollback(self, model: str, public_key: PublicKeyLike | None = None) -> InstalledVersion:
        """Makes the previous version current again; the version rolled back from becomes previous.

        Returns:
            The version now current.

        Raises:
            StoreError: the model has no previous version (or it is not installed any more).
            VerificationError: the previous version no longer verifies (pointers unchanged).
        """
        key = public_key if public_key is not None else self.public_key
        with self._lock(model):
            previous = self.pointer(model, PREVIOUS_POINTER)
            if previous is None:
                raise StoreError(
                    f"model {model} has no previous version to roll back to (store {self.root})",
                    f"activate a version explicitly: edgefleet-agent activate {model} VERSION "
                    f"(installed: {', '.join(self.versions(model)) or 'none'})",
                )
            installed = self._verified(model, previous, key)
            current = self.pointer(model, CURRENT_POINTER)
            model_dir = self.model_dir(model)
            # current first: it is what the agent runs; a crash before the second switch leaves
            # previous == current, both valid.
            switch_symlink(model_dir / CURRENT_POINTER, previous)
            if current is not None and current != previous:
                switch_symlink(model_dir / PREVIOUS_POINTER, current)
        log.info("rolled %s back from %s to %s", model, current, previous)
        return installed

    def remove(self, model: str, version: str) -> None:
        """Deletes an installed version that neither `current` nor `previous` names.

        Raises:
            StoreError: the version is not installed, or is current or previous.
        """
        with self._lock(model):
            path = self.version_dir(model, version)
            if not path.is_dir():
                raise StoreError(
                    f"version {version} of model {model} is not installed in {self.root}",
                    f"installed versions: {', '.join(self.versions(model)) or 'none'}",
                )
            for pointer_name in (CURRENT_POINTER, PREVIOUS_POINTER):
                if self.pointer(model, pointer_name) == version:
                    raise StoreError(
                        f"version {version} of model {model} is the {pointer_name} version and cannot be "
                        "removed",
                        f"activate another version first (edgefleet-agent activate {model} VERSION)",
                    )
            remove_tree_atomically(path)
        log.info("removed %s %s", model, version)

    # --- refused versions (pull mode and the agent's smoke test) -----------------------------------

    def mark_refused(self, model: str, version: str, manifest_sha256: str, reason: str) -> Refusal:
        """Remembers that (model, version, manifest sha256) was refused, so pull mode does not retry it."""
        refusal = Refusal(version=_checked_version(version), manifest_sha256=manifest_sha256, reason=reason,
                          refused_at=datetime.now(timezone.utc))
        with self._lock(model):
            others = [entry for entry in self._read_refused(model) if not entry.matches(version, manifest_sha256)]
            atomic_write_bytes(self.model_dir(model) / REFUSED_FILE, dump_refusals([*others, refusal]))
        return refusal

    def refusal(self, model: str, version: str, manifest_sha256: str) -> Refusal | None:
        """The refusal recorded for this exact version and manifest, or None."""
        return find_refusal(self._read_refused(model), version, manifest_sha256)

    def refusals(self, model: str) -> list[Refusal]:
        """All refusals recorded for `model`."""
        return self._read_refused(model)

    def clear_refused(self, model: str) -> int:
        """Forgets the refusals of `model` (so pull mode tries those versions again); returns how many."""
        with self._lock(model):
            count = len(self._read_refused(model))
            (self.model_dir(model) / REFUSED_FILE).unlink(missing_ok=True)
        return count

    # --- small per-model state files (pull mode's channel record) -------------------------------------

    def read_model_file(self, model: str, name: str) -> bytes | None:
        """The bytes of `models/<model>/<name>` (a hidden state file), or None when absent."""
        try:
            return (self.model_dir(model) / _state_name(name)).read_bytes()
        except FileNotFoundError:
            return None

    def write_model_file(self, model: str, name: str, data: bytes) -> None:
        """Replaces `models/<model>/<name>` atomically, under the model's writer lock."""
        with self._lock(model):
            atomic_write_bytes(self.model_dir(model) / _state_name(name), data)

    @contextmanager
    def staging_dir(self) -> Iterator[Path]:
        """A temporary directory inside the store root (same file system), removed afterwards."""
        staging_root = self.root / STAGING_DIR
        staging_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=staging_root) as temp:
            yield Path(temp)

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

    def _verified(self, model: str, version: str, key: PublicKeyLike) -> InstalledVersion:
        path = self.version_dir(model, version)
        if not path.is_dir():
            raise StoreError(
                f"version {version} of model {model} is not installed in {self.root}",
                f"install it first (edgefleet-agent install DIR, or pull it); installed: "
                f"{', '.join(self.versions(model)) or 'none'}",
            )
        manifest = verify_version_dir(path, key, model=model, version=version)
        if self.options.refuse_development_keys:
            refuse_development_signed(manifest, str(path))
        return InstalledVersion(
            model, version, path, manifest, sha256_bytes((path / MANIFEST_FILE).read_bytes())
        )

    def _same_as_installed(self, src_dir: Path, target: Path, manifest: Manifest) -> Manifest:
        try:
            installed_raw = (target / MANIFEST_FILE).read_bytes()
        except FileNotFoundError:
            installed_raw = b""
        if installed_raw == (src_dir / MANIFEST_FILE).read_bytes():
            log.info("%s %s is already installed", manifest.model, manifest.version)
            return manifest
        raise StoreError(
            f"version {manifest.version} of model {manifest.model} is already installed in {target} with "
            "different content",
            "versions are immutable: publish the change as a new version, or remove the installed one first "
            "if it is neither current nor previous",
        )

    def _read_refused(self, model: str) -> list[Refusal]:
        path = self.model_dir(model) / REFUSED_FILE
        try:
            return list(parse_refusals(path.read_bytes()))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:
            log.warning("ignoring unreadable refusal list %s: %s", path, error)
            return []

    @contextmanager
    def _lock(self, model: str) -> Iterator[None]:
        model_dir = self.model_dir(model)
        model_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(
            model_dir / LOCK_FILE,
            timeout_s=self.options.lock_timeout_s,
            what=f"model {model} in store {self.root}",
            error_type=StoreError,
        ):
            yield


def _checked_name(model: str) -> str:
    try:
        return check_name("model", model)
    except ValueError as error:
        raise StoreError(str(error), "use the model name from the release manifest") from None


def _state_name(name: str) -> str:
    if not name.startswith(".") or "/" in name or name in {".", ".."}:
        raise StoreError(f"state file name {name!r} is not a hidden plain name", "use a name like .channel.json")
    return name


def _checked_version(version: str) -> str:
    try:
        return check_version(version)
    except ValueError as error:
        raise StoreError(str(error), "use a version from the release manifest, e.g. 1.0.0") from None

