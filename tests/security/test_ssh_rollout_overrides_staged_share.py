"""Issue 23 item 1, the SSH path beside it: an SSH rollout by channel followed a staged pointer's new version for
every device, so a pull rollout held at 1 % (or halted at 0 %, every moved device sent back) reached the whole
SSH-reachable fleet unjudged, and each pull-capable device's own agent then sent it back again (outside the
share: `replaces`), flapping between the two.

The choice (README, "Staged rollouts"): a channel names one version for every device only when it holds no
staged rollout, or a staged rollout at 100 % (the new version) or at 0 % (halted: the version it replaces, with
that version's manifest sha256). While a staged rollout is partly applied, an SSH rollout by channel is refused
before anything is written or sent, naming the staged rollout and the fixes (`edgefleet rollout pull` to finish
it, `edgefleet registry promote` for one version on the whole channel, or a rollout by `--version`)."""

from __future__ import annotations

import pytest

from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.registry.staged import stage_rollout
from edgefleet.flows.rollout.flow import resolve_version
from edgefleet.flows.rollout.params import RolloutParams
from edgefleet.flows.trust.pointer_signing import DEFAULT_VALIDITY
from edgefleet.kernel.errors import EdgefleetError
from tests.device.store_fixtures import Keys, VersionFactory, publish_versions


@pytest.fixture
def staged(local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys):
    """birds stable on 1.0.0, then rollout birds-1.1.0 of 1.1.0 staged on it; returns a stager by share."""
    publish_versions(local_registry, make_version, "1.0.0", "1.1.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)

    def stage(share_bp: int):
        return stage_rollout(local_registry, keys.private, model="birds", channel="stable", rollout_id="birds-1.1.0",
                             version="1.1.0", share_bp=share_bp, validity=DEFAULT_VALIDITY)
    return stage


def _by_channel(registry: LocalRegistryWriter, keys: Keys) -> RolloutParams:
    return RolloutParams.model_validate({"inventory": "fleet.yaml", "registry": str(registry.root), "model": "birds",
                                         "channel": "stable", "public_key": str(keys.public_file)})


@pytest.mark.parametrize("share_bp", [1, 100, 5000, 9999])
def test_an_ssh_rollout_by_channel_is_refused_while_a_staged_rollout_is_partly_applied(
        staged, local_registry: LocalRegistryWriter, keys: Keys, share_bp: int) -> None:
    staged(share_bp)
    with pytest.raises(EdgefleetError) as caught:
        resolve_version(local_registry, _by_channel(local_registry, keys))
    message, fix = caught.value.message, caught.value.fix
    assert "birds-1.1.0" in message and f"{share_bp / 100:g} %" in message and "1.0.0" in message
    assert "edgefleet rollout pull" in fix and "edgefleet registry promote" in fix and "--version" in fix


def test_a_staged_rollout_at_the_whole_fleet_is_followed_to_its_version(
        staged, local_registry: LocalRegistryWriter, keys: Keys) -> None:
    pointer = staged(10_000)
    chosen = resolve_version(local_registry, _by_channel(local_registry, keys))
    assert (chosen.version, chosen.manifest_sha256, chosen.downgrade) == ("1.1.0", pointer.manifest_sha256, False)


def test_a_halted_staged_rollout_is_followed_to_the_version_it_replaces(
        staged, local_registry: LocalRegistryWriter, keys: Keys) -> None:
    staged(100)
    pointer = staged(0)  # halted: every device goes back to (or stays on) 1.0.0
    chosen = resolve_version(local_registry, _by_channel(local_registry, keys))
    assert pointer.rollout is not None
    assert (chosen.version, chosen.manifest_sha256) == ("1.0.0", pointer.rollout.replaces_manifest_sha256)
    assert chosen.downgrade is False  # the pointer's downgrade flag is about 1.1.0, never about 1.0.0


def test_a_rollout_by_version_is_not_affected(staged, local_registry: LocalRegistryWriter, keys: Keys) -> None:
    staged(100)
    params = _by_channel(local_registry, keys).model_copy(update={"version": "1.1.0"})
    assert resolve_version(local_registry, params).version == "1.1.0"


# --- the path beside it: promote-canary ------------------------------------------------------------------


def test_promote_canary_waits_while_either_channel_holds_a_staged_rollout(
        staged, local_registry: LocalRegistryWriter, keys: Keys) -> None:
    """promote-canary read the source's `version` and signed a plain pointer over the target: a canary channel
    staged at 1 % was promoted to the whole stable channel, and a staged rollout on stable ended at 100 %
    unjudged. Both now wait, naming the staged rollout."""
    from edgefleet.flows.rollout.promote import promotion_pointers, staged_promotion_blocker

    staged(100)  # stable: rollout birds-1.1.0 at 1 %
    local_registry.promote("birds", "1.1.0", "canary", signing_key=keys.private)
    source, target = promotion_pointers(local_registry, "birds", "canary", "stable", keys.public)
    blocker = staged_promotion_blocker(source, target)
    assert blocker is not None and "birds-1.1.0" in blocker and "edgefleet rollout pull" in blocker
    as_source = staged_promotion_blocker(target, None)  # the staged channel promoted elsewhere
    assert as_source is not None and "1 %" in as_source
    staged(10_000)
    source, target = promotion_pointers(local_registry, "birds", "canary", "stable", keys.public)
    assert staged_promotion_blocker(source, target) is None  # complete: nothing in the way
