"""The fleet simulator's pure device behaviour: the agent's pointer decision for a simulated device (pointers
signed by the real registry code), and each profile's model behaviour against the device's own."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from bench.fleet_model import MODELS, make_fleet
from edgefleet.flows.registry import open_registry_writer, stage_rollout
from edgefleet.flows.trust.pointer_signing import DEFAULT_VALIDITY
from edgefleet.kernel.contracts.rollout import in_share
from edgefleet.kernel.contracts.telemetry import ModelRef
from edgefleet.kernel.trust.release_keyring import resolve_keyring
from edgefleet.kernel.trust.signatures import (
    generate_keypair,
    load_private_key,
    load_public_key,
    save_private_key,
    save_public_key,
)
from edgefleet.local.simfleet import PROFILES, decide_poll, window_records
from edgefleet.local.simfleet.behaviour import first_state
from edgefleet.local.simfleet.runner import lateness_summary
from edgefleet.local.simfleet.shared_verify import shared_checks
from edgefleet.local.simfleet.world import SimWorld

ROLLOUT = "imagenet-1.1.0"
DEVICES = [f"sim-{index:05d}" for index in range(40)]


@pytest.fixture
def world(tmp_path: Path, coral_data: Path) -> SimWorld:
    private, public = generate_keypair()
    (tmp_path / "registry").mkdir()
    world = SimWorld(tmp_path, tmp_path / "registry", save_private_key(private, tmp_path / "release.key"),
                     save_public_key(public, tmp_path / "release.pub"), tmp_path / "enrolment.key",
                     tmp_path / "monitor.yaml", coral_data / "mobilenet_v1_0.25_128_quant.tflite", "p", "t", "s")
    world.publish("1.0.0", promote=True)
    world.publish("1.1.0")
    return world


def _stage(world: SimWorld, share_bp: int):  # -> ChannelPointer
    return stage_rollout(open_registry_writer(world.registry), load_private_key(world.release_key),
                         model=world.model, channel=world.channel, rollout_id=ROLLOUT, version="1.1.0",
                         share_bp=share_bp, validity=DEFAULT_VALIDITY)


def test_a_device_takes_the_side_of_the_share_its_hash_gives_and_goes_back_at_share_zero(world: SimWorld) -> None:
    key = resolve_keyring(load_public_key(world.release_public))
    old = open_registry_writer(world.registry).read_channel(world.model, world.channel).pointer
    now = datetime.now(UTC)
    states = {device: first_state(old.version, old.manifest_sha256) for device in DEVICES}
    staged = _stage(world, 2500)
    outcomes = {d: decide_poll(key, staged, s, device_id=d, now=now, source="test") for d, s in states.items()}
    moved = {d for d, outcome in outcomes.items() if outcome.changed}
    assert moved == {d for d in DEVICES if in_share(ROLLOUT, d, 2500)}
    assert 0 < len(moved) < len(DEVICES)
    assert all(outcomes[d].state.version == ("1.1.0" if d in moved else "1.0.0") for d in DEVICES)
    halted = _stage(world, 0)
    back = {d: decide_poll(key, halted, outcomes[d].state, device_id=d, now=now, source="test") for d in DEVICES}
    assert {d for d, outcome in back.items() if outcome.changed} == moved  # only the moved devices move (back)
    assert all(outcome.state.version == "1.0.0" for outcome in back.values())
    assert all(back[d].state.record.highest_version == "1.0.0" for d in moved)  # the signed send-back's floor


def test_a_pointer_signed_by_another_key_is_refused(world: SimWorld) -> None:
    other = resolve_keyring(generate_keypair()[1])
    old = open_registry_writer(world.registry).read_channel(world.model, world.channel).pointer
    state = first_state(old.version, old.manifest_sha256)
    outcome = decide_poll(other, _stage(world, 10_000), state, device_id=DEVICES[0], now=datetime.now(UTC),
                          source="test")
    assert (outcome.action, outcome.state) == ("refused", state)


def test_devices_sharing_signature_checks_decide_as_each_checking_alone_and_still_refuse_altered_pointers(
        world: SimWorld) -> None:
    alone = resolve_keyring(load_public_key(world.release_public))
    shared = shared_checks(alone)
    old = open_registry_writer(world.registry).read_channel(world.model, world.channel).pointer
    now, staged = datetime.now(UTC), _stage(world, 5000)
    for device in DEVICES:
        state = first_state(old.version, old.manifest_sha256)
        assert decide_poll(shared, staged, state, device_id=device, now=now, source="test") == decide_poll(
            alone, staged, state, device_id=device, now=now, source="test")
    (_, key), = shared.keys
    assert key.checked == 1, "one real check for the 40 devices' same pointer"
    altered = staged.model_copy(update={"rollout": staged.rollout.model_copy(update={"share_bp": 10_000})})
    state = first_state(old.version, old.manifest_sha256)
    outcome = decide_poll(shared, altered, state, device_id=DEVICES[0], now=now, source="test")
    assert (outcome.action, outcome.state, key.checked) == ("refused", state, 2)
    assert decide_poll(shared, altered, state, device_id=DEVICES[1], now=now, source="test").action == "refused"


def _window(profile: str, device: object) -> list:
    model = ModelRef(name="imagenet", version="1.0.0", variant="cpu", backend="cpu")
    return window_records(np.random.default_rng(3), device, PROFILES[profile], model, start=0.0, end=200.0,
                          fps=10.0)


def _median_latency(records: list) -> float:
    return float(np.median([r.latency_ms for r in records if r.error is None]))


def _share(records: list, test) -> float:  # noqa: ANN001
    return sum(1 for r in records if test(r)) / len(records)


def test_each_profile_changes_the_devices_own_behaviour_as_named() -> None:
    fleet = make_fleet(np.random.default_rng(1), MODELS["camera"], 4).devices
    good = {i: _window("good", device) for i, device in enumerate(fleet)}
    assert len(good[0]) == 2000  # 200 s at 10 fps
    assert len({round(_median_latency(records), 1) for records in good.values()}) == len(fleet)  # own speed
    for i, device in enumerate(fleet):
        slow, erroring, collapsed = (_window(p, device) for p in ("slow", "erroring", "collapsed"))
        assert _median_latency(slow) > 2.5 * _median_latency(good[i])
        assert _share(erroring, lambda r: r.error is not None) > _share(good[i], lambda r: r.error is not None) + 0.1
        top = [r for r in collapsed if r.error is None]
        assert _share(top, lambda r: r.results[0].id == 0) > 0.85
        assert np.median([r.results[0].score for r in top]) < np.median(
            [r.results[0].score for r in good[i] if r.error is None]) - 0.3


def test_poll_lateness_percentiles_come_from_the_histogram() -> None:
    assert lateness_summary({0: 90, 5: 8, 30: 2}) == (0.0, 0.5, 3.0)
    assert lateness_summary({}) == (0.0, 0.0, 0.0)
