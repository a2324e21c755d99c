"""Issue 20 item 2: `registry resign` laundered an attacker's unsigned pointer. A bucket writer (no release key)
writes an unsigned (schema 1) pointer naming any published version; the agent refuses it and its fix text sent
the operator to re-sign the channel; `edgefleet registry resign` (and the resign-channels flow with
`convert_unsigned`) then signed whatever the pointer named. Now re-signing only renews pointers that verify;
converting an unsigned pointer is its own command (`edgefleet registry convert-unsigned`) that shows what it
will sign and refuses a version no signed pointer ever named."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.device.cli import app as agent_app
from edgefleet.device.trust.pointers import verify_pointer
from edgefleet.flows.registry import LocalRegistryWriter, RegistryWriter
from edgefleet.flows.trust.resign_channels import resign_channels
from edgefleet.kernel.contracts.layout import channel_key
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import ConflictError
from tests.device.store_fixtures import Keys, VersionFactory, publish_versions
from tests.device.test_pull import overwrite_object


def plant_unsigned(registry: RegistryWriter, version: str, channel: str = "stable") -> ChannelPointer:
    """The attack: an unsigned pointer written over the channel by someone who can write the bucket."""
    sha = registry.read_manifest("birds", version).manifest_sha256
    pointer = ChannelPointer(model="birds", channel=channel, version=version, manifest_sha256=sha)
    overwrite_object(registry, channel_key("birds", channel), pointer.to_json_bytes())
    return pointer


def plant_over_stable(registry: RegistryWriter, make_version: VersionFactory, keys: Keys, planted: str, *,
                      published: tuple[str, ...], stable: tuple[str, ...]) -> ChannelPointer:
    """The attack's setting: `published` versions, stable moved through `stable` with signed pointers, then the
    unsigned pointer to `planted` written over it (`plant_unsigned`)."""
    publish_versions(registry, make_version, *published)
    for version in stable:
        registry.promote("birds", version, "stable", signing_key=keys.private)
    return plant_unsigned(registry, planted)


def cli(registry: LocalRegistryWriter, keys: Keys, *args: str, input: str | None = None):
    return CliRunner().invoke(app, ["registry", *args, "--registry", str(registry.root), "--signing-key",
                                    str(keys.private_file)], input=input)


def test_resign_by_default_leaves_an_unsigned_pointer_unsigned(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    planted = plant_over_stable(local_registry, make_version, keys, "0.9.0", published=("0.9.0", "1.0.0"),
                                stable=("1.0.0",))  # 0.9.0 was never on a channel

    (result,) = resign_channels(local_registry, keys.private, validity=timedelta(days=14))
    assert result.outcome == "skipped_unsigned" and "convert-unsigned" in result.detail
    assert local_registry.read_channel("birds", "stable").pointer == planted  # not signed, not changed

    done = cli(local_registry, keys, "resign")
    assert "skipped_unsigned" in done.output, done.output
    assert local_registry.read_channel("birds", "stable").pointer == planted


def test_convert_unsigned_refuses_a_version_no_signed_pointer_named(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    planted = plant_over_stable(local_registry, make_version, keys, "0.9.0", published=("0.9.0", "1.0.0"),
                                stable=("1.0.0",))

    refused = cli(local_registry, keys, "convert-unsigned", "birds", "--channel", "stable", "--yes")
    assert refused.exit_code != 0
    assert "no signed pointer ever named" in refused.output and "0.9.0" in refused.output, refused.output
    assert "registry promote" in refused.output  # the way: name the version yourself, with the release key
    assert local_registry.read_channel("birds", "stable").pointer == planted


def test_convert_unsigned_shows_what_it_signs_and_asks(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    planted = plant_over_stable(local_registry, make_version, keys, "1.1.0", published=("1.0.0", "1.1.0"),
                                stable=("1.0.0", "1.1.0"))  # named by the channel's signed pointer before: convertible

    declined = cli(local_registry, keys, "convert-unsigned", "birds", "--channel", "stable", input="n\n")
    for shown in ("birds", "stable", "1.1.0", planted.manifest_sha256):
        assert shown in declined.output, declined.output
    assert declined.exit_code != 0
    assert local_registry.read_channel("birds", "stable").pointer == planted

    done = cli(local_registry, keys, "convert-unsigned", "birds", "--channel", "stable", input="y\n")
    assert done.exit_code == 0, done.output
    pointer = local_registry.read_channel("birds", "stable").pointer
    assert pointer.signed and (pointer.version, pointer.manifest_sha256) == ("1.1.0", planted.manifest_sha256)
    verify_pointer(keys.public, pointer, source="test")


@pytest.mark.parametrize("planted_version, other_channel", [("1.0.0", None), ("1.2.0", "canary")],
                         ids=["lower-than-the-channel", "named-only-on-another-channel"])
def test_convert_unsigned_refuses_a_downgrade_or_another_channels_version(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys,
    planted_version: str, other_channel: str | None,
) -> None:
    """The paths beside: a bucket writer plants an older version stable once named (signing it would be a
    downgrade without the flag), or a version only canary ever named (never judged for stable)."""
    publish_versions(local_registry, make_version, "1.0.0", "1.1.0", "1.2.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    local_registry.promote("birds", "1.1.0", "stable", signing_key=keys.private)
    local_registry.promote("birds", "1.2.0", "canary", signing_key=keys.private)
    planted = plant_unsigned(local_registry, planted_version)

    refused = cli(local_registry, keys, "convert-unsigned", "birds", "--channel", "stable", "--yes")

    assert refused.exit_code != 0
    assert ("lower than 1.1.0" if other_channel is None else "no signed pointer ever named on channel stable") in \
        " ".join(refused.output.split()), refused.output
    assert local_registry.read_channel("birds", "stable").pointer == planted


def test_the_agents_fix_text_does_not_send_the_operator_to_resign_an_unsigned_pointer(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, tmp_path: Path
) -> None:
    plant_over_stable(local_registry, make_version, keys, "1.0.0", published=("1.0.0",), stable=("1.0.0",))
    root = tmp_path / "agent"
    (root / "keys").mkdir(parents=True)
    (root / "keys" / "release.pub").write_bytes(keys.public_file.read_bytes())
    refused = CliRunner().invoke(agent_app, ["pull", "--registry", str(local_registry.root), "--model", "birds",
                                             "--channel", "stable", "--root", str(root), "--require-signed"])
    assert refused.exit_code != 0
    fix = " ".join(refused.output.split())
    assert "never re-sign it" in fix and "edgefleet registry promote" in fix, refused.output


def test_a_history_entry_written_by_a_bucket_writer_does_not_make_a_version_convertible(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, other_keys: Keys
) -> None:
    from edgefleet.flows.registry.history import history_key
    from edgefleet.flows.trust.pointer_signing import sign_pointer

    planted = plant_over_stable(local_registry, make_version, keys, "0.9.0", published=("0.9.0", "1.0.0"),
                                stable=("1.0.0",))
    history = local_registry.get_json(history_key("birds"))
    assert [entry["version"] for entry in history["pointers"]] == ["1.0.0"]  # what the release key signed
    forged = sign_pointer(other_keys.private, model="birds", channel="stable", version="0.9.0",
                          manifest_sha256=planted.manifest_sha256, previous=None)
    history["pointers"] += [forged.model_dump(mode="json", by_alias=True),
                            planted.model_dump(mode="json", by_alias=True)]
    local_registry.put_json(history_key("birds"), history)

    refused = cli(local_registry, keys, "convert-unsigned", "birds", "--channel", "stable", "--yes")
    assert refused.exit_code != 0 and "no signed pointer ever named" in refused.output, refused.output
    assert local_registry.read_channel("birds", "stable").pointer == planted


def test_the_history_keeps_one_entry_per_move_and_is_bounded(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    from edgefleet.flows.registry import history

    publish_versions(local_registry, make_version, "1.0.0", "1.1.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    for _ in range(3):  # the daily renewals of one move: one entry, the newest
        local_registry.resign_channel("birds", "stable", keys.private)
    entries = local_registry.get_json(history.history_key("birds"))["pointers"]
    assert len(entries) == 1 and entries[0]["counter"] == local_registry.read_channel("birds", "stable").pointer.counter
    for channel in ("stable", "canary"):
        local_registry.promote("birds", "1.1.0", channel, signing_key=keys.private)
    entries = local_registry.get_json(history.history_key("birds"))["pointers"]
    newest = local_registry.read_channel("birds", "canary").pointer
    bounded = history.merged(entries, newest.model_copy(update={"channel": "beta"}), limit=2)
    assert [(e["channel"], e["version"]) for e in bounded] == [("canary", "1.1.0"), ("beta", "1.1.0")]


def test_conversion_signs_exactly_what_was_shown_on_both_backends(
    registry: RegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    """The pointer changes between showing and signing (the attacker swaps it once the operator said yes):
    the compare-and-swap refuses, nothing is signed."""
    from edgefleet.flows.trust.convert_unsigned import convert_unsigned, plan_conversion

    plant_over_stable(registry, make_version, keys, "1.0.0", published=("0.9.0", "1.0.0"),
                      stable=("1.0.0",))
    plan = plan_conversion(registry, "birds", "stable", keys.private)
    assert (plan.version, [p.channel for p in plan.named_before]) == ("1.0.0", ["stable"])
    swapped = plant_unsigned(registry, "0.9.0")
    with pytest.raises(ConflictError):
        convert_unsigned(registry, plan, keys.private, validity=timedelta(days=14), by="test")
    assert registry.read_channel("birds", "stable").pointer == swapped

    plant_unsigned(registry, "1.0.0")
    pointer = convert_unsigned(registry, plan_conversion(registry, "birds", "stable", keys.private), keys.private,
                               validity=timedelta(days=14), by="test")
    assert pointer.signed and pointer.counter > plan.highest_on_channel.counter
    verify_pointer(keys.public, registry.read_channel("birds", "stable").pointer, source="test")
