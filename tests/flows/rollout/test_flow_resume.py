"""A halted rollout resumes where it stopped, and a changed host key is refused (a fleet of the test's own,
see test_rollout_flow_full.py)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def test_rerun_after_halt_resumes_and_host_keys_are_enforced(world):
    """sim-3 comes back re-installed (a new host key): refused until known_hosts is fixed; then resume."""
    from edgefleet.flows.rollout.flow import RolloutHalted, rollout

    assert world.currents() == {"1.0.0"}
    victim = world.fleet.devices["sim-3"]
    world.fleet.kill("sim-3")  # the device goes away, and is re-installed
    victim.host_key.unlink()
    victim.host_key.with_suffix(".pub").unlink()
    world.fleet._prepare(victim)  # a new host key, as after a re-install
    world.fleet.start_sshd("sim-3")
    world.fleet.start_agent("sim-3")
    world.releases.publish("1.4.0")
    params = world.params(version="1.4.0", waves=[1, "100%"], failure_threshold=0.0)
    with pytest.raises(RolloutHalted):
        rollout(params)
    record = world.record("imagenet-1.4.0")
    assert record["devices"]["sim-3"]["error"]["kind"] == "HostKeyError"
    assert "differs from" in record["devices"]["sim-3"]["error"]["message"]
    done_first = {d for d, device in record["devices"].items() if device["state"] == "done"}
    assert done_first == {"sim-1", "sim-2", "sim-4", "sim-5"}

    world.fleet.write_known_hosts()  # the operator checked the new key and updated known_hosts
    result = rollout(params)
    assert result.state == "completed" and result.done == 5
    record = world.record("imagenet-1.4.0")
    assert record["runs"] == 2
    assert record["devices"]["sim-3"]["attempts"] == 2
    assert all(record["devices"][d]["attempts"] == 1 for d in done_first)  # skipped on the re-run
    assert world.currents() == {"1.4.0"}
