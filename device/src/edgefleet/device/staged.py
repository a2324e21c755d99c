"""A staged rollout as one device sees it: which version a schema 3 pointer names *for this device*. Pure.

A pointer with a `rollout` block (`edgefleet.kernel.contracts.rollout`) names two versions: the new one for
the devices in its share (`in_share` of the rollout id and the device id) and the one it replaces for the
others. `target_pointer` turns it into the pointer this device follows: the pointer itself when the device
is in the share, else a copy naming `replaces` (with its manifest sha256). That copy is a *send-back* when
`replaces` is below the device's floor (the device took the new version at a higher share, and the share was
lowered: a halted rollout): it is then marked as a signed downgrade, which the floor rule
(`edgefleet.device.trust.pointers`) allows when it was signed after the floor was set, and only when the floor is
not above the rollout's new version: a rollout sends back the devices it moved, never a device that got a
higher version some other way.

A shadow wave's pointer (`shadow_bp`) also names, for the devices in that share and not in `share_bp`, the new
version as a *shadow candidate* (`shadow_pointer`): downloaded and verified as for an activation, named by the
store's shadow pointer, never activated; the device itself follows `replaces` as any device outside the share.

The copy is never verified (its signature is the original's): the original is checked first
(`edgefleet.device.trust.pointers.assess_pointer`), and counters and replays are judged on the original.
"""

from __future__ import annotations

from typing import NamedTuple

from edgefleet.kernel.contracts.layout import version_sort_key
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.rollout import in_share, shadow_candidate


class Target(NamedTuple):
    """The pointer a device follows, and why."""

    pointer: ChannelPointer
    reason: str
    """Empty for a pointer without a rollout; else which side of the share the device is on."""
    problem: str | None = None
    """Set when the device must not follow the pointer (refused): no device id, or an illegal send-back."""


def target_pointer(pointer: ChannelPointer, device_id: str | None, floor: str | None) -> Target:
    """The pointer this device follows (see the module doc).

    Args:
        floor: the device's version floor (store record and channel record together), None when unknown.
    """
    stage = pointer.rollout
    if stage is None:
        return Target(pointer, "")
    where = f"rollout {stage.id} of {pointer.model} {pointer.version} ({stage.share_bp / 100:g} % of the fleet)"
    if device_id is None:
        return Target(pointer, where, f"{where} needs this device's id to choose a side, and none was given")
    if in_share(stage.id, device_id, stage.share_bp):
        return Target(pointer, f"{where}: this device is in the share")
    floor_key = version_sort_key(floor) if floor is not None else None
    below_floor = floor_key is not None and version_sort_key(stage.replaces) < floor_key
    back = pointer.model_copy(update={
        "version": stage.replaces, "manifest_sha256": stage.replaces_manifest_sha256, "downgrade": below_floor})
    if floor_key is not None and below_floor and floor_key > version_sort_key(pointer.version):
        return Target(back, where, f"{where} would send this device back to {stage.replaces}, but it activated "
                      f"{floor}, above the rollout's version: a rollout sends back only the devices it moved")
    side = f"sent back to {stage.replaces}" if below_floor else f"stays on {stage.replaces}"
    return Target(back, f"{where}: this device is outside the share and {side}")


def shadow_pointer(pointer: ChannelPointer, device_id: str | None) -> ChannelPointer | None:
    """The pointer naming the candidate this device runs as its shadow (the accepted pointer itself: its version
    and manifest sha256), None when the pointer asks it to shadow nothing (see the module doc)."""
    stage = pointer.rollout
    if stage is None or device_id is None or not shadow_candidate(stage, device_id):
        return None
    return pointer
