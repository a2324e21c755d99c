"""Pull mode's shadow wave on the device (issue 25): a staged rollout's signed pointer names this device in its
shadow share (`edgefleet.device.staged.shadow_pointer`); the candidate is downloaded and verified exactly as for
an activation (`pull_fetch.download_and_install`: the pointer's manifest sha256, the release signature, every
file), named by the store's shadow pointer (`shadow_pointer.set_shadow`: signature, hashes, no refusal, the
version floor, again) and never activated. The agent's shadow runner loads it (and smoke-tests it) and reports
the pairs in its telemetry; the rollout judges them from the fleet monitor.

The decision is `pull_plan.shadow_step`'s; this module carries it out. A candidate that fails verification is
refused as a version to activate would be (`ModelStore.mark_refused`: never retried, never activated); one below
the floor is not run (nothing recorded). Outside the maintenance window nothing is downloaded or named.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import NamedTuple

from edgefleet.device.pull_fetch import download_and_install
from edgefleet.device.pull_plan import Installed, ShadowStep, shadow_step
from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.shadow_pointer import SHADOW_POINTER, clear_shadow, set_shadow
from edgefleet.device.staged import shadow_pointer
from edgefleet.device.store import ModelStore
from edgefleet.device.window import MaintenanceWindow, in_window
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import StoreError, VerificationError
from edgefleet.kernel.trust.release_keyring import Keyring, UnknownKeyError

log = logging.getLogger(__name__)


class ShadowResult(NamedTuple):
    """What a pull round did about the shadow: `outcome` is the step's action, or `refused` (verification
    failed: recorded), `not_run` (the store would not name it), `unknown_key`, `deferred` (maintenance window)."""

    outcome: str
    version: str | None = None
    reason: str = ""

    @property
    def refused(self) -> bool:
        return self.outcome in ("refuse", "refused")


class ShadowInputs(NamedTuple):
    """The round's view beside the pointer: the device, its floor, and what it asked of the shadow."""

    device_id: str | None
    floor: str | None
    enabled: bool
    retry_refused: bool
    window: MaintenanceWindow | None
    now: datetime


def follow_shadow(registry: RegistryReader, store: ModelStore, signed: ChannelPointer, key: Keyring,
                  inputs: ShadowInputs) -> ShadowResult:
    """Brings the store's shadow pointer to what the accepted, signed pointer asks of this device."""
    model = signed.model
    wanted = shadow_pointer(signed, inputs.device_id)
    current = store.current(model)
    installed = None
    if wanted is not None:
        try:
            installed = store.installed(model, wanted.version)
        except VerificationError as error:  # a damaged installed copy: refused, as a failed download is
            return _refused(store, wanted, error.message)
    step = shadow_step(
        wanted, rollout_version=signed.version if signed.rollout is not None else None,
        shadow=store.pointer(model, SHADOW_POINTER), current=current.version if current else None,
        installed=Installed(installed.version, installed.manifest_sha256) if installed else None,
        floor=inputs.floor,
        refusal=store.refusal(model, wanted.version, wanted.manifest_sha256) if wanted is not None else None,
        retry_refused=inputs.retry_refused, enabled=inputs.enabled)
    if step.action in ("set", "download") and not in_window(inputs.window, inputs.now):
        return ShadowResult("deferred", wanted.version if wanted else None,
                            "the shadow candidate waits for this device's maintenance window")
    return _carry_out(registry, store, model, step, wanted, key)


def _carry_out(registry: RegistryReader, store: ModelStore, model: str, step: ShadowStep,
               wanted: ChannelPointer | None, key: Keyring) -> ShadowResult:
    version = wanted.version if wanted is not None else None
    if step.action == "clear":
        clear_shadow(store, model)
        log.info("%s", step.reason)
        return ShadowResult("clear", None, step.reason)
    if step.action == "refuse":
        assert wanted is not None
        return _refused(store, wanted, step.reason)
    if step.action not in ("set", "download"):
        return ShadowResult(step.action, version, step.reason)
    assert wanted is not None
    try:
        if step.action == "download":
            download_and_install(registry, store, wanted, key)
        set_shadow(store, wanted.model, wanted.version)
    except UnknownKeyError as error:  # this device lacks the key (yet): tried again next round, never refused
        return ShadowResult("unknown_key", version, error.message)
    except VerificationError as error:
        return _refused(store, wanted, error.message)
    except StoreError as error:  # the store would not name it (e.g. a floor raised meanwhile): not run
        return ShadowResult("not_run", version, error.message)
    log.info("shadow candidate %s %s named (never activated)", wanted.model, wanted.version)
    return ShadowResult(step.action, version, step.reason)


def _refused(store: ModelStore, wanted: ChannelPointer, reason: str) -> ShadowResult:
    store.mark_refused(wanted.model, wanted.version, wanted.manifest_sha256, f"shadow candidate: {reason}")
    log.warning("refused shadow candidate %s %s: %s", wanted.model, wanted.version, reason)
    return ShadowResult("refused", wanted.version, reason)
