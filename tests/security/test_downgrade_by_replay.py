"""Finding 1, downgrade by replay: an attacker who can write the registry (not the release key) replaces
`channels/stable.json` with an older copy. It used to make `edgefleet-agent pull` activate the older
version ("activated ... 1.0.0 (was 1.1.0)", exit 0). Channel pointers are now signed with a counter, an
expiry and a downgrade flag; the agent remembers what it accepted and refuses replays."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from edgefleet.device.cli import app
from edgefleet.device.poller import ChannelPoller
from edgefleet.device.pull import PullResult, pull_channel_once
from edgefleet.device.store import ModelStore
from edgefleet.device.trust.pointers import RECORD_FILE
from edgefleet.flows.registry import LocalRegistryWriter, RegistryWriter
from edgefleet.flows.trust.pointer_signing import sign_pointer
from edgefleet.kernel.contracts.layout import channel_key
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import ConflictError, VerificationError
from tests.device.store_fixtures import Keys, VersionFactory, publish_versions
from tests.device.test_pull import overwrite_object

KEY = channel_key("birds", "stable")


def signed_release(registry: RegistryWriter, make_version: VersionFactory, keys: Keys, version: str) -> bytes:
    """Publishes and promotes `version` with a signed pointer; returns the pointer's bytes (the copy an
    attacker keeps)."""
    publish_versions(registry, make_version, version)
    registry.promote("birds", version, "stable", signing_key=keys.private)
    data = registry._read_bytes(KEY)
    assert data is not None
    return data


def plant_unsigned_pointer(registry: RegistryWriter, version: str) -> None:
    """The attack: an unsigned (schema 1) pointer to an older version written over the channel."""
    sha = registry.read_manifest("birds", version).manifest_sha256
    pointer = ChannelPointer(model="birds", channel="stable", version=version, manifest_sha256=sha)
    overwrite_object(registry, KEY, pointer.to_json_bytes())


def assert_pointer_refused(registry: RegistryWriter, store: ModelStore, reason: str, keeps: str) -> PullResult:
    """The device's next pull refuses the channel's pointer, saying `reason`, and stays on `keeps`."""
    result = pull_channel_once(registry, store, "birds", "stable")
    assert result.outcome == "pointer_refused", result.reason
    assert reason in result.reason
    assert store.current("birds").version == keeps
    return result


def replay_refused(registry: RegistryWriter, store: ModelStore, replayed: bytes, reason: str = "", *,
                   keeps: str) -> PullResult:
    """The attack: `replayed` (the bytes of a pointer the attacker kept) is put back over the channel; then
    `assert_pointer_refused`."""
    overwrite_object(registry, KEY, replayed)
    return assert_pointer_refused(registry, store, reason, keeps)


def on_1_1_0(registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys) -> bytes:
    """The device followed stable to 1.0.0 then 1.1.0; returns the old 1.0.0 pointer."""
    old = signed_release(registry, make_version, keys, "1.0.0")
    assert pull_channel_once(registry, store, "birds", "stable").outcome == "activated"
    signed_release(registry, make_version, keys, "1.1.0")
    assert pull_channel_once(registry, store, "birds", "stable").version == "1.1.0"
    return old


def test_replayed_old_signed_pointer_is_refused(
    registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    old = on_1_1_0(registry, store, make_version, keys)
    result = replay_refused(registry, store, old, "replayed", keeps="1.1.0")  # the older, validly signed copy
    assert not result.changed
    assert store.refusals("birds") == []  # 1.0.0 itself is not blamed


def test_replay_through_the_agent_cli_exits_2_and_keeps_the_version(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    old = on_1_1_0(local_registry, store, make_version, keys)
    overwrite_object(local_registry, KEY, old)
    args = ["pull", "--registry", str(local_registry.root), "--model", "birds", "--channel", "stable"]
    result = CliRunner().invoke(app, [*args, "--root", str(store.root)])
    assert result.exit_code == 2, result.output
    assert "activated" not in result.output
    assert store.current("birds").version == "1.1.0"


def test_old_unsigned_pointer_after_a_signed_one_is_refused(
    registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    on_1_1_0(registry, store, make_version, keys)
    plant_unsigned_pointer(registry, "1.0.0")

    assert_pointer_refused(registry, store, "unsigned", keeps="1.1.0")


def test_unsigned_lower_version_is_refused_even_before_any_signed_pointer(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory
) -> None:
    """Under the transition setting (`require_signed_pointers: false`), unsigned pointers still cannot go
    below the floor."""
    for version in ("1.0.0", "1.1.0"):
        publish_versions(local_registry, make_version, version)
        local_registry.promote("birds", version, "stable")  # legacy unsigned pointers (pipelines not upgraded)
        pull_channel_once(local_registry, store, "birds", "stable", require_signed=False)
    plant_unsigned_pointer(local_registry, "1.0.0")
    result = pull_channel_once(local_registry, store, "birds", "stable", require_signed=False)
    assert result.outcome == "pointer_refused" and "not a signed downgrade" in result.reason
    assert store.current("birds").version == "1.1.0"


def test_required_signatures_refuse_unsigned_pointers(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory
) -> None:
    publish_versions(local_registry, make_version, "1.0.0")
    local_registry.promote("birds", "1.0.0", "stable")
    result = pull_channel_once(local_registry, store, "birds", "stable", require_signed=True)
    assert result.outcome == "pointer_refused"
    assert store.current("birds") is None


def test_forged_pointers_are_refused(
    registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys, other_keys: Keys
) -> None:
    """Edited fields under the old signature, and a pointer signed with another key."""
    signed_release(registry, make_version, keys, "1.0.0")
    pull_channel_once(registry, store, "birds", "stable")
    genuine = registry.read_channel("birds", "stable").pointer
    publish_versions(registry, make_version, "0.9.0")
    sha = registry.read_manifest("birds", "0.9.0").manifest_sha256
    edited = genuine.model_copy(update={"version": "0.9.0", "manifest_sha256": sha, "downgrade": True})
    overwrite_object(registry, KEY, edited.to_json_bytes())
    assert pull_channel_once(registry, store, "birds", "stable").outcome == "pointer_refused"

    foreign = sign_pointer(
        other_keys.private,
        model="birds",
        channel="stable",
        version="0.9.0",
        manifest_sha256=sha,
        previous=genuine,
        downgrade=True,
    )
    overwrite_object(registry, KEY, foreign.to_json_bytes())
    assert_pointer_refused(registry, store, "not signed by", keeps="1.0.0")


def test_expired_pointer_keeps_the_device_and_raises_one_event(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    """A frozen registry (the attacker keeps serving the last pointer) is noticed when it expires."""
    publish_versions(local_registry, make_version, "1.0.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    pull_channel_once(local_registry, store, "birds", "stable")
    publish_versions(local_registry, make_version, "1.1.0")
    # validity 0: expired at any later reading of the clock (no waiting, no timing assumption)
    local_registry.promote("birds", "1.1.0", "stable", signing_key=keys.private, validity=timedelta(0))

    result = pull_channel_once(local_registry, store, "birds", "stable")
    assert (result.changed, result.outcome) == (False, "expired")
    assert store.current("birds").version == "1.0.0"

    events: list[PullResult] = []
    poller = ChannelPoller(local_registry, store, "birds", "stable", on_refusal=events.append)
    poller.run_once()
    poller.run_once()  # the same problem again: one event, not one per poll
    assert [event.outcome for event in events] == ["expired"]
    assert store.current("birds").version == "1.0.0"


def test_signed_downgrade_is_followed_and_cannot_be_replayed_later(
    registry: RegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    on_1_1_0(registry, store, make_version, keys)
    with pytest.raises(ConflictError, match="downgrade"):
        registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)  # a lower version needs the flag
    registry.promote("birds", "1.0.0", "stable", signing_key=keys.private, downgrade=True)
    downgrade = registry._read_bytes(KEY)
    result = pull_channel_once(registry, store, "birds", "stable")
    assert (result.outcome, result.version) == ("activated", "1.0.0")

    registry.promote("birds", "1.1.0", "stable", signing_key=keys.private)
    assert pull_channel_once(registry, store, "birds", "stable").version == "1.1.0"
    replay_refused(registry, store, downgrade, keeps="1.1.0")  # the old downgrade


def test_operator_rollback_over_ssh_stays_possible(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    """`edgefleet-agent rollback` (what an operator runs over SSH) is not a channel move."""
    on_1_1_0(local_registry, store, make_version, keys)
    result = CliRunner().invoke(app, ["rollback", "birds", "--root", str(store.root)])
    assert result.exit_code == 0, result.output
    assert store.current("birds").version == "1.0.0"


def test_resign_renews_expiry_with_a_higher_counter_and_refuses_a_tampered_pointer(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    publish_versions(local_registry, make_version, "1.0.0")
    local_registry.promote("birds", "1.0.0", "stable")  # unsigned, from before the upgrade
    with pytest.raises(VerificationError, match="not signed"):  # re-signing never converts (issue 20)
        local_registry.resign_channel("birds", "stable", keys.private)
    first = local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)  # named, with the key
    assert first.signed and first.version == "1.0.0"
    second = local_registry.resign_channel("birds", "stable", keys.private, validity=timedelta(days=30))
    assert second.counter > first.counter and second.expires_at > first.expires_at
    assert pull_channel_once(local_registry, store, "birds", "stable").outcome == "activated"

    tampered = second.model_copy(update={"signature": base64.b64encode(bytes(64)).decode()})
    overwrite_object(local_registry, KEY, tampered.to_json_bytes())
    with pytest.raises(VerificationError):
        local_registry.resign_channel("birds", "stable", keys.private)


def test_damaged_channel_record_is_not_silently_forgotten(
    local_registry: LocalRegistryWriter, store: ModelStore, make_version: VersionFactory, keys: Keys
) -> None:
    on_1_1_0(local_registry, store, make_version, keys)
    (store.model_dir("birds") / RECORD_FILE).write_text("{not json")
    with pytest.raises(VerificationError, match="damaged"):
        pull_channel_once(local_registry, store, "birds", "stable")
