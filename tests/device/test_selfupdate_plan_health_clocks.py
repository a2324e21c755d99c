"""The updater's health verdict when the wall clock moves (issue 23 item 4, review): a Raspberry Pi has no RTC,
boots at its last saved time and NTP steps the clock, by minutes or days, either way. Whether the agent started
after the switch, whether its status is fresh and when the wait ends are judged on the boot's monotonic clock
(with the boot id), never on the wall clock; a wait that only ran out rolls back but the release is refused only
after `max_attempts` such attempts. Pure functions: no clock is read here."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from edgefleet.device.selfupdate_plan import (
    Moment,
    Pending,
    UpdaterState,
    after_health,
    decide,
    health,
    resumed,
    version_target,
)
from edgefleet.device.trust.pointers import ChannelRecord, version_identity
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.status import AgentStatus, BootClock

WALL = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
BOOT, NEXT_BOOT = "b" * 32, "c" * 32
SWITCH_S = 1000.0  # the switch on the boot's monotonic clock
TIMEOUT_S = 300.0
FRESH = timedelta(seconds=60)
SHA = "a" * 64
IDENTITY = version_identity("2.0.0", SHA)
PENDING = Pending(version="2.0.0", manifest_sha256=SHA, target=version_target("2.0.0"), previous_target="venv",
                  switched_at=WALL, boot_id=BOOT, switched_s=SWITCH_S, deadline_s=SWITCH_S + TIMEOUT_S,
                  channel_after=ChannelRecord(highest_version="2.0.0"))


def at(after_s: float, *, step: timedelta = timedelta(0), boot: str = BOOT, mono: float | None = None) -> Moment:
    """The device's clocks `after_s` after the switch, its wall clock stepped by `step` since."""
    return Moment(wall=WALL + timedelta(seconds=after_s) + step,
                  monotonic_s=SWITCH_S + after_s if mono is None else mono, boot_id=boot)


def agent(started: Moment, written: Moment, state: str = "running") -> AgentStatus:
    """The status an agent started at `started` writes at `written` (both clocks, as the agent stamps them)."""
    return AgentStatus(device_id="cam-1", pid=7, state=state, started_at=started.wall, updated_at=written.wall,
                       boot=BootClock(boot_id=started.boot_id or "", started_s=started.monotonic_s,
                                      updated_s=written.monotonic_s))


def test_a_clock_stepped_back_after_the_switch_keeps_the_healthy_agent_and_refuses_nothing() -> None:
    back = timedelta(minutes=-2)  # the reviewer's case: NTP steps back right after the switch
    started = at(5, step=back)
    for after_s in (30, 200, 420):
        now = at(after_s, step=back)
        assert health(agent(started, now), PENDING, now, fresh_within=FRESH) == "healthy", after_s


def test_a_clock_stepped_forward_by_days_does_not_end_the_wait() -> None:
    ahead = timedelta(days=3)
    now = at(30, step=ahead)
    assert health(None, PENDING, now, fresh_within=FRESH) == "waiting"  # 3 days of wall time are not 300 s
    started = at(20)  # started before the step; its next write is after it
    assert health(agent(started, now), PENDING, now, fresh_within=FRESH) == "healthy"


def test_the_old_agents_status_is_not_the_new_agent_whatever_its_wall_times_say() -> None:
    before = at(-3600, step=timedelta(hours=2))  # started an hour before the switch, on a clock 2 h ahead then
    now = at(10)
    assert health(agent(before, now), PENDING, now, fresh_within=FRESH) == "waiting"
    assert health(agent(before, now), PENDING, at(TIMEOUT_S), fresh_within=FRESH) == "timed-out"


def test_a_status_that_stopped_being_written_is_stale_even_when_the_clock_went_back() -> None:
    started = at(5)
    last_write = at(10)
    now = at(200, step=timedelta(minutes=-10))  # wall time now is before the last write
    assert health(agent(started, last_write), PENDING, now, fresh_within=FRESH) == "waiting"


def test_a_status_of_another_boot_is_not_the_new_agent() -> None:
    earlier_boot = at(5, boot=NEXT_BOOT)
    now = at(10)
    assert health(agent(earlier_boot, earlier_boot), PENDING, now, fresh_within=FRESH) == "waiting"


def test_the_wait_ends_on_the_monotonic_clock_and_a_timeout_is_its_own_verdict() -> None:
    assert health(None, PENDING, at(TIMEOUT_S - 1, step=timedelta(days=-1)), fresh_within=FRESH) == "waiting"
    assert health(None, PENDING, at(TIMEOUT_S, step=timedelta(days=-1)), fresh_within=FRESH) == "timed-out"
    failed = agent(at(5), at(6), state="failed")
    assert health(failed, PENDING, at(10), fresh_within=FRESH) == "unhealthy"  # it said so: no wait


def test_a_reboot_restarts_the_wait_and_any_agent_of_the_new_boot_started_after_the_switch() -> None:
    now = at(0, boot=NEXT_BOOT, mono=600.0)  # the updater's first run after boot (OnBootSec)
    waiting = resumed(PENDING, now, timeout_s=TIMEOUT_S, max_waits=3)
    assert (waiting.boot_id, waiting.switched_s, waiting.deadline_s, waiting.waits) == (NEXT_BOOT, 0.0, 900.0, 2)
    assert resumed(waiting, now, timeout_s=TIMEOUT_S, max_waits=3) == waiting  # same boot: the same wait
    booted = agent(at(0, boot=NEXT_BOOT, mono=12.0), now)  # the service started it at boot, before the updater
    assert health(booted, waiting, now, fresh_within=FRESH) == "healthy"
    assert health(None, waiting, at(0, boot=NEXT_BOOT, mono=899.0), fresh_within=FRESH) == "waiting"
    assert health(None, waiting, at(0, boot=NEXT_BOOT, mono=900.0), fresh_within=FRESH) == "timed-out"


def test_reboots_that_keep_interrupting_the_wait_end_it_but_a_healthy_agent_is_still_kept() -> None:
    third = PENDING.model_copy(update={"waits": 3})
    now = at(0, boot=NEXT_BOOT, mono=600.0)
    ended = resumed(third, now, timeout_s=TIMEOUT_S, max_waits=3)
    assert health(None, ended, now, fresh_within=FRESH) == "timed-out"
    assert health(agent(at(0, boot=NEXT_BOOT, mono=30.0), now), ended, now, fresh_within=FRESH) == "healthy"


def test_a_timed_out_release_is_rolled_back_and_retried_until_max_attempts() -> None:
    pointer = ChannelPointer(model="edgefleet-agent", channel="stable", version="2.0.0", manifest_sha256=SHA)
    state = UpdaterState(pending=PENDING, running="1.0.0 " + "d" * 64)
    for attempt in (1, 2):
        state = after_health(state, "timed-out", max_attempts=3)
        assert state.pending is None and state.refused == () and state.timed_out == (IDENTITY,) * attempt
        assert decide_install(pointer, state)
        state = state.model_copy(update={"pending": PENDING})
    state = after_health(state, "timed-out", max_attempts=3)
    assert state.refused == (IDENTITY,) and state.timed_out == ()  # the third: refused for good
    assert not decide_install(pointer, state)


def test_a_release_that_comes_up_after_a_timeout_forgets_its_attempts() -> None:
    state = UpdaterState(pending=PENDING, timed_out=(IDENTITY, "3.0.0 " + "e" * 64))
    kept = after_health(state, "healthy", max_attempts=3)
    assert kept.running == IDENTITY and kept.timed_out == ("3.0.0 " + "e" * 64,)


def test_an_agent_without_the_boot_clock_is_judged_on_the_wall_clock_as_before() -> None:
    """An agent release older than the boot clock (or one that could not read the boot id) still says when it
    started: judged as before, on the wall clock, the deadline still monotonic."""
    plain = AgentStatus(device_id="cam-1", pid=7, state="running", started_at=WALL + timedelta(seconds=5),
                        updated_at=WALL + timedelta(seconds=9))
    assert health(plain, PENDING, at(10), fresh_within=FRESH) == "healthy"
    older = plain.model_copy(update={"started_at": WALL - timedelta(hours=1)})
    assert health(older, PENDING, at(10), fresh_within=FRESH) == "waiting"


def decide_install(pointer: ChannelPointer, state: UpdaterState) -> bool:
    from edgefleet.device.trust.pointers import Judgement

    return decide(Judgement("accept", ""), pointer, state).kind == "install"
