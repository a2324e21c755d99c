"""Issue 20 item 6: `promote` reported a forged pointer as already done. A bucket writer writes a pointer that
names the version about to be promoted, signed by another key: `registry.promote` returned it as the promotion
("somebody did the same promotion"), and `promote-canary` said "nothing to do: stable already names it". Now
promote verifies what it reads back: a forged pointer is an error naming the channel, never a done move."""

from __future__ import annotations

import pytest

from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.rollout.promote import promotion_pointers
from edgefleet.flows.trust.pointer_signing import sign_pointer
from edgefleet.kernel.contracts.layout import channel_key
from edgefleet.kernel.errors import VerificationError
from tests.device.store_fixtures import Keys, VersionFactory, publish_versions
from tests.device.test_pull import overwrite_object


def forge(registry: LocalRegistryWriter, key: Keys, version: str, channel: str = "stable") -> None:
    """A well-formed signed pointer, by a key that is not the release key."""
    sha = registry.read_manifest("birds", version).manifest_sha256
    pointer = sign_pointer(key.private, model="birds", channel=channel, version=version, manifest_sha256=sha,
                           previous=None)
    overwrite_object(registry, channel_key("birds", channel), pointer.to_json_bytes())


def test_promote_does_not_take_a_forged_pointer_for_the_promotion(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, other_keys: Keys
) -> None:
    publish_versions(local_registry, make_version, "1.0.0", "1.1.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    forge(local_registry, other_keys, "1.1.0")

    with pytest.raises(VerificationError, match="does not verify"):
        local_registry.promote("birds", "1.1.0", "stable", signing_key=keys.private)
    with pytest.raises(VerificationError, match="does not verify"):  # nor when the caller expected it
        local_registry.promote("birds", "1.1.0", "stable", signing_key=keys.private, expected_version="1.1.0")


def test_promote_canary_reads_only_verified_pointers(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, other_keys: Keys
) -> None:
    publish_versions(local_registry, make_version, "1.0.0", "1.1.0")
    local_registry.promote("birds", "1.1.0", "canary", signing_key=keys.private)
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    source, target = promotion_pointers(local_registry, "birds", "canary", "stable", keys.public)
    assert (source.version, target.version) == ("1.1.0", "1.0.0")

    forge(local_registry, other_keys, "1.1.0")  # stable "already names" the canary's version
    with pytest.raises(VerificationError, match="stable.*does not verify"):
        promotion_pointers(local_registry, "birds", "canary", "stable", keys.public)
    forge(local_registry, other_keys, "1.1.0", channel="canary")
    with pytest.raises(VerificationError, match="canary.*does not verify"):
        promotion_pointers(local_registry, "birds", "canary", "stable", keys.public)


def test_an_unsigned_pointer_does_not_talk_the_operator_into_signing_a_downgrade(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    from edgefleet.kernel.contracts.manifest import ChannelPointer

    publish_versions(local_registry, make_version, "1.0.0", "1.1.0", "9.0.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    sha = local_registry.read_manifest("birds", "9.0.0").manifest_sha256
    planted = ChannelPointer(model="birds", channel="stable", version="9.0.0", manifest_sha256=sha)
    overwrite_object(local_registry, channel_key("birds", "stable"), planted.to_json_bytes())

    moved = local_registry.promote("birds", "1.1.0", "stable", signing_key=keys.private)  # no "use --downgrade"
    assert moved.version == "1.1.0" and moved.signed and not moved.downgrade
