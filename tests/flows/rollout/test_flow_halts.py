"""The `rollout` flow halts (a fleet of each test's own, see test_rollout_flow_full.py): a version failing the
device's smoke test, and a device killed in the middle of a wave."""

from __future__ import annotations

import threading
import time

import pytest

from .conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

KILL_WAIT_S = 120  # until the victim's upload of the new version begins
ROLLOUT_JOIN_S = 180
# The killed-device test keeps the agents' former 5 fps: its kill must land inside wave 2, and a slower wave
# (its health and canary wait for frames) keeps that window wide on a loaded machine.
KILL_TEST_MAX_FPS = 5.0


def test_version_failing_the_device_smoke_test_is_rolled_back_by_the_device_and_halts(world):
    from edgefleet.flows.rollout.flow import RolloutHalted, rollout

    assert world.currents() == {"1.0.0"}
    assert world.releases.registry.read_channel(MODEL, "canary").pointer.version == "1.0.0"
    world.releases.publish("1.2.0", bad=True)
    with pytest.raises(RolloutHalted) as halted:
        rollout(world.params(version="1.2.0", channel="canary"))

    assert halted.value.result.state == "halted" and "sim-1" in halted.value.message
    record = world.record("imagenet-1.2.0")
    canary = record["devices"]["sim-1"]
    assert canary["refused_by_device"] and canary["state"] == "rolled_back" and canary["rolled_back_to"] == "1.0.0"
    assert canary["error"]["step"] == "health" and "smoke test" in canary["error"]["message"]
    assert world.current("sim-1") == "1.0.0"  # the agent put its pointer back by itself
    assert all(record["devices"][d]["state"] == "pending" for d in ("sim-2", "sim-3", "sim-4", "sim-5"))
    for device_id in ("sim-2", "sim-3", "sim-4", "sim-5"):  # never touched
        assert not (world.fleet.devices[device_id].root / "models" / MODEL / "1.2.0").exists()
    assert world.releases.registry.read_channel(MODEL, "canary").pointer.version == "1.0.0"


def test_device_killed_mid_wave_halts_and_rolls_back_everything_this_rollout_changed(start_world):
    from edgefleet.flows.rollout.flow import RolloutHalted, rollout

    world = start_world(max_fps=KILL_TEST_MAX_FPS)

    assert world.currents() == {"1.0.0"}
    world.releases.publish("1.3.0")
    victim = world.fleet.devices["sim-3"]
    installed = victim.root / "models" / MODEL / "1.3.0"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = rollout(world.params(version="1.3.0", waves=[1, "60%", "100%"],
                                                     rollback_policy="all"))
        except RolloutHalted as error:
            outcome["halted"] = error

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + KILL_WAIT_S
    while not installed.exists() and time.monotonic() < deadline:  # the kill lands inside wave 2
        time.sleep(0.05)
    world.fleet.kill("sim-3")
    runner.join(ROLLOUT_JOIN_S)

    assert "halted" in outcome, outcome
    record = world.record("imagenet-1.3.0")
    assert record["halted"]["wave"] == 2 and record["halted"]["failed"] == ["sim-3"]
    assert record["devices"]["sim-3"]["error"]["kind"] in ("DeviceUnreachable", "RemoteCommandError")
    for device_id in ("sim-1", "sim-2"):  # changed by this rollout, rolled back by the policy "all"
        assert record["devices"][device_id]["state"] == "rolled_back"
        assert world.current(device_id) == "1.0.0"
    for device_id in ("sim-4", "sim-5"):  # wave 3 never started
        assert record["devices"][device_id]["state"] == "pending"
        assert not (world.fleet.devices[device_id].root / "models" / MODEL / "1.3.0").exists()
        assert world.current(device_id) == "1.0.0"
