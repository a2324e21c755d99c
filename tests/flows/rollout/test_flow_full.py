"""The `rollout` flow end to end: real Prefect runs, real sshd per device, real agents, real fleet monitor.

Each test of the rollout flow gets a fleet of its own (`world`, `start_world`): the tests run in any order,
and the files (test_rollout_flow_*.py) spread over the workers of `pytest -n N --dist loadfile`. This one: a
complete rollout, and a repeat that sends nothing.
"""

from __future__ import annotations

import pytest

from edgefleet.kernel.contracts.manifest import ChannelPointer  # noqa: F401 - documents what channels hold

from .conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def test_full_rollout_moves_every_device_and_the_channel_then_a_repeat_sends_no_model_bytes(world):
    from edgefleet.flows.rollout.flow import rollout

    assert set(world.running_versions().values()) == {"1.0.0"}
    world.releases.publish("1.1.0")
    result = rollout(world.params(version="1.1.0", channel="canary", waves=[1, "50%", "100%"]))

    assert result.state == "completed" and result.done == 5 and result.failed == 0
    assert world.releases.registry.read_channel(MODEL, "canary").pointer.version == "1.1.0"
    assert world.currents() == {"1.1.0"}
    world.fleet.wait_agents(lambda s: s.version == "1.1.0", timeout_s=30)
    record = world.record("imagenet-1.1.0")
    assert record["state"] == "completed" and record["waves"] == [["sim-1"], ["sim-2", "sim-3"], ["sim-4", "sim-5"]]
    model_size = (world.releases.build("1.1.0") / "model_cpu.tflite").stat().st_size
    for device in record["devices"].values():
        assert device["before"] == "1.0.0" and device["after"] == "1.1.0"
        assert [step["name"] for step in device["steps"]] == ["connect", "preflight", "upload", "verify", "activate",
                                                              "health"]
        assert device["bytes_transferred"] >= model_size  # the new model bytes had to travel
        assert device["bytes_reused"] > 0  # labels.txt was already on the device (same sha256): not sent
        assert device["health_source"] == "monitor"  # the monitor knows every device: it is asked first
    # Each wave was judged by the canary analysis; the first against devices still on 1.0.0 at the same time,
    # the last (nobody left on 1.0.0) against its own devices before the activation.
    verdicts = record["verdicts"]
    assert [v["wave"] for v in verdicts] == [1, 2, 3] and all(v["verdict"]["result"] == "pass" for v in verdicts)
    # (the behaviour control is the same devices before activation once they have enough history there)
    assert verdicts[0]["verdict"]["control"].startswith("concurrent")
    assert verdicts[0]["source"] == "monitor"
    assert verdicts[-1]["verdict"]["control"] == "before-activation"
    assert {m["name"] for m in verdicts[0]["verdict"]["metrics"]} >= {"latency", "errors", "class_mix_control"}
    from prefect.artifacts import Artifact

    artifact = Artifact.get("rollout-imagenet-1-1-0-canary")  # the verdict table, with a stable key
    assert artifact is not None and "class_mix_control" in str(artifact.data)

    repeat = rollout(world.params(version="1.1.0", rollout_id="imagenet-1.1.0-again"))
    assert repeat.state == "completed" and repeat.done == 5 and repeat.bytes_transferred == 0
    again = world.record("imagenet-1.1.0-again")
    assert all("upload" not in [s["name"] for s in d["steps"]] for d in again["devices"].values())
