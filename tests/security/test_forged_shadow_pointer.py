"""Issue 25, the pull-mode shadow wave: an attacker who can write the registry (not the release key) uses the new
`shadow_bp` of a staged rollout to make devices download and run a model of their choosing beside the real one,
or to sneak a candidate past the device's refusals and version floor. A shadow candidate is named only by a
pointer the device accepts (signature, counter, expiry, floor), verified as an activation is, and a refused or
below-floor candidate is never run (nor activated later)."""

from __future__ import annotations

import json

import pytest

from edgefleet.device.poller import ChannelPoller
from edgefleet.device.pull import PullResult, pull_channel_once
from edgefleet.device.shadow_pointer import SHADOW_POINTER
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.registry.staged import stage_rollout
from edgefleet.flows.trust.pointer_signing import DEFAULT_VALIDITY, sign_pointer
from edgefleet.kernel.contracts.layout import channel_key
from edgefleet.kernel.contracts.rollout import SHARE_BP_FULL, RolloutStage
from edgefleet.kernel.errors import RegistryError
from tests.device.store_fixtures import Keys, VersionFactory, publish_versions
from tests.device.test_pull import overwrite_object

KEY = channel_key("birds", "stable")
DEVICE = "cam-1"
ROLLOUT = "birds-1.1.0"


def on_1_0_0(registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, store: ModelStore) -> None:
    """The fleet runs 1.0.0 from a signed pointer; 1.1.0 is published (not promoted)."""
    publish_versions(registry, make_version, "1.0.0", "1.1.0")
    registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    assert pull_channel_once(registry, store, "birds", "stable", device_id=DEVICE, shadow=True).outcome == "activated"


def pull(registry: LocalRegistryWriter, store: ModelStore) -> PullResult:
    return pull_channel_once(registry, store, "birds", "stable", device_id=DEVICE, shadow=True)


def assert_not_shadowed(store: ModelStore) -> None:
    assert store.pointer("birds", SHADOW_POINTER) is None
    assert store.installed("birds", "1.1.0") is None
    assert store.current("birds").version == "1.0.0"


def forged_by_another_key(registry: LocalRegistryWriter, keys: Keys, other_keys: Keys) -> bytes:
    current = registry.read_channel("birds", "stable").pointer
    sha = registry.read_manifest("birds", "1.1.0").manifest_sha256
    return sign_pointer(other_keys.private, model="birds", channel="stable", version="1.1.0", manifest_sha256=sha,
                        previous=current, rollout=RolloutStage(
                            id=ROLLOUT, replaces="1.0.0", replaces_manifest_sha256=current.manifest_sha256,
                            share_bp=0, shadow_bp=SHARE_BP_FULL)).to_json_bytes()


def genuine_with_shadow_added(registry: LocalRegistryWriter, keys: Keys, other_keys: Keys) -> bytes:
    genuine = stage_rollout(registry, keys.private, model="birds", channel="stable", rollout_id=ROLLOUT,
                            version="1.1.0", share_bp=0, validity=DEFAULT_VALIDITY)  # a halted rollout: nobody on 1.1.0
    document = json.loads(genuine.to_json_bytes())
    document["rollout"]["shadow_bp"] = SHARE_BP_FULL  # the attacker's edit; the signature is the genuine one
    return json.dumps(document).encode()


@pytest.mark.parametrize("forge", [forged_by_another_key, genuine_with_shadow_added])
def test_a_forged_pointer_naming_a_shadow_candidate_is_refused(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, other_keys: Keys,
    store: ModelStore, forge
) -> None:
    on_1_0_0(local_registry, make_version, keys, store)
    overwrite_object(local_registry, KEY, forge(local_registry, keys, other_keys))
    result = pull(local_registry, store)
    assert result.outcome == "pointer_refused", result.reason
    assert result.shadow is None  # the shadow is never looked at for a refused pointer
    assert_not_shadowed(store)


def test_an_unsigned_pointer_cannot_carry_a_shadow_share(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, store: ModelStore
) -> None:
    on_1_0_0(local_registry, make_version, keys, store)
    current = local_registry.read_channel("birds", "stable").pointer
    document = {"schema": "edgefleet.channel/1", "model": "birds", "channel": "stable", "version": "1.1.0",
                "manifest_sha256": local_registry.read_manifest("birds", "1.1.0").manifest_sha256,
                "rollout": {"id": ROLLOUT, "replaces": "1.0.0", "replaces_manifest_sha256": current.manifest_sha256,
                            "share_bp": 0, "shadow_bp": SHARE_BP_FULL}}
    overwrite_object(local_registry, KEY, json.dumps(document).encode())
    with pytest.raises(RegistryError, match="not a valid pointer"):
        pull(local_registry, store)
    assert_not_shadowed(store)


def test_a_shadow_candidate_below_the_version_floor_is_not_run(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, store: ModelStore
) -> None:
    on_1_0_0(local_registry, make_version, keys, store)
    store.install(make_version("birds", "1.2.0"))  # this device was moved to 1.2.0 another way: floor 1.2.0
    store.activate("birds", "1.2.0")
    stage_rollout(local_registry, keys.private, model="birds", channel="stable", rollout_id=ROLLOUT,
                  version="1.1.0", share_bp=0, shadow_bp=SHARE_BP_FULL, validity=DEFAULT_VALIDITY)
    result = pull(local_registry, store)
    assert result.outcome == "pointer_refused" and "only the devices it moved" in result.reason
    assert store.pointer("birds", SHADOW_POINTER) is None and store.installed("birds", "1.1.0") is None
    assert store.current("birds").version == "1.2.0"


def test_a_refused_shadow_candidate_is_not_run_and_never_activated_later(
    local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, store: ModelStore
) -> None:
    on_1_0_0(local_registry, make_version, keys, store)
    overwrite_object(local_registry, "models/birds/1.1.0/model_cpu.tflite", b"backdoored model")
    stage_rollout(local_registry, keys.private, model="birds", channel="stable", rollout_id=ROLLOUT,
                  version="1.1.0", share_bp=0, shadow_bp=SHARE_BP_FULL, validity=DEFAULT_VALIDITY)
    reported: list[PullResult] = []
    poller = ChannelPoller(local_registry, store, "birds", "stable", device_id=DEVICE, shadow=True,
                           on_refusal=reported.append)
    result = poller.run_once()
    assert result is not None and result.shadow.outcome == "refused", result
    assert store.refusal("birds", "1.1.0", local_registry.read_manifest("birds", "1.1.0").manifest_sha256)
    assert_not_shadowed(store)
    assert [(r.version, r.outcome) for r in reported] == [("1.1.0", "refused")]  # the agent sends swap_failed
    assert "shadow candidate refused" in reported[0].reason
    assert poller.run_once().shadow.outcome == "skip"  # not downloaded again at every poll
    # whoever raises the share: it stays refused
    stage_rollout(local_registry, keys.private, model="birds", channel="stable", rollout_id=ROLLOUT,
                  version="1.1.0", share_bp=SHARE_BP_FULL, validity=DEFAULT_VALIDITY)
    assert pull(local_registry, store).outcome == "previously_refused"
    assert_not_shadowed(store)
    assert len(reported) == 1
