"""Changing the on-device model store: install verified, immutable versions; switch `current` / `previous`.

The layout and the read side are `edgefleet.device.store_reader`. Guarantees for a concurrent reader (the
running agent watches `current` and reads its manifest): a version directory appears in one rename after it
was copied, fsynced and verified, and never changes afterwards; a pointer changes by renaming a new symlink
over the old one. So `current` always resolves to a complete, verified directory. Writers (install,
activate, rollback, remove) serialize on a per-model lock file, and every failed operation leaves the store
as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Generator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.device.floor import FLOOR_FILE, floor_bytes, next_floor
from edgefleet.device.store_reader import InstalledVersion, StoreReader, checked_version, state_name
from edgefleet.device.trust.version_bundle import (
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    REFETCH_FIX,
    PublicKeyLike,
    check_manifest_signatures,
    sha256_bytes,
    verify_version_dir,
)
from edgefleet.kernel.contracts.layout import (
    CURRENT_POINTER,
    MANIFEST_FILE,
    PREVIOUS_POINTER,
    REFUSED_FILE,
    SIGNATURE_FILE,
)
from edgefleet.kernel.contracts.manifest import Manifest
from edgefleet.kernel.contracts.refusal import Refusal, dump_refusals
from edgefleet.kernel.errors import StoreError, VerificationError
from edgefleet.kernel.fsutil import (
    atomic_write_bytes,
    copy_regular_synced,
    file_lock,
    fsync_dir,
    read_regular,
    remove_tree_atomically,
    switch_symlink,
    temp_name,
)
from edgefleet.kernel.trust.signatures import decode_signatures

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
STAGING_DIR = ".staging"


class StoreOptions(BaseModel):
    """Tunables of a `ModelStore`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lock_timeout_s: float = Field(default=30.0, gt=0, description="wait for another writer of the same model")
    refuse_development_keys: bool = Field(
        default=False, description="refuse versions whose manifest says a development key signed them"
    )



class ModelStore(StoreReader):
    """The store's changes: install, activate, rollback, remove, refusals, each under a per-model lock.

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
        super().__init__(root, public_key)
        self.options = options or StoreOptions()

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
        manifest = verify_version_dir(src_dir, key, refuse_development=self.options.refuse_development_keys)
        model_dir = self.model_dir(manifest.model)
        model_dir.mkdir(parents=True, exist_ok=True)
        with self._lock(manifest.model):
            target = model_dir / manifest.version
            if target.exists():
                return self._same_as_installed(src_dir, target, manifest, key)
            staging = temp_name(target, "installing")
            staging.mkdir()
            try:
                sizes = {entry.name: entry.size for entry in manifest.files}
                sizes |= {MANIFEST_FILE: MAX_MANIFEST_BYTES, SIGNATURE_FILE: MAX_SIGNATURE_BYTES}
                for name, size in sizes.items():
                    copy_regular_synced(src_dir / name, staging / name, max_bytes=size, fix=REFETCH_FIX,
                                        error_type=VerificationError)
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

    def activate(
        self, model: str, version: str, public_key: PublicKeyLike | None = None, *, signed_downgrade: bool = False
    ) -> InstalledVersion:
        """Verifies an installed version again and makes it current; the old current becomes previous.

        Activating the current version changes no pointer. Every activation raises the model's version floor
        to `version` if it is higher (`edgefleet.device.floor`); `signed_downgrade` (pull mode, after a signed
        downgrade pointer was verified) sets the floor to `version` instead.

        Raises:
            StoreError: the version is not installed.
            VerificationError: its files no longer verify (pointers unchanged).
        """
        key = public_key if public_key is not None else self.public_key
        with self._lock(model):
            installed = self._verified(model, version, key)
            current = self.pointer(model, CURRENT_POINTER)
            self._move_floor(model, version, current, signed_downgrade=signed_downgrade)  # before: crash-safe
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
            self._move_floor(model, previous, current)  # a rollback never lowers the floor
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

    def adopt_signatures(self, model: str, version: str, signatures: bytes, public_key: PublicKeyLike | None = None
                         ) -> bool:
        """Replaces an installed version's `manifest.sig` by `signatures` (the registry's, after the release key
        was rotated: `edgefleet keys resign` adds the new key's signature) when they verify over the installed
        manifest with the keyring. The manifest and files never change. Returns True when replaced.

        Raises:
            VerificationError: they do not verify over the installed manifest (nothing changes).
        """
        path = self.version_dir(model, checked_version(version))
        with self._lock(model):
            raw = read_regular(path / MANIFEST_FILE, max_bytes=MAX_MANIFEST_BYTES, fix=REFETCH_FIX,
                               error_type=VerificationError)
            return self._adopt_signatures(path, raw, signatures, public_key if public_key is not None
                                          else self.public_key)

    def _adopt_signatures(self, path: Path, raw: bytes, signatures: bytes, key: PublicKeyLike) -> bool:
        source = str(path / SIGNATURE_FILE)
        try:
            current = read_regular(path / SIGNATURE_FILE, max_bytes=MAX_SIGNATURE_BYTES, fix=REFETCH_FIX,
                                   error_type=VerificationError)
        except FileNotFoundError:
            current = b""
        if current == signatures:
            return False
        check_manifest_signatures(raw, decode_signatures(signatures, source=source), key, what=f"manifest {path}")
        atomic_write_bytes(path / SIGNATURE_FILE, signatures)
        log.info("%s: signatures replaced by the registry's (release key rotation)", source)
        return True

    # --- refused versions (pull mode and the agent's smoke test) -----------------------------------

    def mark_refused(self, model: str, version: str, manifest_sha256: str, reason: str) -> Refusal:
        """Remembers that (model, version, manifest sha256) was refused, so pull mode does not retry it."""
        refusal = Refusal(version=checked_version(version), manifest_sha256=manifest_sha256, reason=reason,
                          refused_at=datetime.now(timezone.utc))
        with self._lock(model):
            others = [entry for entry in self._read_refused(model) if not entry.matches(version, manifest_sha256)]
            atomic_write_bytes(self.model_dir(model) / REFUSED_FILE, dump_refusals([*others, refusal]))
        return refusal

    def clear_refused(self, model: str) -> int:
        """Forgets the refusals of `model` (so pull mode tries those versions again); returns how many."""
        with self._lock(model):
            count = len(self._read_refused(model))
            (self.model_dir(model) / REFUSED_FILE).unlink(missing_ok=True)
        return count

    # --- small per-model state files (pull mode's channel record) -------------------------------------

    def write_model_file(self, model: str, name: str, data: bytes) -> None:
        """Replaces `models/<model>/<name>` atomically, under the model's writer lock."""
        with self._lock(model):
            atomic_write_bytes(self.model_dir(model) / state_name(name), data)

    @contextmanager
    def staging_dir(self) -> Generator[Path, None, None]:
        """A temporary directory inside the store root (same file system), removed afterwards."""
        staging_root = self.root / STAGING_DIR
        staging_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=staging_root) as temp:
            yield Path(temp)

    # --- internals ---------------------------------------------------------------------------------

    def _verified(self, model: str, version: str, key: PublicKeyLike) -> InstalledVersion:
        path = self.version_dir(model, version)
        if not path.is_dir():
            raise StoreError(
                f"version {version} of model {model} is not installed in {self.root}",
                f"install it first (edgefleet-agent install DIR, or pull it); installed: "
                f"{', '.join(self.versions(model)) or 'none'}",
            )
        manifest = verify_version_dir(path, key, model=model, version=version,
                                      refuse_development=self.options.refuse_development_keys)
        return InstalledVersion(
            model, version, path, manifest, sha256_bytes((path / MANIFEST_FILE).read_bytes())
        )

    def _move_floor(self, model: str, activated: str, current: str | None, *, signed_downgrade: bool = False) -> None:
        """Raises (or, for a signed downgrade, sets) the floor record as `activated` becomes current; called
        under the model's lock, before the pointers switch (a crash in between leaves a floor too high, which
        only refuses more)."""
        try:
            recorded = self.floor_record(model)
        except StoreError as error:  # never block a switch (the agent's smoke-test restore needs it)
            log.warning("%s; left as it is: pull mode refuses until it is fixed (%s)", error.message, error.fix)
            return
        updated = next_floor(recorded, current, activated, signed_downgrade=signed_downgrade,
                             now=datetime.now(timezone.utc))
        if updated != recorded:
            atomic_write_bytes(self.model_dir(model) / FLOOR_FILE, floor_bytes(updated))

    def _same_as_installed(self, src_dir: Path, target: Path, manifest: Manifest, key: PublicKeyLike) -> Manifest:
        def manifest_bytes(directory: Path) -> bytes:
            return read_regular(directory / MANIFEST_FILE, max_bytes=MAX_MANIFEST_BYTES, fix=REFETCH_FIX,
                                error_type=VerificationError)

        try:
            installed_raw = manifest_bytes(target)
        except FileNotFoundError:
            installed_raw = b""
        if installed_raw == manifest_bytes(src_dir):
            log.info("%s %s is already installed", manifest.model, manifest.version)
            signatures = read_regular(src_dir / SIGNATURE_FILE, max_bytes=MAX_SIGNATURE_BYTES, fix=REFETCH_FIX,
                                      error_type=VerificationError)
            self._adopt_signatures(target, installed_raw, signatures, key)  # re-signed since (key rotation)?
            return manifest
        raise StoreError(
            f"version {manifest.version} of model {manifest.model} is already installed in {target} with "
            "different content",
            "versions are immutable: publish the change as a new version, or remove the installed one first "
            "if it is neither current nor previous",
        )

    @contextmanager
    def _lock(self, model: str) -> Generator[None, None, None]:
        model_dir = self.model_dir(model)
        model_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(
            model_dir / LOCK_FILE,
            timeout_s=self.options.lock_timeout_s,
            what=f"model {model} in store {self.root}",
            error_type=StoreError,
        ):
            yield
