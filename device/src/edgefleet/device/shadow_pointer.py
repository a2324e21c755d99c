"""The store's shadow pointer (issue 25): `models/<model>/shadow`, a symlink like `current` and `previous`,
naming the installed version the agent runs beside `current` without acting on its answers
(`edgefleet.device.agent.shadow` runs it). Set by `edgefleet-agent shadow MODEL VERSION` (the SSH rollout) or
by the pull poller (`edgefleet.device.pull_shadow`); light (no runtime imports), so the poller can use it.
"""

from __future__ import annotations

import logging

from edgefleet.device.store import ModelStore
from edgefleet.device.store_reader import InstalledVersion
from edgefleet.device.trust.version_bundle import verify_version_dir
from edgefleet.kernel.contracts.layout import version_sort_key
from edgefleet.kernel.errors import StoreError
from edgefleet.kernel.fsutil import switch_symlink

log = logging.getLogger(__name__)

SHADOW_POINTER = "shadow"


def shadow_version(store: ModelStore, model: str) -> InstalledVersion | None:
    """The version the `shadow` pointer names, when it names an installed one."""
    version = store.pointer(model, SHADOW_POINTER)
    return store.installed(model, version) if version is not None else None


def check_candidate(store: ModelStore, model: str, version: str) -> InstalledVersion:
    """Verifies an installed version as a candidate: signature and hashes, not refused, not below the floor.

    Raises:
        StoreError: not installed, refused, or below the model's version floor.
        VerificationError: its files do not verify.
    """
    installed = store.installed(model, version)
    if installed is None:
        raise StoreError(f"{model} {version} is not installed, so it cannot run as the shadow",
                         "install it first: edgefleet-agent install VERSION_DIR (without --activate)")
    verify_version_dir(installed.path, store.public_key, refuse_development=store.options.refuse_development_keys)
    refusal = store.refusal(model, version, installed.manifest_sha256)
    if refusal is not None:
        raise StoreError(f"{model} {version} was refused on this device ({refusal.reason})",
                         "release a fixed version and shadow that one")
    floor = store.floor(model)
    if floor is not None and version_sort_key(version) < version_sort_key(floor.version):
        raise StoreError(f"{model} {version} is below this device's version floor {floor.version}: it could never "
                         "be activated here", "shadow a version at or above the floor")
    return installed


def set_shadow(store: ModelStore, model: str, version: str) -> InstalledVersion:
    """Names `version` as the candidate the agent runs beside `current` (`check_candidate` first)."""
    installed = check_candidate(store, model, version)
    switch_symlink(store.model_dir(model) / SHADOW_POINTER, version)
    log.info("%s %s is the shadow candidate", model, version)
    return installed


def clear_shadow(store: ModelStore, model: str) -> bool:
    """Removes the shadow pointer; True when there was one."""
    link = store.model_dir(model) / SHADOW_POINTER
    if not link.is_symlink():
        return False
    link.unlink()
    return True
