"""Pull mode's shadow wave on the device (issue 25): a staged rollout's signed pointer names a shadow share; the
devices in it (the rollout's stable hash) download and verify the candidate as for an activation, name it as
their shadow and never activate it; readers that do not know the field stay on the version it replaces."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pydantic import ConfigDict, ValidationError, create_model

from edgefleet.device.pull import pull_channel_once
from edgefleet.device.pull_plan import Installed, shadow_step
from edgefleet.device.shadow_pointer import SHADOW_POINTER
from edgefleet.device.staged import shadow_pointer, target_pointer
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.registry.staged import stage_rollout
from edgefleet.flows.trust.pointer_signing import DEFAULT_VALIDITY, sign_pointer
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.refusal import Refusal
from edgefleet.kernel.contracts.rollout import RolloutStage, cohort_bucket

from .store_fixtures import Keys, VersionFactory, publish_versions

NEW_SHA, OLD_SHA = "ab" * 32, "cd" * 32
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
ROLLOUT = "birds-1.1.0"
SHADOW_BP = 1_000


def device_with_bucket(low: int, high: int) -> str:
    return next(f"cam-{n}" for n in range(100_000) if low <= cohort_bucket(ROLLOUT, f"cam-{n}") < high)


SHADOWING = device_with_bucket(0, SHADOW_BP)
OUTSIDE = device_with_bucket(5_000, 10_000)


def shadow_wave(keys: Keys, *, share_bp: int = 0, shadow_bp: int | None = SHADOW_BP) -> ChannelPointer:
    return sign_pointer(keys.private, model="birds", channel="stable", version="1.1.0", manifest_sha256=NEW_SHA,
                        previous=None, now=NOW, rollout=RolloutStage(
                            id=ROLLOUT, replaces="1.0.0", replaces_manifest_sha256=OLD_SHA, share_bp=share_bp,
                            shadow_bp=shadow_bp))


# --- the contract and the pure decisions --------------------------------------------------------------------
def test_only_the_shadow_share_outside_the_activation_share_shadows(keys: Keys) -> None:
    pointer = shadow_wave(keys)
    assert shadow_pointer(pointer, SHADOWING) is pointer and shadow_pointer(pointer, OUTSIDE) is None
    assert shadow_pointer(pointer, None) is None
    # every device, the shadowing one too, follows the version it runs: nobody activates the candidate
    for device_id in (SHADOWING, OUTSIDE):
        assert target_pointer(pointer, device_id, "1.0.0").pointer.version == "1.0.0"
    moved = shadow_wave(keys, share_bp=SHADOW_BP, shadow_bp=SHADOW_BP)  # the first wave: activated, not shadowed
    assert shadow_pointer(moved, SHADOWING) is None
    assert target_pointer(moved, SHADOWING, "1.0.0").pointer.version == "1.1.0"


def test_a_pointer_without_shadow_keeps_the_bytes_it_had_and_the_shadow_share_is_signed(keys: Keys) -> None:
    plain = shadow_wave(keys, share_bp=SHADOW_BP, shadow_bp=None)
    assert b"shadow_bp" not in plain.to_json_bytes() and b"shadow_bp" not in plain.signed_bytes()
    shadowed = shadow_wave(keys)
    assert ChannelPointer.model_validate_json(shadowed.to_json_bytes()) == shadowed
    assert b'"shadow_bp":1000' in shadowed.signed_bytes()


def test_a_reader_that_ignores_the_shadow_share_keeps_every_device_on_the_old_version(keys: Keys) -> None:
    document = json.loads(shadow_wave(keys).to_json_bytes())
    # A reader of the revision before shadow_bp refuses the block (extra fields are forbidden), as agents that
    # read only schema 2 refuse edgefleet.channel/3 altogether: the pointer is refused, nothing moves.
    fields = {name: (field.annotation, field) for name, field in RolloutStage.model_fields.items()
              if name != "shadow_bp"}
    older_stage = create_model("OlderStage", __config__=ConfigDict(frozen=True, extra="forbid"), **fields)
    with pytest.raises(ValidationError, match="shadow_bp"):
        older_stage.model_validate(document["rollout"])
    # A lenient reader that dropped the unknown field sees share 0: every device stays on `replaces`.
    del document["rollout"]["shadow_bp"]
    lenient = ChannelPointer.model_construct(**{**shadow_wave(keys).__dict__,
                                                "rollout": RolloutStage.model_validate(document["rollout"])})
    for device_id in (SHADOWING, OUTSIDE):
        assert target_pointer(lenient, device_id, "1.0.0").pointer.version == "1.0.0"
        assert shadow_pointer(lenient, device_id) is None


def step(wanted: ChannelPointer | None, **changes: object) -> str:
    inputs: dict = {"rollout_version": "1.1.0", "shadow": None, "current": "1.0.0", "installed": None,
                    "floor": "1.0.0", "refusal": None, "retry_refused": False, "enabled": True} | changes
    return shadow_step(wanted, **inputs).action


def test_shadow_step_decisions(keys: Keys) -> None:
    wanted = shadow_wave(keys)
    mine = Installed("1.1.0", NEW_SHA)
    assert step(wanted) == "download"
    assert step(wanted, installed=mine) == "set"
    assert step(wanted, installed=mine, shadow="1.1.0") == "keep"
    assert step(wanted, enabled=False) == "off"
    refused = Refusal(version="1.1.0", manifest_sha256=NEW_SHA, reason="bad", refused_at=NOW)
    assert step(wanted, refusal=refused) == "skip"
    assert step(wanted, refusal=refused, retry_refused=True) == "download"
    assert step(wanted, floor="1.2.0") == "below_floor"
    assert step(wanted, installed=Installed("1.1.0", OLD_SHA)) == "refuse"
    assert step(None, shadow="1.1.0") == "clear"  # the rollout moved on (or halted)
    assert step(None, shadow="1.0.0") == "clear"  # shadowing what it runs now
    assert step(None, shadow="0.9.0") == "none"  # an operator's own shadow is left alone
    assert step(None) == "none"


# --- on a real store and registry -----------------------------------------------------------------------------
@pytest.fixture
def fleet(local_registry: LocalRegistryWriter, make_version: VersionFactory, keys: Keys, tmp_path: Path,
          store: ModelStore) -> dict[str, ModelStore]:
    other = ModelStore(tmp_path / "other-root")
    shutil.copytree(store.root / "keys", other.root / "keys")
    publish_versions(local_registry, make_version, "1.0.0", "1.1.0")
    local_registry.promote("birds", "1.0.0", "stable", signing_key=keys.private)
    return {SHADOWING: store, OUTSIDE: other}


def pull_all(registry: LocalRegistryWriter, fleet: dict[str, ModelStore], *, shadow: bool = True) -> dict:
    seen = {}
    for device_id, device_store in fleet.items():
        result = pull_channel_once(registry, device_store, "birds", "stable", device_id=device_id, shadow=shadow)
        assert result.outcome in ("activated", "unchanged"), result.reason
        seen[device_id] = (device_store.current("birds").version, device_store.pointer("birds", SHADOW_POINTER),
                           result.shadow.outcome)
    return seen


def test_the_shadow_share_downloads_and_names_the_candidate_and_the_first_wave_replaces_it(
    local_registry: LocalRegistryWriter, keys: Keys, fleet: dict[str, ModelStore]
) -> None:
    assert pull_all(local_registry, fleet)[SHADOWING][:2] == ("1.0.0", None)
    stage_rollout(local_registry, keys.private, model="birds", channel="stable", rollout_id=ROLLOUT,
                  version="1.1.0", share_bp=0, shadow_bp=SHADOW_BP, validity=DEFAULT_VALIDITY)
    assert pull_all(local_registry, fleet) == {SHADOWING: ("1.0.0", "1.1.0", "download"),
                                               OUTSIDE: ("1.0.0", None, "none")}
    assert fleet[OUTSIDE].installed("birds", "1.1.0") is None  # only the shadow share downloads it
    assert pull_all(local_registry, fleet)[SHADOWING] == ("1.0.0", "1.1.0", "keep")
    # the shadow wave passed: the first wave activates it where it was shadowed, and the shadow goes
    stage_rollout(local_registry, keys.private, model="birds", channel="stable", rollout_id=ROLLOUT,
                  version="1.1.0", share_bp=SHADOW_BP, validity=DEFAULT_VALIDITY)
    assert pull_all(local_registry, fleet) == {SHADOWING: ("1.1.0", None, "clear"), OUTSIDE: ("1.0.0", None, "none")}


def test_a_halted_shadow_wave_clears_the_shadow_and_nothing_was_activated(
    local_registry: LocalRegistryWriter, keys: Keys, fleet: dict[str, ModelStore]
) -> None:
    stage_rollout(local_registry, keys.private, model="birds", channel="stable", rollout_id=ROLLOUT,
                  version="1.1.0", share_bp=0, shadow_bp=SHADOW_BP, validity=DEFAULT_VALIDITY)
    pull_all(local_registry, fleet)
    stage_rollout(local_registry, keys.private, model="birds", channel="stable", rollout_id=ROLLOUT,
                  version="1.1.0", share_bp=0, validity=DEFAULT_VALIDITY)
    assert pull_all(local_registry, fleet)[SHADOWING] == ("1.0.0", None, "clear")
    assert fleet[SHADOWING].floor("birds").version == "1.0.0"  # never activated: the floor never moved


def test_an_agent_without_shadows_downloads_nothing(
    local_registry: LocalRegistryWriter, keys: Keys, fleet: dict[str, ModelStore]
) -> None:
    stage_rollout(local_registry, keys.private, model="birds", channel="stable", rollout_id=ROLLOUT,
                  version="1.1.0", share_bp=0, shadow_bp=SHADOW_BP, validity=DEFAULT_VALIDITY)
    assert pull_all(local_registry, fleet, shadow=False)[SHADOWING] == ("1.0.0", None, "off")
    assert fleet[SHADOWING].installed("birds", "1.1.0") is None
