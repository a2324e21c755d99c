"""Promotion after the canary (a fleet of each test's own, see test_rollout_flow_full.py): the scheduled
promotion waits for the healthy time, and an approval pauses the rollout until a person resumes it."""

from __future__ import annotations

import threading
import time

import pytest

from .conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

HEALTHY_FOR_S = 2
PROMOTION_WAIT_S = 120  # for the canary devices to have been healthy HEALTHY_FOR_S in the monitor's view
POLL_S = 0.5
PAUSE_WAIT_S = 180
ROLLOUT_JOIN_S = 240


def _promote_when_healthy(params):  # noqa: ANN001, ANN202 - PromotionParams -> PromotionResult
    """promote-canary, run again (as its schedule would) until it promotes or PROMOTION_WAIT_S passed; the last
    result either way."""
    from edgefleet.flows.rollout.promote import promote_canary

    deadline = time.monotonic() + PROMOTION_WAIT_S
    while not (result := promote_canary(params)).promoted and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return result


def test_scheduled_promotion_waits_for_the_healthy_time_then_promotes(world):
    from edgefleet.flows.rollout.params import PromotionParams
    from edgefleet.flows.rollout.promote import promote_canary

    registry = world.releases.registry
    assert world.currents() == {"1.0.0"}  # and the canary channel names it:
    assert registry.read_channel(MODEL, "canary").pointer.version == "1.0.0"
    stable_before = registry.read_channel(MODEL, "stable").pointer
    common = {"inventory": str(world.fleet.inventory_path), "registry": str(world.releases.registry_dir),
              "model": MODEL, "monitor_config": str(world.monitor_config),
              "judge": {"min_promotion_inferences": 5},
              "signing": {"key_file": str(world.releases.private_key_path)}}

    world.wait_monitored(("sim-1", "sim-2"), "1.0.0")  # the agents' readiness says nothing of the monitor's view
    waiting = promote_canary(PromotionParams(**common, healthy_for_s=3600))
    assert not waiting.promoted and waiting.version == "1.0.0"
    assert "of the required 3600 s" in waiting.reason and waiting.devices == ("sim-1", "sim-2")
    assert registry.read_channel(MODEL, "stable").pointer == stable_before  # nothing moved

    promoted = _promote_when_healthy(PromotionParams(**common, healthy_for_s=HEALTHY_FOR_S))
    assert promoted.promoted, promoted.reason
    assert registry.read_channel(MODEL, "stable").pointer.version == "1.0.0"

    again = promote_canary(PromotionParams(**common, healthy_for_s=HEALTHY_FOR_S))
    assert not again.promoted and "already names 1.0.0" in again.reason


def test_approval_after_the_canary_wave_pauses_until_a_person_resumes(world):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName
    from prefect.flow_runs import resume_flow_run

    from edgefleet.flows.rollout.flow import rollout

    assert world.currents() == {"1.0.0"}
    world.releases.publish("1.5.0")
    outcome: dict[str, object] = {}
    params = world.params(version="1.5.0", waves=[1, "100%"], approve_after_canary=True, approval_timeout_s=300)
    thread = threading.Thread(target=lambda: outcome.update(result=rollout(params)), daemon=True)
    thread.start()
    paused = FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"])))
    deadline = time.monotonic() + PAUSE_WAIT_S
    runs = []
    with get_client(sync_client=True) as client:
        while not runs and time.monotonic() < deadline and thread.is_alive():
            runs = client.read_flow_runs(flow_run_filter=paused)
            time.sleep(POLL_S)
    assert len(runs) == 1, outcome
    # While paused: the canary runs the new version, the rest of the fleet is untouched.
    assert {d: world.current(d) for d in world.fleet.devices} == {
        "sim-1": "1.5.0", "sim-2": "1.0.0", "sim-3": "1.0.0", "sim-4": "1.0.0", "sim-5": "1.0.0"}
    resume_flow_run(runs[0].id)  # what the "Resume" button in the Prefect UI does
    thread.join(ROLLOUT_JOIN_S)
    assert outcome["result"].state == "completed" and outcome["result"].done == 5
    assert world.currents() == {"1.5.0"}
