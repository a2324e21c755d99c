"""The version floor of each model on a device: the highest version it activated, whichever way.

A channel pointer may not take a device below its floor unless the pointer is a signed downgrade
(`edgefleet.device.trust.pointers.judge_pointer`). The floor is a fact of the store, not of pull mode: every
activation raises it (`ModelStore.activate` / `rollback`: a push rollout's `edgefleet-agent install
--activate`, an operator's `activate`, pull mode), so a device that got its versions by push, or from an
agent older than this record, has a floor too. Only activating a signed downgrade pointer lowers it.

An operator's `edgefleet-agent activate/rollback` over SSH changes what runs, never lowers the floor: after
rolling a device back from 1.1.0 to 1.0.0 by hand it still refuses a channel pointer below 1.1.0 that is
not a signed downgrade (a pointer naming the running 1.0.0 moves nothing and is not refused).

Kept in `models/<model>/.floor.json`. A store without it (written by an older agent) has the floor of its
`current` version: not the highest installed one (a version staged by a halted rollout was never run), not
`previous` (a rollback by hand and a followed downgrade look the same there). Pure, but for the bytes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgefleet.kernel.contracts.layout import version_sort_key
from edgefleet.kernel.contracts.names import ModelVersion
from edgefleet.kernel.errors import StoreError

FLOOR_FILE = ".floor.json"
FLOOR_SCHEMA = "edgefleet.floor/1"
MAX_FLOOR_BYTES = 4096
"""A floor record is a hundred bytes; anything larger is not one."""

FloorReason = Literal["activated", "signed downgrade"]


class FloorRecord(BaseModel):
    """`models/<model>/.floor.json`: the model's floor and when the device set it (its own clock)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: Literal["edgefleet.floor/1"] = Field(default=FLOOR_SCHEMA, alias="schema")
    version: ModelVersion
    reason: FloorReason
    since: datetime = Field(description="when the device set this floor (a downgrade signed before is stale)")


class VersionFloor(NamedTuple):
    """The floor a channel pointer is judged against."""

    version: str
    since: datetime | None
    """When the device set it; None when derived from a store without a record (older agent)."""


def highest(*versions: str | None) -> str | None:
    """The highest of the given versions (semantic order), ignoring None; None when there is none."""
    present = [version for version in versions if version is not None]
    return max(present, key=version_sort_key) if present else None


def next_floor(recorded: FloorRecord | None, derived: str | None, activated: str, *, signed_downgrade: bool,
               now: datetime) -> FloorRecord:
    """The record after activating `activated`: the higher of the floor and `activated`, or exactly
    `activated` when a signed downgrade pointer asked for it (pure)."""
    if signed_downgrade:
        if recorded is not None and (recorded.version, recorded.reason) == (activated, "signed downgrade"):
            return recorded
        return FloorRecord(version=activated, reason="signed downgrade", since=now)
    floor = recorded.version if recorded is not None else derived
    if recorded is not None and highest(floor, activated) == floor:
        return recorded
    top = highest(floor, activated)
    assert top is not None
    return FloorRecord(version=top, reason="activated", since=now)


def parse_floor(data: bytes | None, *, source: str) -> FloorRecord | None:
    """Reads a floor file's bytes (None: no record, a store from an older agent).

    Raises:
        StoreError: the record is damaged (refusing is safer than forgetting the floor).
    """
    if data is None:
        return None
    try:
        return FloorRecord.model_validate_json(data)
    except ValidationError as error:
        raise StoreError(
            f"version floor record {source} is damaged ({error.errors()[0]['msg']})",
            "restore it, or remove it: the floor is then the current version's (check the store first)",
        ) from error


def floor_bytes(record: FloorRecord) -> bytes:
    return record.model_dump_json(by_alias=True, indent=2).encode() + b"\n"
