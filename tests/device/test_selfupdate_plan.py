"""The agent updater's pure decisions (`edgefleet.device.selfupdate_plan`): what a judged pointer leads to,
when a switched-to agent is healthy, and the state after the verdict."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from edgefleet.device.selfupdate_plan import (
    Moment,
    Pending,
    UpdaterState,
    after_health,
    decide,
    health,
    removable_versions,
    version_target,
)
from edgefleet.device.trust.pointers import ChannelRecord, Judgement, version_identity
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.status import AgentStatus

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
SHA = "a" * 64
FRESH = timedelta(seconds=60)
BOOT, SWITCH_S, TIMEOUT_S = "b" * 32, 500.0, 300.0
POINTER = ChannelPointer(model="edgefleet-agent", channel="stable", version="1.2.0", manifest_sha256=SHA)
PENDING = Pending(version="1.2.0", manifest_sha256=SHA, target=version_target("1.2.0"), previous_target="venv",
                  switched_at=NOW, boot_id=BOOT, switched_s=SWITCH_S, deadline_s=SWITCH_S + TIMEOUT_S,
                  channel_after=ChannelRecord(highest_version="1.2.0"))
DEADLINE = NOW + timedelta(seconds=TIMEOUT_S)


def at(wall: datetime) -> Moment:
    """The device's clocks at `wall` (no clock step here: the boot clock moved as much since the switch)."""
    return Moment(wall=wall, monotonic_s=SWITCH_S + (wall - NOW).total_seconds(), boot_id=BOOT)


def status(state: str = "running", *, started: datetime = NOW + timedelta(seconds=5),
           updated: datetime | None = None) -> AgentStatus:
    return AgentStatus(device_id="cam-1", pid=42, state=state, started_at=started, updated_at=updated or started)


def test_an_accepted_pointer_to_a_new_version_installs_it() -> None:
    action = decide(Judgement("accept", "ok"), POINTER, UpdaterState(running=version_identity("1.1.0", "b" * 64)))
    assert action.kind == "install" and "1.2.0" in action.reason


@pytest.mark.parametrize("verdict, kind", [("refuse", "refuse"), ("expired", "none")])
def test_a_pointer_the_channel_rules_do_not_accept_installs_nothing(verdict: str, kind: str) -> None:
    assert decide(Judgement(verdict, "why"), POINTER, UpdaterState()) == (kind, "why")


def test_the_running_version_and_a_refused_release_install_nothing() -> None:
    identity = version_identity("1.2.0", SHA)
    assert decide(Judgement("accept", ""), POINTER, UpdaterState(running=identity)).kind == "none"
    refused = decide(Judgement("accept", ""), POINTER, UpdaterState(refused=(identity,)))
    assert refused.kind == "none" and "not retried" in refused.reason
    republished = POINTER.model_copy(update={"manifest_sha256": "c" * 64})  # the same version, fixed
    assert decide(Judgement("accept", ""), republished, UpdaterState(refused=(identity,))).kind == "install"


def test_health_needs_a_fresh_running_status_of_an_agent_started_after_the_switch() -> None:
    assert health(status(), PENDING, at(NOW + timedelta(seconds=10)), fresh_within=FRESH) == "healthy"
    old_agent = status(started=NOW - timedelta(hours=1), updated=NOW + timedelta(seconds=9))
    assert health(old_agent, PENDING, at(NOW + timedelta(seconds=10)), fresh_within=FRESH) == "waiting"
    stale = status(updated=NOW + timedelta(seconds=5))
    assert health(stale, PENDING, at(NOW + timedelta(minutes=2)), fresh_within=FRESH) == "waiting"
    assert health(status("starting"), PENDING, at(NOW + timedelta(seconds=10)), fresh_within=FRESH) == "waiting"
    assert health(None, PENDING, at(NOW + timedelta(seconds=10)), fresh_within=FRESH) == "waiting"


def test_health_times_out_at_the_deadline_and_is_unhealthy_when_the_new_agent_failed() -> None:
    assert health(None, PENDING, at(DEADLINE), fresh_within=FRESH) == "timed-out"
    assert health(status("starting"), PENDING, at(DEADLINE), fresh_within=FRESH) == "timed-out"
    assert health(status("failed"), PENDING, at(NOW + timedelta(seconds=10)), fresh_within=FRESH) == "unhealthy"


def test_a_naive_status_time_is_read_as_utc_never_a_crash() -> None:
    naive = status(started=(NOW + timedelta(seconds=5)).replace(tzinfo=None))
    assert health(naive, PENDING, at(NOW + timedelta(seconds=10)), fresh_within=FRESH) == "healthy"


def test_after_a_healthy_switch_the_version_runs_and_the_channel_record_moves_on() -> None:
    state = after_health(UpdaterState(pending=PENDING), "healthy")
    assert state.pending is None and state.running == version_identity("1.2.0", SHA)
    assert state.channel.highest_version == "1.2.0"


def test_after_an_unhealthy_switch_the_release_is_refused_and_the_channel_record_stays() -> None:
    before = UpdaterState(pending=PENDING, running="1.1.0 " + "b" * 64, channel=ChannelRecord(highest_version="1.1.0"))
    state = after_health(before, "unhealthy")
    assert state.pending is None and state.running == before.running
    assert state.refused == (version_identity("1.2.0", SHA),) and state.channel.highest_version == "1.1.0"
    assert after_health(before, "waiting") == before


def test_only_versions_no_link_points_at_are_removed() -> None:
    assert removable_versions(["1.0.0", "1.1.0", "1.2.0"], {"1.2.0", "1.1.0"}) == ["1.0.0"]


def test_an_agent_that_comes_up_without_the_model_its_predecessor_ran_is_not_kept() -> None:
    ran = PENDING.model_copy(update={"ran_model": True})
    no_model = status()  # running, but no model version open
    with_model = status().model_copy(update={"model": "imagenet", "version": "1.0.0"})
    assert health(no_model, ran, at(NOW + timedelta(seconds=10)), fresh_within=FRESH) == "waiting"
    assert health(no_model, ran, at(DEADLINE), fresh_within=FRESH) == "timed-out"
    assert health(with_model, ran, at(NOW + timedelta(seconds=10)), fresh_within=FRESH) == "healthy"
    assert health(no_model, PENDING, at(NOW + timedelta(seconds=10)), fresh_within=FRESH) == "healthy"  # none before
