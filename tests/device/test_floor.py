"""The version floor: raised by every activation (push, pull, by hand), never lowered by a rollback, set
by a signed downgrade; derived from `current` for a store an older agent left; damaged records refuse
pull mode but never block a switch. And pull mode's pure plan."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from edgefleet.device.floor import FLOOR_FILE, FloorRecord, highest, next_floor
from edgefleet.device.pull_plan import Installed, StoreState, next_step
from edgefleet.device.store import ModelStore
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import StoreError

from .store_fixtures import VersionFactory, activate_versions

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
T1 = datetime(2026, 12, 2, tzinfo=timezone.utc)
SHA = "ab" * 32


def test_highest_orders_versions_numerically() -> None:
    assert highest("1.9.0", None, "1.10.0") == "1.10.0"
    assert highest(None) is None


def test_next_floor_rises_keeps_and_is_set_by_a_signed_downgrade_only() -> None:
    first = next_floor(None, None, "1.0.0", signed_downgrade=False, now=T0)
    assert (first.version, first.reason) == ("1.0.0", "activated")
    assert next_floor(first, None, "0.9.0", signed_downgrade=False, now=T1) is first  # a rollback keeps it
    assert next_floor(first, None, "1.1.0", signed_downgrade=False, now=T1).version == "1.1.0"
    down = next_floor(first, None, "0.9.0", signed_downgrade=True, now=T1)
    assert (down.version, down.reason, down.since) == ("0.9.0", "signed downgrade", T1)
    # no record yet (an older agent's store): the current version it had is the floor to raise from
    assert next_floor(None, "2.0.0", "1.0.0", signed_downgrade=False, now=T0).version == "2.0.0"


def test_every_activation_raises_the_floor_and_a_rollback_keeps_it(
    store: ModelStore, make_version: VersionFactory
) -> None:
    assert store.floor("birds") is None
    activate_versions(store, make_version, "1.0.0", "1.1.0")
    assert store.floor("birds").version == "1.1.0"
    store.rollback("birds")
    assert (store.current("birds").version, store.floor("birds").version) == ("1.0.0", "1.1.0")
    store.activate("birds", "1.0.0", signed_downgrade=True)
    assert store.floor_record("birds").reason == "signed downgrade"
    assert store.floor("birds").version == "1.0.0"


def test_a_store_without_a_record_has_the_floor_of_its_current_version(
    store: ModelStore, make_version: VersionFactory
) -> None:
    for version in ("1.0.0", "2.0.0", "1.5.0"):
        store.install(make_version("birds", version))
    store.activate("birds", "1.5.0")
    (store.model_dir("birds") / FLOOR_FILE).unlink()  # as an older agent left it
    floor = store.floor("birds")
    assert (floor.version, floor.since) == ("1.5.0", None)  # not 2.0.0: installed, never run


def test_a_damaged_floor_refuses_pull_mode_but_never_blocks_a_switch(
    store: ModelStore, make_version: VersionFactory
) -> None:
    activate_versions(store, make_version, "1.0.0", "1.1.0")
    (store.model_dir("birds") / FLOOR_FILE).write_text("{not json")
    with pytest.raises(StoreError, match="damaged") as caught:
        store.floor("birds")
    assert "remove it" in caught.value.fix
    assert store.rollback("birds").version == "1.0.0"  # the agent's smoke-test restore still works
    assert (store.model_dir("birds") / FLOOR_FILE).read_text() == "{not json"  # left for a person to look at


def test_a_floor_record_is_strict() -> None:
    with pytest.raises(ValueError):
        FloorRecord.model_validate({"version": "1.0.0\n", "reason": "activated", "since": T0})


def pointer(version: str, *, downgrade: bool = False) -> ChannelPointer:
    return ChannelPointer.model_construct(model="birds", channel="stable", version=version, manifest_sha256=SHA,
                                          downgrade=downgrade)


def test_the_plan_keeps_lowers_skips_refuses_activates_or_downloads() -> None:
    current = Installed("1.0.0", SHA)
    plan = {
        "keep": next_step(pointer("1.0.0"), StoreState(current=current, installed=current, floor="1.0.0",
                                                       refusal=None)),
        "lower_floor": next_step(pointer("1.0.0", downgrade=True), StoreState(current=current, installed=current,
                                                                              floor="1.1.0", refusal=None)),
        "refuse": next_step(pointer("1.1.0"), StoreState(current=current, installed=Installed("1.1.0", "cd" * 32),
                                                         floor="1.0.0", refusal=None)),
        "activate": next_step(pointer("1.1.0"), StoreState(current=current, installed=Installed("1.1.0", SHA),
                                                           floor="1.0.0", refusal=None)),
        "download": next_step(pointer("1.1.0"), StoreState(current=None, installed=None, floor=None, refusal=None)),
    }
    assert {action: step.action for action, step in plan.items()} == {action: action for action in plan}
    assert "immutable" in plan["refuse"].reason
