"""The canary judged from the agents' own status, and a lower version (a fleet of each test's own, see
test_rollout_flow_full.py)."""

from __future__ import annotations

import pytest

from .conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

AGENT_HEALTH = {"timeout_s": 60, "poll_interval_s": 0.5, "source": "agent"}


def test_without_the_monitor_the_canary_reads_the_agents_own_status(world):
    from edgefleet.flows.rollout.flow import rollout

    assert world.currents() == {"1.0.0"}
    world.releases.publish("1.6.0")
    result = rollout(world.params(version="1.6.0", waves=[2, "100%"], health=AGENT_HEALTH))
    assert result.state == "completed", result.halted_reason
    verdicts = world.record("imagenet-1.6.0")["verdicts"]
    assert all(v["source"] == "agent" and v["verdict"]["control"] == "before-activation" for v in verdicts)
    assert all(v["verdict"]["result"] == "pass" for v in verdicts)
    judged = {m["name"] for m in verdicts[0]["verdict"]["metrics"] if m["result"] != "nodata"}
    assert {"latency", "errors", "class_mix_control", "score_control"} <= judged
    # Issue 24: the agents write their status in a runtime directory (systemd's RuntimeDirectory=, mimicked by
    # the fleet); the rollout read it over SSH through <root>/status.json, the agents' link there.
    assert all(d["health_source"] == "agent" for d in world.record("imagenet-1.6.0")["devices"].values())
    for device in world.fleet.devices.values():
        link = device.root / "status.json"
        assert link.is_symlink() and link.resolve() == (device.runtime_dir / "status.json").resolve()


def test_a_lower_version_moves_nobody_down_until_a_signed_pointer_says_downgrade(start_world):
    """Issue 20 item 3: a rollout naming an older version, or following a replayed old pointer, used to move
    devices down over SSH, where the agent's channel floor is never asked."""
    from edgefleet.flows.rollout.flow import RolloutHalted, rollout

    world = start_world(running="1.6.0", published=("1.5.0",))
    assert world.currents() == {"1.6.0"}
    with pytest.raises(RolloutHalted):
        rollout(world.params(version="1.5.0", waves=[1, "100%"], rollout_id="down-by-version"))
    canary = world.record("down-by-version")["devices"]["sim-1"]
    assert canary["error"]["step"] == "preflight" and "no signed pointer marks it" in canary["error"]["message"]
    assert world.currents() == {"1.6.0"}  # nobody moved

    registry = world.releases.registry
    registry.promote(MODEL, "1.5.0", "stable", signing_key=world.releases.private_key, downgrade=True)
    result = rollout(world.params(channel="stable", waves=[1, "100%"], rollout_id="down-signed",
                                  health=AGENT_HEALTH))
    assert result.state == "completed", result.halted_reason
    assert world.currents() == {"1.5.0"}
