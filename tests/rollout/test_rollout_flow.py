"""The `rollout` flow end to end: real Prefect runs, real sshd per device, real agents, real fleet monitor.

The tests share one fleet and run in file order; each starts from the state the previous one left, which
it asserts first.
"""

from __future__ import annotations

import threading
import time

import pytest

from edgefleet.flows.registry import rollout_key
from edgefleet.kernel.contracts.manifest import ChannelPointer  # noqa: F401 - documents what channels hold

from .conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def _record(world, rollout_id):
    return world.releases.registry.get_json(rollout_key(rollout_id))


def test_full_rollout_moves_every_device_and_the_channel_then_a_repeat_sends_no_model_bytes(world):
    from edgefleet.flows.rollout.flow import rollout

    assert set(world.running_versions().values()) == {"1.0.0"}
    world.releases.publish("1.1.0")
    result = rollout(world.params(version="1.1.0", channel="canary", waves=[1, "50%", "100%"]))

    assert result.state == "completed" and result.done == 5 and result.failed == 0
    assert world.releases.registry.read_channel(MODEL, "canary").pointer.version == "1.1.0"
    assert {world.current(device_id) for device_id in world.fleet.devices} == {"1.1.0"}
    world.fleet.wait_agents(lambda s: s.version == "1.1.0", timeout_s=30)
    record = _record(world, "imagenet-1.1.0")
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
    again = _record(world, "imagenet-1.1.0-again")
    assert all("upload" not in [s["name"] for s in d["steps"]] for d in again["devices"].values())


def test_version_failing_the_device_smoke_test_is_rolled_back_by_the_device_and_halts(world):
    from edgefleet.flows.rollout.flow import RolloutHalted, rollout

    assert {world.current(device_id) for device_id in world.fleet.devices} == {"1.1.0"}
    world.releases.publish("1.2.0", bad=True)
    with pytest.raises(RolloutHalted) as halted:
        rollout(world.params(version="1.2.0", channel="canary"))

    assert halted.value.result.state == "halted" and "sim-1" in halted.value.message
    record = _record(world, "imagenet-1.2.0")
    canary = record["devices"]["sim-1"]
    assert canary["refused_by_device"] and canary["state"] == "rolled_back" and canary["rolled_back_to"] == "1.1.0"
    assert canary["error"]["step"] == "health" and "smoke test" in canary["error"]["message"]
    assert world.current("sim-1") == "1.1.0"  # the agent put its pointer back by itself
    assert all(record["devices"][d]["state"] == "pending" for d in ("sim-2", "sim-3", "sim-4", "sim-5"))
    for device_id in ("sim-2", "sim-3", "sim-4", "sim-5"):  # never touched
        assert not (world.fleet.devices[device_id].root / "models" / MODEL / "1.2.0").exists()
    assert world.releases.registry.read_channel(MODEL, "canary").pointer.version == "1.1.0"


def test_device_killed_mid_wave_halts_and_rolls_back_everything_this_rollout_changed(world):
    from edgefleet.flows.rollout.flow import RolloutHalted, rollout

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
    deadline = time.monotonic() + 120
    while not installed.exists() and time.monotonic() < deadline:  # the kill lands inside wave 2
        time.sleep(0.05)
    world.fleet.kill("sim-3")
    runner.join(180)

    assert "halted" in outcome, outcome
    record = _record(world, "imagenet-1.3.0")
    assert record["halted"]["wave"] == 2 and record["halted"]["failed"] == ["sim-3"]
    assert record["devices"]["sim-3"]["error"]["kind"] in ("DeviceUnreachable", "RemoteCommandError")
    for device_id in ("sim-1", "sim-2"):  # changed by this rollout, rolled back by the policy "all"
        assert record["devices"][device_id]["state"] == "rolled_back"
        assert world.current(device_id) == "1.1.0"
    for device_id in ("sim-4", "sim-5"):  # wave 3 never started
        assert record["devices"][device_id]["state"] == "pending"
        assert not (world.fleet.devices[device_id].root / "models" / MODEL / "1.3.0").exists()
        assert world.current(device_id) == "1.1.0"


def test_rerun_after_halt_resumes_and_host_keys_are_enforced(world):
    """sim-3 comes back re-installed (a new host key): refused until known_hosts is fixed; then resume."""
    from edgefleet.flows.rollout.flow import RolloutHalted, rollout

    victim = world.fleet.devices["sim-3"]
    victim.host_key.unlink()
    victim.host_key.with_suffix(".pub").unlink()
    world.fleet._prepare(victim)  # a new host key, as after a re-install
    world.fleet.start_sshd("sim-3")
    world.fleet.start_agent("sim-3")
    world.releases.publish("1.4.0")
    params = world.params(version="1.4.0", waves=[1, "100%"], failure_threshold=0.0)
    with pytest.raises(RolloutHalted):
        rollout(params)
    record = _record(world, "imagenet-1.4.0")
    assert record["devices"]["sim-3"]["error"]["kind"] == "HostKeyError"
    assert "differs from" in record["devices"]["sim-3"]["error"]["message"]
    done_first = {d for d, device in record["devices"].items() if device["state"] == "done"}
    assert done_first == {"sim-1", "sim-2", "sim-4", "sim-5"}

    world.fleet.write_known_hosts()  # the operator checked the new key and updated known_hosts
    result = rollout(params)
    assert result.state == "completed" and result.done == 5
    record = _record(world, "imagenet-1.4.0")
    assert record["runs"] == 2
    assert record["devices"]["sim-3"]["attempts"] == 2
    assert all(record["devices"][d]["attempts"] == 1 for d in done_first)  # skipped on the re-run
    assert {world.current(device_id) for device_id in world.fleet.devices} == {"1.4.0"}


def test_scheduled_promotion_waits_for_the_healthy_time_then_promotes(world):
    from edgefleet.flows.rollout.params import PromotionParams
    from edgefleet.flows.rollout.promote import promote_canary

    registry = world.releases.registry
    registry.promote(MODEL, "1.4.0", "canary", by="test", signing_key=world.releases.private_key,
                     downgrade=True)  # every device runs 1.4.0 since the last test
    stable_before = registry.read_channel(MODEL, "stable").pointer
    common = {"inventory": str(world.fleet.inventory_path), "registry": str(world.releases.registry_dir),
              "model": MODEL, "monitor_config": str(world.monitor_config), "min_inferences": 5,
              "signing": {"key_file": str(world.releases.private_key_path)}}

    waiting = promote_canary(PromotionParams(**common, healthy_for_s=3600))
    assert not waiting.promoted and waiting.version == "1.4.0"
    assert "of the required 3600 s" in waiting.reason and waiting.devices == ("sim-1", "sim-2")
    assert registry.read_channel(MODEL, "stable").pointer == stable_before  # nothing moved

    time.sleep(3)
    promoted = promote_canary(PromotionParams(**common, healthy_for_s=2))
    assert promoted.promoted, promoted.reason
    assert registry.read_channel(MODEL, "stable").pointer.version == "1.4.0"

    again = promote_canary(PromotionParams(**common, healthy_for_s=2))
    assert not again.promoted and "already names 1.4.0" in again.reason


def test_approval_after_the_canary_wave_pauses_until_a_person_resumes(world):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName
    from prefect.flow_runs import resume_flow_run

    from edgefleet.flows.rollout.flow import rollout

    assert {world.current(device_id) for device_id in world.fleet.devices} == {"1.4.0"}
    world.releases.publish("1.5.0")
    outcome: dict[str, object] = {}
    params = world.params(version="1.5.0", waves=[1, "100%"], approve_after_canary=True, approval_timeout_s=300)
    thread = threading.Thread(target=lambda: outcome.update(result=rollout(params)), daemon=True)
    thread.start()
    paused = FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"])))
    deadline = time.monotonic() + 180
    runs = []
    with get_client(sync_client=True) as client:
        while not runs and time.monotonic() < deadline and thread.is_alive():
            runs = client.read_flow_runs(flow_run_filter=paused)
            time.sleep(0.5)
    assert len(runs) == 1, outcome
    # While paused: the canary runs the new version, the rest of the fleet is untouched.
    assert {d: world.current(d) for d in world.fleet.devices} == {
        "sim-1": "1.5.0", "sim-2": "1.4.0", "sim-3": "1.4.0", "sim-4": "1.4.0", "sim-5": "1.4.0"}
    resume_flow_run(runs[0].id)  # what the "Resume" button in the Prefect UI does
    thread.join(240)
    assert outcome["result"].state == "completed" and outcome["result"].done == 5
    assert {world.current(device_id) for device_id in world.fleet.devices} == {"1.5.0"}


def test_without_the_monitor_the_canary_reads_the_agents_own_status(world):
    from edgefleet.flows.rollout.flow import rollout

    assert {world.current(device_id) for device_id in world.fleet.devices} == {"1.5.0"}
    world.releases.publish("1.6.0")
    result = rollout(world.params(version="1.6.0", waves=[2, "100%"], health={
        "min_inferences": 5, "timeout_s": 60, "poll_interval_s": 0.5, "source": "agent"}))
    assert result.state == "completed", result.halted_reason
    verdicts = _record(world, "imagenet-1.6.0")["verdicts"]
    assert all(v["source"] == "agent" and v["verdict"]["control"] == "before-activation" for v in verdicts)
    assert all(v["verdict"]["result"] == "pass" for v in verdicts)
    judged = {m["name"] for m in verdicts[0]["verdict"]["metrics"] if m["result"] != "nodata"}
    assert {"latency", "errors", "class_mix_control", "score_control"} <= judged


def test_a_lower_version_moves_nobody_down_until_a_signed_pointer_says_downgrade(world):
    """Issue 20 item 3: a rollout naming an older version, or following a replayed old pointer, used to move
    devices down over SSH, where the agent's channel floor is never asked."""
    from edgefleet.flows.rollout.flow import RolloutHalted, rollout

    assert {world.current(device_id) for device_id in world.fleet.devices} == {"1.6.0"}
    with pytest.raises(RolloutHalted):
        rollout(world.params(version="1.5.0", waves=[1, "100%"], rollout_id="down-by-version"))
    canary = _record(world, "down-by-version")["devices"]["sim-1"]
    assert canary["error"]["step"] == "preflight" and "no signed pointer marks it" in canary["error"]["message"]
    assert {world.current(device_id) for device_id in world.fleet.devices} == {"1.6.0"}  # nobody moved

    registry = world.releases.registry
    registry.promote(MODEL, "1.5.0", "stable", signing_key=world.releases.private_key, downgrade=True)
    result = rollout(world.params(channel="stable", waves=[1, "100%"], rollout_id="down-signed",
                                  health={"min_inferences": 5, "timeout_s": 60, "poll_interval_s": 0.5,
                                          "source": "agent"}))
    assert result.state == "completed", result.halted_reason
    assert {world.current(device_id) for device_id in world.fleet.devices} == {"1.5.0"}
