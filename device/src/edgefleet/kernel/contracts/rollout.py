"""A staged rollout in a channel pointer (`edgefleet.channel/3`): which share of the fleet takes the new version.

The pointer's own `version` and `manifest_sha256` name the new version; its `rollout` block names the rollout,
the version it replaces (with that version's manifest sha256, so a device sent back verifies what it gets) and
the share of the fleet it applies to, in basis points (0..10000, hawkBit's and AWS IoT Jobs' "percentage of
targets" with two decimals: 1 bp = 0.01 %).

A device is in the share when the stable hash of (rollout id, device id) falls below it
(`in_share`): `sha256(rollout_id + ":" + device_id)`, its first 8 bytes as a big-endian integer, mod 10000.
The bucket of a device never changes during a rollout, so raising the share only adds devices; a device
outside the share stays on (or goes back to) `replaces`. Pure: devices and pipelines compute the same.

A shadow wave (issue 25) is the same block with `shadow_bp`: the devices in that share (the same hash) and not in
`share_bp` download and verify the pointer's version as for an activation and run it as their *shadow* beside
`replaces`, never activating it (`shadow_candidate`). The pull rollout signs `share_bp` 0 with `shadow_bp` its
first wave's share, so the devices that shadow are those its first wave moves. Absent (None), the block and its
signed bytes are what they were without it; a reader that ignores the field sees share 0 (everybody on
`replaces`), and agents reading only schema 2 refuse the whole pointer: neither activates the candidate.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.kernel.contracts.names import ModelVersion, SafeName

SHARE_BP_FULL = 10_000
"""The whole fleet, in basis points (100.00 %)."""
_HASH_BYTES = 8

ShareBp = Annotated[int, Field(ge=0, le=SHARE_BP_FULL)]
"""A share of the fleet in basis points: 0 (nobody) .. 10000 (everybody); 100 bp = 1 %."""

class RolloutStage(BaseModel):
    """The `rollout` block of a schema 3 channel pointer (the new version is the pointer's `version`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: SafeName = Field(description="the rollout id, as in the rollout record (`rollouts/<id>.json`)")
    replaces: ModelVersion = Field(description="the version devices outside the share run (or go back to)")
    replaces_manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    share_bp: ShareBp = Field(description="the share of the fleet on the new version, in basis points")
    shadow_bp: ShareBp | None = Field(
        default=None, description="the share of the fleet running the new version as a shadow beside `replaces` "
                                  "(never activated), in basis points; devices in `share_bp` run it for real")


def cohort_bucket(rollout_id: str, device_id: str) -> int:
    """The device's bucket in this rollout, 0..9999: stable for the pair, independent across rollouts."""
    digest = hashlib.sha256(f"{rollout_id}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:_HASH_BYTES], "big") % SHARE_BP_FULL


def in_share(rollout_id: str, device_id: str, share_bp: int) -> bool:
    """True when the device takes the rollout's new version at `share_bp` (monotone in `share_bp`)."""
    return cohort_bucket(rollout_id, device_id) < share_bp


def shadow_candidate(stage: RolloutStage, device_id: str) -> bool:
    """True when the device runs the rollout's new version as its shadow: in `shadow_bp`, not in `share_bp`."""
    return (stage.shadow_bp is not None and in_share(stage.id, device_id, stage.shadow_bp)
            and not in_share(stage.id, device_id, stage.share_bp))


def percent_to_bp(percent: float) -> int:
    """A share given in percent (e.g. 12.5) in basis points (1250), rounded to the nearest basis point."""
    return round(percent * SHARE_BP_FULL / 100)
