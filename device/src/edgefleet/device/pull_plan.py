"""Pull mode's decisions, pure: what one round does once the channel pointer was accepted.

`edgefleet.device.pull.pull_channel_once` reads the registry and the store, asks `plan_round` (`next_step`, then
the maintenance window) and carries the step out. The pointer itself is judged before
(`edgefleet.device.trust.pointers.assess_pointer`; `pointer_outcome` names a refused one).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NamedTuple

from edgefleet.device.floor import highest
from edgefleet.device.trust.pointers import Judgement
from edgefleet.device.window import MaintenanceWindow, in_window, next_window_start
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.refusal import Refusal

Outcome = Literal[
    "activated", "unchanged", "no_channel", "refused", "previously_refused", "pointer_refused", "expired",
    "unknown_key",
    "deferred",
]
"""`pointer_refused`: the channel pointer itself was refused (bad signature, replayed, a lower version that
is not a signed downgrade, unsigned where signed pointers are required, valid for too long); `expired`: the
signed pointer expired; `unknown_key`: the version is signed by a key this device's release keyring does not
hold (yet); `deferred`: a new version waits for the device's maintenance window. Each keeps the device on what
it runs and records nothing as refused (a newer valid pointer, or the key once installed, is taken at the next
poll)."""

Action = Literal["keep", "lower_floor", "skip", "refuse", "activate", "download", "defer"]
"""keep: already current, remember the pointer; lower_floor: already current, and the pointer is a signed
downgrade below the floor; skip: refused before, not retried; refuse: refuse now (and remember it);
activate: installed, make it current; download: fetch, verify, install, then activate; defer: activate or
download, but outside the device's maintenance window: nothing is downloaded, changed or recorded."""


class Installed(NamedTuple):
    """A version in the store, as the plan needs it."""

    version: str
    manifest_sha256: str


class PullStep(NamedTuple):
    action: Action
    reason: str = ""


class StoreState(NamedTuple):
    """What the device holds as it takes an accepted pointer (what `next_step` weighs beside the pointer)."""

    current: Installed | None
    """The active version."""
    installed: Installed | None
    """The store's copy of the version the pointer names, if there."""
    floor: str | None
    """The device's floor (store record and channel record together)."""
    refusal: Refusal | None
    """The store's refusal of the named version, if any."""
    retry_refused: bool = False
    """Try a refused version again."""


def next_step(pointer: ChannelPointer, held: StoreState) -> PullStep:
    """What to do about an accepted pointer, given what the store holds."""
    model, version, channel = pointer.model, pointer.version, pointer.channel
    current, installed, floor, refusal = held.current, held.installed, held.floor, held.refusal
    if current is not None and (current.version, current.manifest_sha256) == (version, pointer.manifest_sha256):
        if pointer.downgrade and floor is not None and highest(floor, version) != version:
            return PullStep("lower_floor", f"{model} {version} is current; the signed downgrade lowers the floor")
        return PullStep("keep", f"{model} {version} is already current")
    if refusal is not None and not held.retry_refused:
        return PullStep("skip", f"{model} {version} was refused earlier: {refusal.reason}")
    if installed is not None and installed.manifest_sha256 != pointer.manifest_sha256:
        return PullStep(
            "refuse",
            f"the installed {model} {version} has manifest sha256 {installed.manifest_sha256[:16]}..., "
            f"channel {channel} names {pointer.manifest_sha256[:16]}...: versions are immutable, so one of "
            "them was altered",
        )
    return PullStep("activate" if installed is not None else "download")


def plan_round(pointer: ChannelPointer, held: StoreState, *, window: MaintenanceWindow | None,
               now: datetime) -> PullStep:
    """`next_step`, deferred to the device's maintenance window when it would download or activate outside it."""
    step = next_step(pointer, held)
    if step.action not in ("activate", "download") or window is None or in_window(window, now):
        return step
    return PullStep("defer", f"{pointer.model} {pointer.version} waits for this device's maintenance window "
                             f"(opens {next_window_start(window, now).isoformat()})")


def pointer_outcome(judgement: Judgement) -> Outcome | None:
    """None when the round goes on with the pointer (accepted, with a version for this device); else the outcome
    of a refused pointer: `expired`, or `pointer_refused`."""
    if judgement.verdict == "accept" and judgement.target is not None:
        return None
    return "expired" if judgement.verdict == "expired" else "pointer_refused"


ShadowAction = Literal["none", "clear", "keep", "off", "skip", "below_floor", "refuse", "set", "download"]
"""What a pull round does about the shadow pointer (issue 25). none: nothing asked, nothing to clear; clear: the
shadow names the rollout's version (or the current one) and this device is no longer asked to run it; keep: it
already runs the candidate; off: asked, but this agent runs no shadows (`shadow.share` 0); skip: the candidate
was refused before; below_floor: it could never be activated here, so it is not run (not a refusal); refuse:
an installed copy with another manifest; set: installed, name it; download: fetch, verify, install, then name it.
Nothing here activates anything."""


class ShadowStep(NamedTuple):
    """What `shadow_step` decided (`PullStep`'s counterpart for the shadow pointer)."""

    action: ShadowAction
    reason: str = ""


def shadow_step(
    wanted: ChannelPointer | None,
    *,
    rollout_version: str | None,
    shadow: str | None,
    current: str | None,
    installed: Installed | None,
    floor: str | None,
    refusal: Refusal | None,
    retry_refused: bool,
    enabled: bool,
) -> ShadowStep:
    """What to do about the shadow pointer, given the accepted pointer's shadow candidate for this device.

    Args:
        wanted: the pointer naming the candidate this device should shadow (`staged.shadow_pointer`), or None.
        rollout_version: the accepted pointer's version (a staged rollout's new version).
        shadow: the version the store's shadow pointer names now.
        current: the version the device runs.
        installed: the candidate as installed here, if it is.
        floor: the device's version floor.
    """
    if wanted is None:
        if shadow is not None and shadow in (rollout_version, current):
            return ShadowStep("clear", f"no longer shadowing {shadow}")
        return ShadowStep("none")
    model, version = wanted.model, wanted.version
    if not enabled:
        return ShadowStep("off", f"asked to shadow {model} {version}, but this agent's shadow.share is 0")
    if refusal is not None and not retry_refused:
        return ShadowStep("skip", f"shadow candidate {model} {version} was refused earlier: {refusal.reason}")
    if floor is not None and highest(floor, version) != version:
        return ShadowStep("below_floor", f"shadow candidate {model} {version} is below this device's version "
                                         f"floor {floor}: it could never be activated here, so it is not run")
    if installed is not None and installed.manifest_sha256 != wanted.manifest_sha256:
        return ShadowStep("refuse", f"the installed {model} {version} has manifest sha256 "
                                    f"{installed.manifest_sha256[:16]}..., the rollout names "
                                    f"{wanted.manifest_sha256[:16]}...: versions are immutable, so one of them "
                                    "was altered")
    if shadow == version and installed is not None:
        return ShadowStep("keep", f"shadowing {model} {version}")
    return ShadowStep("set" if installed is not None else "download", f"shadowing {model} {version}")
