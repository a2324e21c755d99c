"""The rollout's shadow wave on the simulated fleet (real sshd and agents, see conftest.py): a model whose
answers are unrelated to the current model's (the demo's shuffled-labels model, here Coral's iNaturalist bird
classifier run on the same frames as the ImageNet one) is stopped by the shadow wave on the first wave's
devices, before any device activated it; the devices never switched, and no shadow is left running."""

from __future__ import annotations

import json

import pytest

from edgefleet.flows.release.bundle import create_version_dir
from edgefleet.kernel.contracts.status import read_status

from .conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

SHUFFLED = "1.4.0"
BIRD_MODEL = "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
FIRST_WAVE = ("sim-1", "sim-2")


def publish_unrelated_answers(world) -> None:
    """A signed release passing every check a release has (signature, hashes, golden smoke test), whose class
    ids mean something else than the running model's."""
    from edgefleet.device.runtime.engine import Engine
    from edgefleet.device.runtime.golden import compute_golden

    releases = world.releases
    with Engine.open(releases.coral / BIRD_MODEL) as engine:
        golden = compute_golden(engine, (1, 2))
    dest = releases.base / "builds" / SHUFFLED
    create_version_dir(dest, {"model_cpu.tflite": releases.coral / BIRD_MODEL,
                              "labels.txt": releases.coral / "inat_bird_labels.txt"},
                       private_key=releases.private_key, model=MODEL, version=SHUFFLED, golden=golden)
    releases.registry.publish_version(MODEL, SHUFFLED, dest)


def test_a_shuffled_labels_model_is_stopped_by_the_shadow_wave_before_any_device_acts_on_it(world):
    from edgefleet.flows.rollout.flow import RolloutHalted, rollout

    publish_unrelated_answers(world)
    # judged with the one gate's thresholds: the world's canary section asks 20 pairs per device (min_samples)
    params = world.params(version=SHUFFLED, channel="canary", waves=[len(FIRST_WAVE), "100%"],
                          shadow={"enabled": True, "timeout_s": 120, "poll_interval_s": 1.0})
    with pytest.raises(RolloutHalted) as halted:
        rollout(params)

    assert "shadow wave" in halted.value.message
    record = world.record(f"{MODEL}-{SHUFFLED}")
    assert record["state"] == "halted" and "shadow_agreement" in record["halted"]["halted_by"], record["halted"]
    assert all(device["state"] == "pending" for device in record["devices"].values())  # none activated it
    assert world.currents() == {"1.0.0"}
    for device_id, device in world.fleet.devices.items():
        status = read_status(device.root / "status.json")
        assert status.version == "1.0.0" and status.swaps == 0, device_id  # never ran it as its model
        assert not (device.root / "models" / MODEL / "shadow").is_symlink(), device_id  # shadow cleared
        staged = (device.root / "models" / MODEL / SHUFFLED).is_dir()
        assert staged == (device_id in FIRST_WAVE), device_id  # only the shadow wave's devices got it
    for device_id in FIRST_WAVE:  # each of them ran it beside 1.0.0 and disagreed
        report = json.loads((world.fleet.devices[device_id].root / "shadow.json").read_text())
        assert report["primary"] == "1.0.0"
    assert world.releases.registry.read_channel(MODEL, "canary").pointer.version == "1.0.0"
