"""Issue 20 item 3 (the pipeline half): a rollout pushed a lower version than a device runs as readily as a
higher one: a replayed old (genuinely signed) pointer, or a rollout naming an old version, moved devices down
over SSH, where the agent's channel rules never apply. Now a device's preflight refuses a version lower than the
one it runs unless the version comes from a signed pointer marked as a deliberate downgrade."""

from __future__ import annotations

import pytest

from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.rollout.device import lower_version_refusal
from edgefleet.flows.rollout.flow import resolve_version
from edgefleet.flows.rollout.params import RolloutParams
from tests.device.store_fixtures import Keys, VersionFactory, publish_versions


def params(registry: LocalRegistryWriter, keys: Keys, **overrides: object) -> RolloutParams:
    return RolloutParams.model_validate({"inventory": "fleet.yaml", "registry": str(registry.root), "model": "birds",
                                         "public_key": str(keys.public_file), **overrides})


def test_a_lower_version_is_refused_unless_it_is_a_signed_downgrade() -> None:
    refusal = lower_version_refusal("cam-1", "birds", current="1.1.0", version="1.0.0", signed_downgrade=False)
    assert refusal is not None and "1.1.0" in refusal.message and "--downgrade" in refusal.fix
    assert lower_version_refusal("cam-1", "birds", current="1.1.0", version="1.0.0", signed_downgrade=True) is None
    assert lower_version_refusal("cam-1", "birds", current="1.0.0", version="1.1.0", signed_downgrade=False) is None
    assert lower_version_refusal("cam-1", "birds", current=None, version="1.0.0", signed_downgrade=False) is None
    assert lower_version_refusal("cam-1", "birds", current="1.0.0", version="1.0.0", signed_downgrade=False) is None


def test_only_a_signed_downgrade_pointer_allows_a_lower_version(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys
) -> None:
    publish_versions(local_registry, make_version, "1.0.0", "1.1.0")
    local_registry.promote("birds", "1.1.0", "stable", signing_key=keys.private)
    by_version = resolve_version(local_registry, params(local_registry, keys, version="1.0.0"))
    assert by_version.downgrade is False  # naming a version is not a signed downgrade
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private, downgrade=True)
    by_channel = resolve_version(local_registry, params(local_registry, keys, channel="stable"))
    assert (by_channel.version, by_channel.downgrade) == ("1.0.0", True)


@pytest.mark.parametrize("current", ["1.1.0", "2.0.0-rc.1"])
def test_the_refusal_names_the_device_and_both_versions(current: str) -> None:
    refusal = lower_version_refusal("cam-7", "birds", current=current, version="1.0.0", signed_downgrade=False)
    assert refusal is not None and "cam-7" in refusal.message and current in refusal.message
