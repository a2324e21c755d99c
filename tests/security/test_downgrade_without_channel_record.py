"""Issue 20 item 3: downgrade where there is no channel record. A device that got its versions by push
rollout (`edgefleet-agent install --activate` over SSH) has no `models/<model>/.channel.json`; a replayed
old signed pointer used to activate the old version ("activated birds 1.0.0 (was 1.1.0)"). The version
floor now comes from what the device activated, whichever way; only a signed downgrade goes below it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from edgefleet.device.cli import app
from edgefleet.device.pull import pull_channel_once
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import LocalRegistryWriter
from tests.device.store_fixtures import Keys, VersionFactory
from tests.device.test_pull import overwrite_object
from tests.security.test_downgrade_by_replay import KEY, replay_refused


def release(
    registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, version: str
) -> tuple[Path, bytes]:
    """Publishes `version` and points stable at it with a signed pointer; returns the version directory (what
    a rollout copies to devices) and the pointer's bytes (the copy an attacker keeps)."""
    directory = make_version("birds", version)
    registry.publish_version("birds", version, directory)
    registry.promote("birds", version, "stable", signing_key=keys.private)
    data = registry._read_bytes(KEY)
    assert data is not None
    return directory, data


def push(store: ModelStore, directory: Path, *, activate: bool = True) -> None:
    """What the rollout runs on the device over SSH."""
    args = ["install", str(directory), "--root", str(store.root)] + (["--activate"] if activate else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def pushed_to_1_1_0(
    registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys,
    *, activate_1_0_0: bool = True,
) -> bytes:
    """The registry's stable channel went 1.0.0 -> 1.1.0 (signed); the device got both by push, never
    pulled. Returns the old 1.0.0 pointer (what an attacker with write access kept)."""
    first, old = release(registry, make_version, keys, "1.0.0")
    push(store, first, activate=activate_1_0_0)
    push(store, release(registry, make_version, keys, "1.1.0")[0])
    assert store.read_model_file("birds", ".channel.json") is None  # no channel record: never pulled
    return old


def test_replayed_old_pointer_on_a_push_installed_device_is_refused(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    old = pushed_to_1_1_0(local_registry, store, make_version, keys)
    result = replay_refused(local_registry, store, old, "lower than 1.1.0", keeps="1.1.0")

    assert not result.changed and "not a signed downgrade" in result.reason


def test_pointer_naming_an_installed_never_activated_lower_version_is_refused(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    old = pushed_to_1_1_0(local_registry, store, make_version, keys, activate_1_0_0=False)
    replay_refused(local_registry, store, old, keeps="1.1.0")


def test_operator_rollback_over_ssh_works_and_does_not_lower_the_floor(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    old = pushed_to_1_1_0(local_registry, store, make_version, keys)
    result = CliRunner().invoke(app, ["rollback", "birds", "--root", str(store.root)])
    assert result.exit_code == 0, result.output
    assert store.current("birds").version == "1.0.0"
    assert store.floor("birds").version == "1.1.0"

    # A replayed pointer naming what runs moves nothing; the channel's own 1.1.0 is followed again.
    overwrite_object(local_registry, KEY, old)
    assert pull_channel_once(local_registry, store, "birds", "stable").outcome == "unchanged"
    local_registry.promote("birds", "1.1.0", "stable", signing_key=keys.private)
    assert pull_channel_once(local_registry, store, "birds", "stable").version == "1.1.0"
    assert store.current("birds").version == "1.1.0"


def test_replayed_lower_pointer_after_an_operator_rollback_is_refused(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    """Below the running version after a rollback: the floor (1.1.0) still holds."""
    ancient = release(local_registry, make_version, keys, "0.9.0")[1]
    push(store, release(local_registry, make_version, keys, "1.0.0")[0])
    push(store, release(local_registry, make_version, keys, "1.1.0")[0])
    assert CliRunner().invoke(app, ["rollback", "birds", "--root", str(store.root)]).exit_code == 0

    replay_refused(local_registry, store, ancient, keeps="1.0.0")


def test_signed_downgrade_is_followed_on_a_push_installed_device_and_lowers_the_floor(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    old = pushed_to_1_1_0(local_registry, store, make_version, keys)
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private, downgrade=True)

    result = pull_channel_once(local_registry, store, "birds", "stable")

    assert (result.outcome, result.version) == ("activated", "1.0.0")
    assert store.floor("birds").version == "1.0.0"
    overwrite_object(local_registry, KEY, old)  # the older 1.0.0 pointer: a lower counter, still refused
    assert pull_channel_once(local_registry, store, "birds", "stable").outcome == "pointer_refused"


def test_an_old_signed_downgrade_replayed_after_a_push_is_refused(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    """Without a channel record there is no counter to compare: a signed downgrade (1.1.0 -> 1.0.0) that was
    real once is replayed after the device was pushed to 1.2.0. A downgrade signed before the device set its
    floor cannot have been meant for it."""
    pushed_to_1_1_0(local_registry, store, make_version, keys)
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private, downgrade=True)
    old_downgrade = local_registry._read_bytes(KEY)
    assert old_downgrade is not None
    push(store, release(local_registry, make_version, keys, "1.2.0")[0])
    replay_refused(local_registry, store, old_downgrade, "replayed old downgrade", keeps="1.2.0")


def test_a_downgrade_re_signed_by_the_schedule_is_still_as_old_as_its_move(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    """The path beside: the channel still holds that downgrade when the scheduled re-signing renews it (a week
    before expiry). Re-signing is not a move: the renewed pointer keeps the move's time, so the device pushed
    to 1.2.0 since still refuses it (before, the renewal's fresh time made it look newer than the push)."""
    from datetime import timedelta

    pushed_to_1_1_0(local_registry, store, make_version, keys)
    moved = local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private, downgrade=True)
    newer = make_version("birds", "1.2.0")  # a rollout by version: pushed, the channel not moved
    local_registry.publish_version("birds", "1.2.0", newer)
    push(store, newer)
    renewed = local_registry.resign_channel("birds", "stable", keys.private, validity=timedelta(days=14))
    assert renewed.downgrade and renewed.counter > moved.counter

    result = pull_channel_once(local_registry, store, "birds", "stable")

    assert result.outcome == "pointer_refused" and "replayed old downgrade" in result.reason
    assert store.current("birds").version == "1.2.0"
    assert renewed.updated_at == moved.updated_at
