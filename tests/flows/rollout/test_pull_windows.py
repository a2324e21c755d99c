"""A pull wave against maintenance windows (pure, `pull_windows.py`): a device whose window is closed waits for it
instead of going silent, its report timeout counts inside its window (across DST, property-tested with the
device's own window code as the oracle), and the wave is judged once `first_wave_min` devices reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.device.window import MaintenanceWindow, in_window, next_window_start
from edgefleet.flows.rollout.params import CanaryGate
from edgefleet.flows.rollout.pull_params import GroupWindow, PullRolloutParams
from edgefleet.flows.rollout.pull_waves import WaveObservation, decide_pull_wave, observe
from edgefleet.flows.rollout.pull_windows import (
    closed_now,
    next_opening,
    opening,
    openings,
    plan_wave,
    quorum,
    report_due,
    wave_watched,
    window_of,
    with_windows,
)
from edgefleet.flows.rollout.verdict import cannot_judge
from tests.flows.rollout.window_fleet import NIGHT, NIGHT_OPENS, NOON, TenMinuteClock, WindowFleet

MINUTE = timedelta(minutes=1)
TIMEOUT = timedelta(seconds=600)
# 2026-06-10 12:00 UTC is 14:00 in Berlin: the night window opens at 02:00 CEST, 00:00 UTC, 12 hours later

ZONES = ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago", "Asia/Kolkata", "UTC"]
CHANGES = [datetime(2026, 3, 8, 7, tzinfo=UTC), datetime(2026, 3, 29, 1, tzinfo=UTC),
           datetime(2026, 4, 4, 15, tzinfo=UTC), datetime(2026, 10, 4, 15, tzinfo=UTC),
           datetime(2026, 10, 25, 1, tzinfo=UTC), datetime(2026, 11, 1, 6, tzinfo=UTC)]
crons = st.one_of(
    st.builds(lambda m, h: f"{m} {h} * * *", st.integers(0, 59), st.integers(0, 23)),
    st.builds(lambda m, s: f"{m} {s}-23/3 * * *", st.integers(0, 59), st.integers(0, 2)),
    st.sampled_from(["30 2 * * *", "30 1 * * *", "*/20 1-3 * * *", "0,5 2 * * *"]),
)
windows = st.builds(MaintenanceWindow, cron=crons, timezone=st.sampled_from(ZONES),
                    duration_minutes=st.integers(1, 4 * 60))
# minute-aligned instants around the DST changes: every window boundary is then on a minute too
instants = st.builds(lambda base, minutes: base + minutes * MINUTE, st.sampled_from(CHANGES),
                     st.integers(-2 * 1440, 2 * 1440))
timeouts = st.builds(lambda minutes: minutes * MINUTE, st.integers(1, 180))


def minutes_open(window: MaintenanceWindow, start: datetime, end: datetime) -> int:
    """Independently of `pull_windows`: the minutes of [start, end) inside a window, from every local wall-clock
    start croniter lists around them read with fold=0 (as the device test's oracle does), intervals merged."""
    zone = ZoneInfo(window.timezone)
    local = start.astimezone(zone).replace(tzinfo=None) - window.duration - timedelta(hours=4)
    last = end.astimezone(zone).replace(tzinfo=None) + timedelta(hours=4)
    covered: set[datetime] = set()
    cron = croniter(window.cron, local)
    while (begin := cron.get_next(datetime)) <= last:
        opened = begin.replace(tzinfo=zone).astimezone(UTC)
        covered.update(opened + n * MINUTE for n in range(window.duration_minutes)
                       if start <= opened + n * MINUTE < end)
    return len(covered)


@settings(max_examples=30, deadline=None)
@given(window=windows, since=instants, timeout=timeouts)
def test_a_report_is_due_after_the_timeout_of_window_time_across_dst(
        window: MaintenanceWindow, since: datetime, timeout: timedelta) -> None:
    due = report_due(window, since, timeout)
    assert due >= since + timeout
    assert minutes_open(window, since, due) == timeout // MINUTE  # only time inside the window counted
    assert in_window(window, due - MINUTE)  # the deadline falls while the device is in its window


@settings(max_examples=30, deadline=None)
@given(window=windows, instant=instants)
def test_the_opening_is_the_first_open_instant(window: MaintenanceWindow, instant: datetime) -> None:
    opens = opening(window, instant)
    assert opens >= instant and in_window(window, opens)
    assert opens == instant or (not in_window(window, instant) and opens == next_window_start(window, instant))


def test_without_a_window_the_report_is_due_after_the_timeout() -> None:
    assert report_due(None, NOON, TIMEOUT) == NOON + TIMEOUT
    assert opening(None, NOON) == NOON


def test_the_timeout_counts_from_the_opening_in_the_skipped_spring_hour() -> None:
    window = MaintenanceWindow(cron="30 2 * * *", timezone="America/New_York", duration_minutes=60)
    # 2026-03-08 02:30 does not exist in New York: the window opens at 03:30 EDT (07:30 UTC)
    assert report_due(window, datetime(2026, 3, 8, 5, tzinfo=UTC), TIMEOUT) == datetime(2026, 3, 8, 7, 40, tzinfo=UTC)


def test_a_window_shorter_than_the_timeout_carries_over_to_the_next_one() -> None:
    window = MaintenanceWindow(cron="0 2 * * *", timezone="UTC", duration_minutes=4)
    # 4 minutes tonight, 4 tomorrow night, the last 2 the night after
    assert report_due(window, datetime(2026, 6, 10, 1, tzinfo=UTC), TIMEOUT) == datetime(2026, 6, 12, 2, 2,
                                                                                          tzinfo=UTC)


def test_a_device_takes_the_window_of_its_first_group() -> None:
    lab = MaintenanceWindow(cron="0 12 * * *", timezone="UTC", duration_minutes=60)
    groups = (GroupWindow(ids=("cam-1",), window=lab), GroupWindow(tags=("berlin", "night"), window=NIGHT))
    assert window_of(groups, "cam-1", ("night",)) == lab
    assert window_of(groups, "cam-2", ("lab", "night")) == NIGHT
    assert window_of(groups, "cam-3", ("lab",)) is None  # in no group: any time
    everyone = (*groups, GroupWindow(window=lab))
    assert window_of(everyone, "cam-3", ()) == lab


def test_the_params_name_a_bad_window_of_a_group() -> None:
    from pydantic import ValidationError

    base = {"registry": "r", "model": "birds", "version": "1.1.0", "public_key": "k", "monitor_config": "m.yaml"}
    params = PullRolloutParams.model_validate(base | {"windows": [
        {"tags": ["night"], "window": {"cron": "0 2 * * *", "timezone": "Europe/Berlin", "duration_minutes": 120}}]})
    assert params.windows[0].window == NIGHT
    with pytest.raises(ValidationError, match="Europe/Berln"):
        PullRolloutParams.model_validate(base | {"windows": [
            {"tags": ["night"], "window": {"cron": "0 2 * * *", "timezone": "Europe/Berln", "duration_minutes": 1}}]})


def _night_wave(devices: tuple[str, ...], versions: dict[str, str], now: datetime,
                failures: dict[str, int] | None = None) -> tuple[WaveObservation, dict]:
    """A wave begun at noon, its devices in the night group: what the watch sees at `now`."""
    plan = plan_wave((GroupWindow(tags=("night",), window=NIGHT),), devices, dict.fromkeys(devices, ("night",)),
                     NOON, TIMEOUT)
    return with_windows(observe(devices, versions, failures or {}, "1.1.0", 0), plan, now), plan


def test_devices_whose_window_has_not_opened_wait_for_it_instead_of_halting_the_wave() -> None:
    devices = ("a", "b", "c")
    # an hour after the wave began: the old watch had halted with no_report 50 minutes ago
    seen, plan = _night_wave(devices, {}, NOON + timedelta(hours=1))
    assert (seen.waiting, seen.window_waiting) == ((), devices)
    assert not wave_watched(seen, plan, NOON + timedelta(hours=1), quorum=quorum(3, 3), threshold=0.0)
    assert closed_now(plan, devices, NOON + timedelta(hours=11)) == devices
    assert next_opening(plan, devices, NOON + timedelta(hours=1)) == NIGHT_OPENS
    assert openings(plan, devices, NOON) == dict.fromkeys(devices, NIGHT_OPENS)
    # the window opened 5 minutes ago: two reported, the third may still
    now = NIGHT_OPENS + timedelta(minutes=5)
    seen, plan = _night_wave(devices, {"a": "1.1.0", "b": "1.1.0"}, now)
    assert (seen.up, seen.waiting, seen.window_waiting) == (("a", "b"), ("c",), ())
    assert not wave_watched(seen, plan, now, quorum=3, threshold=0.0)
    # ... and all three did: judged, and the judge's verdict decides
    seen, plan = _night_wave(devices, dict.fromkeys(devices, "1.1.0"), now)
    assert wave_watched(seen, plan, now, quorum=3, threshold=0.0) and seen.up == devices
    assert not decide_pull_wave(seen, 0.0, None).halt


def test_a_device_silent_in_its_window_past_the_timeout_is_no_report_as_before() -> None:
    devices = ("a", "b", "c")
    now = NIGHT_OPENS + TIMEOUT
    seen, plan = _night_wave(devices, {}, now)
    assert seen.waiting == devices and wave_watched(seen, plan, now, quorum=3, threshold=0.0)
    decision = decide_pull_wave(seen, 0.0, None)
    assert decision.halt and decision.halted_by == ("no_report",) and decision.failed == devices
    seen, plan = _night_wave(devices, {"a": "1.1.0"}, now - timedelta(seconds=1))
    assert not wave_watched(seen, plan, now - timedelta(seconds=1), quorum=3, threshold=0.0)  # still due


def test_the_wave_is_judged_once_the_wave_minimum_reported_and_the_rest_waits_for_its_window() -> None:
    day, night = ("d1", "d2", "d3"), ("n1", "n2")
    groups = (GroupWindow(tags=("night",), window=NIGHT),)
    plan = plan_wave(groups, day + night, dict.fromkeys(night, ("night",)), NOON, TIMEOUT)
    now = NOON + timedelta(minutes=2)
    two = with_windows(observe(day + night, {"d1": "1.1.0", "d2": "1.1.0"}, {}, "1.1.0", 0), plan, now)
    assert (two.waiting, two.window_waiting) == (("d3",), night)
    assert not wave_watched(two, plan, now, quorum=quorum(3, 5), threshold=0.0)  # d3 is in its window, due
    after = NOON + TIMEOUT  # d3 stayed silent: 2 reports are fewer than the wave minimum of 3
    two = with_windows(observe(day + night, {"d1": "1.1.0", "d2": "1.1.0"}, {}, "1.1.0", 0), plan, after)
    assert not wave_watched(two, plan, after, quorum=3, threshold=0.0)
    three = with_windows(observe(day + night, dict.fromkeys(day, "1.1.0"), {}, "1.1.0", 0), plan, now)
    assert wave_watched(three, plan, now, quorum=3, threshold=0.0) and three.window_waiting == night
    assert not decide_pull_wave(three, 0.0, None).halt
    failing = decide_pull_wave(three, 0.0, cannot_judge(CanaryGate(), "latency doubled"))
    assert failing.halt and failing.failed == day
    assert quorum(3, 2) == 2  # a wave smaller than the minimum: all of it


def test_refusals_over_the_threshold_end_the_watch_without_waiting_for_the_windows() -> None:
    devices = ("a", "b", "c")
    seen, plan = _night_wave(devices, {}, NOON + timedelta(hours=1), failures={"a": 1})
    assert seen.refused == ("a",) and seen.window_waiting == ("b", "c")
    assert wave_watched(seen, plan, NOON + timedelta(hours=1), quorum=3, threshold=0.0)
    assert decide_pull_wave(seen, 0.0, None).halted_by == ("failure_threshold",)
    assert not wave_watched(seen, plan, NOON + timedelta(hours=1), quorum=3, threshold=None)  # a send-back's watch


def test_a_device_whose_window_closed_before_it_reported_waits_for_the_next_one() -> None:
    short = MaintenanceWindow(cron="0 2 * * *", timezone="UTC", duration_minutes=5)
    plan = plan_wave((GroupWindow(window=short),), ("a",), {}, datetime(2026, 6, 10, 1, tzinfo=UTC), TIMEOUT)
    after = datetime(2026, 6, 10, 2, 30, tzinfo=UTC)  # 5 of its 10 minutes had, the window closed
    seen = with_windows(observe(("a",), {}, {}, "1.1.0", 0), plan, after)
    assert seen.window_waiting == ("a",) and not wave_watched(seen, plan, after, quorum=1, threshold=0.0)
    assert plan["a"].due == datetime(2026, 6, 11, 2, 5, tzinfo=UTC)


def test_a_berlin_night_window_is_read_in_berlin_time() -> None:
    assert NIGHT_OPENS.astimezone(ZoneInfo("Europe/Berlin")).hour == 2
    assert opening(NIGHT, NOON) == NIGHT_OPENS


def test_the_watch_of_a_night_wave_started_at_noon_waits_for_the_window_and_sees_every_device_report() -> None:
    from edgefleet.flows.rollout.pull_tasks import WatchRule, watch_wave_task

    devices = ("a", "b", "c")
    clock = TenMinuteClock(NOON)
    fleet = WindowFleet(clock, dict.fromkeys(devices, NIGHT))
    plan = plan_wave((GroupWindow(tags=("night",), window=NIGHT),), devices, dict.fromkeys(devices, ("night",)),
                     NOON, TIMEOUT)
    seen = watch_wave_task.fn(1, fleet, devices, "1.1.0", NOON, 0, rule=WatchRule(plan, quorum(3, 3), 0.0),
                              poll_interval_s=0.0, stale_after_s=300.0, clock=clock)
    assert seen.up == devices and not decide_pull_wave(seen, 0.0, None).halt
    assert clock.now >= NIGHT_OPENS > NOON + TIMEOUT  # it waited 12 hours, far past the report timeout
    assert min(fleet.moved_at.values()) >= NIGHT_OPENS  # and nobody moved outside the window
    # each device's activation is when the watch first saw it up, not the wave's start: the canary judge's windows
    assert set(seen.up_at) == set(devices) and min(seen.up_at.values()) >= NIGHT_OPENS
    assert all(seen.up_at[device] >= fleet.moved_at[device] for device in devices)


def test_the_rollout_reads_each_devices_group_from_the_monitors_tags(tmp_path: Path) -> None:
    from edgefleet.flows.rollout.pull_tasks import MonitorView
    from edgefleet.monitor.aggregates import set_tags
    from edgefleet.monitor.store import open_store

    with open_store(tmp_path / "fleet.sqlite", latency_window=8, count_bucket_s=60.0) as store:
        set_tags(store.connection, "cam-1", add=["night", "berlin"])
        set_tags(store.connection, "cam-2", add=["lab"])
        store.connection.commit()
    path = tmp_path / "monitor.yaml"
    path.write_text(f"monitor:\n  store_path: {tmp_path / 'fleet.sqlite'}\n  latency_window: 8\n")
    tags = MonitorView(str(path), "birds").tags(["cam-1", "cam-2", "cam-3"])
    assert tags == {"cam-1": ("berlin", "night"), "cam-2": ("lab",)}
    plan = plan_wave((GroupWindow(tags=("night",), window=NIGHT),), ("cam-1", "cam-2", "cam-3"), tags, NOON, TIMEOUT)
    assert (plan["cam-1"].window, plan["cam-2"].window, plan["cam-3"].window) == (NIGHT, None, None)
    assert plan["cam-1"].due == NIGHT_OPENS + TIMEOUT and plan["cam-3"].due == NOON + TIMEOUT


def test_the_record_notes_the_devices_left_waiting_for_their_window_when_the_wave_was_judged() -> None:
    from prefect.logging import disable_run_logger

    from edgefleet.flows.rollout.pull_record import note_window_waiting as _note_window_waiting
    from edgefleet.flows.rollout.record import DeviceRecord, PullProgress, RolloutRecord

    devices = ("d1", "n1")
    record = RolloutRecord(rollout_id="birds-1.1.0", model="birds", version="1.1.0", manifest_sha256="a" * 64,
                           channel="stable", rollback_policy="all", pull=PullProgress(replaces="1.0.0"),
                           devices={d: DeviceRecord(device_id=d, wave=1, before="1.0.0") for d in devices})
    plan = plan_wave((GroupWindow(ids=("n1",), window=NIGHT),), devices, {}, NOON, TIMEOUT)
    with disable_run_logger():
        _note_window_waiting(record, WaveObservation(up=("d1",), refused=(), waiting=(), window_waiting=("n1",)),
                             plan, wave=1)
    assert record.devices["d1"].steps == []
    (step,) = record.devices["n1"].steps
    assert step.name == "window" and "waiting for its maintenance window when wave 1 was judged" in step.detail
    assert "opens" in step.detail and record.devices["n1"].state == "pending"


def test_a_later_wave_watches_the_devices_an_earlier_wave_left_waiting_for_their_window() -> None:
    from edgefleet.flows.rollout.pull_windows import WINDOW_STEP, left_waiting
    from edgefleet.flows.rollout.record import DeviceRecord, StepRecord

    def step(name: str) -> StepRecord:
        return StepRecord(name=name, ok=name != "no_report", started_at=NOON, seconds=0.0)

    devices = [
        DeviceRecord(device_id="waits", wave=1, steps=[step(WINDOW_STEP)]),
        DeviceRecord(device_id="waits-again", wave=1, steps=[step(WINDOW_STEP), step(WINDOW_STEP)]),
        DeviceRecord(device_id="came-up", wave=1, state="done", steps=[step(WINDOW_STEP)]),
        DeviceRecord(device_id="refused", wave=1, state="failed", steps=[step(WINDOW_STEP)]),
        DeviceRecord(device_id="silent-in-its-window", wave=1, steps=[step(WINDOW_STEP), step("no_report")]),
        DeviceRecord(device_id="silent", wave=1),
        DeviceRecord(device_id="this-wave", wave=2, steps=[step(WINDOW_STEP)]),
    ]
    assert left_waiting(devices, 2) == ("waits", "waits-again")
    assert left_waiting(devices, 3) == ("waits", "waits-again", "this-wave")
    assert left_waiting(devices, 1) == ()
