"""The window stragglers of a pull rollout (pure, `pull_stragglers.py`): the devices still waiting for their
maintenance window when the last wave passed are found in the record (also after it was reloaded), watched with no
quorum shortcut until each had its time in its window, judged by a wave's rule, and each gets a step."""

from __future__ import annotations

from datetime import datetime, timedelta

from edgefleet.flows.fleet.steps import StepRecord
from edgefleet.flows.rollout.params import CanaryGate
from edgefleet.flows.rollout.pull_params import STRAGGLERS_MAX_WAIT_S, GroupWindow, ShareSchedule
from edgefleet.flows.rollout.pull_stragglers import (
    NO_REPORT_STEP,
    STRAGGLER_STEP,
    StragglerWatch,
    capped,
    decide_stragglers,
    halt_blocker,
    straggler_steps,
    stragglers,
    unwatched,
    unwatched_steps,
    unwatched_warning,
    without,
)
from edgefleet.flows.rollout.pull_waves import WaveObservation, decide_pull_wave, next_share_wave, observe
from edgefleet.flows.rollout.pull_windows import (
    WINDOW_STEP,
    DeviceWindow,
    plan_wave,
    quorum,
    wave_watched,
    with_windows,
)
from edgefleet.flows.rollout.record import DeviceRecord, PullProgress, RolloutRecord
from edgefleet.flows.rollout.verdict import cannot_judge
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.rollout import SHARE_BP_FULL, RolloutStage
from tests.flows.rollout.window_fleet import NIGHT, NIGHT_OPENS, NOON, TenMinuteClock, WindowFleet

TIMEOUT = timedelta(seconds=600)
ROLLOUT = "birds-1.1.0"


def _step(name: str, at: datetime = NOON) -> StepRecord:
    return StepRecord(name=name, ok=name != NO_REPORT_STEP, started_at=at, seconds=0.0)


def _watch(devices: tuple[str, ...]) -> StragglerWatch:
    return StragglerWatch(devices, after_wave=3, since=NOON, refusals_since=NOON)


def _night_plan(devices: tuple[str, ...]) -> dict[str, DeviceWindow]:
    return plan_wave((GroupWindow(tags=("night",), window=NIGHT),), devices, dict.fromkeys(devices, ("night",)),
                     NOON, TIMEOUT)


def test_the_stragglers_are_the_devices_of_any_wave_still_waiting_for_their_window_after_the_last_one() -> None:
    later = NOON + timedelta(minutes=7)
    devices = {device.device_id: device for device in (
        DeviceRecord(device_id="wave-1-waits", wave=1, steps=[_step(WINDOW_STEP), _step(WINDOW_STEP, later)]),
        DeviceRecord(device_id="wave-3-waits", wave=3, steps=[_step(WINDOW_STEP)]),
        DeviceRecord(device_id="came-up", wave=3, state="done", steps=[_step(WINDOW_STEP)]),
        DeviceRecord(device_id="refused", wave=2, state="failed", steps=[_step(WINDOW_STEP)]),
        DeviceRecord(device_id="silent-in-its-window", wave=2, steps=[_step(WINDOW_STEP), _step(NO_REPORT_STEP)]),
        DeviceRecord(device_id="reported-in-time", wave=3, state="done"),
    )}
    watch = stragglers(devices, after_wave=3)
    assert watch is not None and watch.devices == ("wave-1-waits", "wave-3-waits")
    # their report deadlines count from the last note (the last wave's judgement); refusals from the first
    assert (watch.since, watch.refusals_since, watch.after_wave) == (later, NOON, 3)
    assert watch.quorum == 2 and "after wave 3" in watch.label
    assert stragglers({d: r for d, r in devices.items() if "waits" not in d}, after_wave=3) is None


def test_a_record_reloaded_after_a_crash_mid_watch_redoes_no_wave_and_still_has_the_stragglers() -> None:
    """The watch saves nothing until the stragglers are judged: the record a resumed run reads is the one saved
    when the last wave passed, every passed wave in it and the stragglers still noted waiting."""
    record = RolloutRecord(rollout_id=ROLLOUT, model="birds", version="1.1.0", manifest_sha256="a" * 64,
                           channel="stable", rollback_policy="all",
                           pull=PullProgress(replaces="1.0.0", shares=[2000, 10_000], passed=[2000, 10_000]),
                           waves=[["a", "b"], ["c", "n"]],
                           devices={"a": DeviceRecord(device_id="a", wave=1, state="done"),
                                    "b": DeviceRecord(device_id="b", wave=1, state="done"),
                                    "c": DeviceRecord(device_id="c", wave=2, state="done"),
                                    "n": DeviceRecord(device_id="n", wave=2, steps=[_step(WINDOW_STEP)])})
    reloaded = RolloutRecord.model_validate_json(record.model_dump_json())
    assert reloaded.pull is not None
    assert next_share_wave(ShareSchedule(shares=("20%", "100%")), ROLLOUT, ["a", "b", "c", "n"],
                           reloaded.pull.passed, 1) is None  # no wave again
    assert stragglers(reloaded.devices, len(reloaded.pull.passed)) == stragglers(record.devices, 2)
    assert stragglers(reloaded.devices, 2) == StragglerWatch(("n",), 2, since=NOON, refusals_since=NOON)


def test_the_straggler_watch_waits_for_every_device_where_a_wave_would_stop_at_its_quorum() -> None:
    devices = ("d1", "d2", "d3", "n1")
    plan = _night_plan(devices)
    now = NIGHT_OPENS - timedelta(hours=1)  # the day devices reported long ago; n1's window opens in an hour
    seen = with_windows(observe(devices, dict.fromkeys(devices[:3], "1.1.0"), {}, "1.1.0", 0), plan, now)
    assert seen.window_waiting == ("n1",)
    assert wave_watched(seen, plan, now, quorum=quorum(3, 4), threshold=0.0)  # a wave: judged, n1 left waiting
    assert not wave_watched(seen, plan, now, quorum=_watch(devices).quorum, threshold=0.0)  # the stragglers: not
    in_window = NIGHT_OPENS + timedelta(minutes=5)  # n1's window is open and its time not over: still awaited
    seen = with_windows(observe(devices, dict.fromkeys(devices[:3], "1.1.0"), {}, "1.1.0", 0), plan, in_window)
    assert seen.waiting == ("n1",) and not wave_watched(seen, plan, in_window, quorum=4, threshold=0.0)
    past = NIGHT_OPENS + TIMEOUT  # it had its 10 minutes in its window and said nothing: silent, the watch ends
    seen = with_windows(observe(devices, dict.fromkeys(devices[:3], "1.1.0"), {}, "1.1.0", 0), plan, past)
    assert wave_watched(seen, plan, past, quorum=4, threshold=0.0)
    # refusals over the threshold end it at once, as they end a wave
    refusing = with_windows(observe(devices, {}, {"d1": 1}, "1.1.0", 0), plan, now)
    assert wave_watched(refusing, plan, now, quorum=4, threshold=0.0)


def test_the_stragglers_are_judged_by_a_waves_rule_and_a_halt_names_them() -> None:
    watch = _watch(("a", "b", "c", "d"))
    all_up = WaveObservation(up=("a", "b", "c", "d"), refused=(), waiting=())
    assert not decide_stragglers(watch, all_up, 0.0, None).halt
    refusing = WaveObservation(up=("a", "b", "c"), refused=("d",), waiting=())
    halted = decide_stragglers(watch, refusing, 0.0, None)
    assert halted.halt and halted.halted_by == ("failure_threshold",) and halted.failed == ("d",)
    assert halted.reason == f"window stragglers after wave 3: {decide_pull_wave(refusing, 0.0, None).reason}"
    assert not decide_stragglers(watch, refusing, 0.25, None).halt  # within a 25 % threshold, as in a wave
    failed = decide_stragglers(watch, all_up, 0.0, cannot_judge(CanaryGate(), "latency doubled"))
    assert failed.halt and failed.failed == all_up.up and "latency doubled" in failed.reason
    silent = WaveObservation(up=(), refused=(), waiting=("a", "b", "c", "d"))
    assert decide_pull_wave(silent, 0.0, None).halt  # a wave none of whose devices reported halts, but
    assert not decide_stragglers(watch, silent, 0.0, None).halt  # silent stragglers after the fleet took it do not
    silent_and_refusing = WaveObservation(up=(), refused=("a",), waiting=("b", "c", "d"))
    refused = decide_stragglers(watch, silent_and_refusing, 0.0, None)
    assert refused.halt and refused.halted_by == ("failure_threshold",) and refused.reason.startswith("window strag")
    assert not decide_stragglers(watch, silent_and_refusing, 0.25, None).halt  # 1 of 4 within 25 %
    some = WaveObservation(up=("a",), refused=(), waiting=("b", "c", "d"))
    assert not decide_stragglers(watch, some, 0.0, None).halt  # a wave whose silent devices are not all of it


def test_each_straggler_gets_a_step_saying_what_it_did() -> None:
    devices = ("up", "refused", "silent", "due", "closed")
    plan = _night_plan(devices)
    now = NIGHT_OPENS + timedelta(hours=3)  # the night window closed an hour ago
    plan["due"] = DeviceWindow(None, now + TIMEOUT)  # in no window, its report still due at the end
    plan["closed"] = DeviceWindow(NIGHT, NIGHT_OPENS + timedelta(days=1) + TIMEOUT)  # its window closed on it
    seen = WaveObservation(up=("up",), refused=("refused",), waiting=("silent", "due"), window_waiting=("closed",),
                           up_at={"up": NIGHT_OPENS + timedelta(minutes=3)})
    steps = straggler_steps(_watch(devices), seen, plan, now)
    assert set(steps) == set(devices)
    assert (steps["up"].name, steps["up"].ok) == (STRAGGLER_STEP, True) and "reported" in steps["up"].detail
    assert steps["up"].seconds == (NIGHT_OPENS + timedelta(minutes=3) - NOON).total_seconds()
    assert (steps["refused"].name, steps["refused"].ok) == (STRAGGLER_STEP, False)
    assert (steps["silent"].name, steps["silent"].ok) == (NO_REPORT_STEP, False)
    assert steps["due"].name == STRAGGLER_STEP and "not reported the version yet" in steps["due"].detail
    assert steps["closed"].name == WINDOW_STEP and "opens 2026-06-12T00:00:00+00:00" in steps["closed"].detail
    assert all(step.started_at == NOON for step in steps.values())
    # recorded, none of them but the one still waiting for its window is a straggler again
    records = {device: DeviceRecord(device_id=device, wave=2, steps=[_step(WINDOW_STEP), steps[device]],
                                    state="done" if device == "up" else "failed" if device == "refused"
                                    else "pending") for device in devices}
    assert stragglers(records, 2) == StragglerWatch(("closed",), 2, since=NOON, refusals_since=NOON)


def test_the_straggler_watch_begun_at_noon_sees_the_night_device_report_in_its_window() -> None:
    from edgefleet.flows.rollout.pull_tasks import WatchRule, watch_stragglers_task

    devices = ("d1", "n1")
    clock = TenMinuteClock(NOON)
    fleet = WindowFleet(clock, {"d1": None, "n1": NIGHT})
    plan = plan_wave((GroupWindow(ids=("n1",), window=NIGHT),), devices, {}, NOON, TIMEOUT)
    watch = _watch(devices)
    seen = watch_stragglers_task.fn(3, fleet, devices, "1.1.0", NOON, 0, rule=WatchRule(plan, watch.quorum, 0.0),
                                    poll_interval_s=0.0, stale_after_s=300.0, clock=clock)
    assert seen.up == devices and not decide_stragglers(watch, seen, 0.0, None).halt
    assert seen.up_at["n1"] >= fleet.moved_at["n1"] >= NIGHT_OPENS  # seen when its window opened, 12 hours on


def test_the_straggler_watch_ends_at_its_cap_and_leaves_the_night_device_unwatched_for_a_re_run() -> None:
    from edgefleet.flows.rollout.pull_tasks import WatchRule, watch_stragglers_task

    devices = ("d1", "n1")
    clock = TenMinuteClock(NOON)
    fleet = WindowFleet(clock, {"d1": None, "n1": NIGHT})
    plan = plan_wave((GroupWindow(ids=("n1",), window=NIGHT),), devices, {}, NOON, TIMEOUT)
    until = NOON + timedelta(seconds=STRAGGLERS_MAX_WAIT_S)  # 18:00 UTC: the night window opens at 00:00 UTC
    assert until < NIGHT_OPENS and all(entry.due <= until for entry in capped(plan, until).values())
    watch = _watch(devices)
    seen = watch_stragglers_task.fn(3, fleet, devices, "1.1.0", NOON, 0,
                                    rule=WatchRule(capped(plan, until), watch.quorum, 0.0),
                                    poll_interval_s=0.0, stale_after_s=300.0, clock=clock)
    now = clock.now
    assert until <= now < NIGHT_OPENS and seen.up == ("d1",)  # the watch ended at the cap, not at night
    assert unwatched(seen, plan, now - timedelta(hours=1), until) == ()  # nobody is unwatched before the cap
    left = unwatched(seen, plan, now, until)
    assert left == ("n1",)
    judged = without(seen, left)
    assert judged.waiting == judged.window_waiting == () and not decide_stragglers(watch, judged, 0.0, None).halt
    steps = straggler_steps(watch, judged, plan, now) | unwatched_steps(watch, left, plan, now)
    assert steps["d1"].name == STRAGGLER_STEP and steps["n1"].name == WINDOW_STEP
    assert "stragglers_max_wait_s" in steps["n1"].detail and "re-run" in steps["n1"].detail
    records = {device: DeviceRecord(device_id=device, wave=3, state="done" if device == "d1" else "pending",
                                    steps=[_step(WINDOW_STEP), steps[device]]) for device in devices}
    # a re-run finds it, its deadline counted from the same note: its time in its window since then counts
    assert stragglers(records, 3) == StragglerWatch(("n1",), 3, since=NOON, refusals_since=NOON)
    warning = unwatched_warning(left, "1.1.0", ROLLOUT, "stragglers_max_wait_s passed")
    assert "n1" in warning and f"re-run the same rollout_id ({ROLLOUT})" in warning


def test_the_straggler_cap_defaults_to_six_hours_and_is_a_parameter() -> None:
    from edgefleet.flows.rollout.pull_params import PullRolloutParams

    params = PullRolloutParams(registry="r", model="birds", version="1.1.0", public_key="k", monitor_config="m.yaml")
    assert params.stragglers_max_wait_s == STRAGGLERS_MAX_WAIT_S == 6 * 3600
    assert PullRolloutParams(registry="r", model="birds", version="1.1.0", public_key="k", monitor_config="m.yaml",
                             stragglers_max_wait_s=60).stragglers_max_wait_s == 60


def test_with_the_watch_off_the_stragglers_stay_in_the_record_for_a_re_run_and_the_warning_names_them() -> None:
    records = {"n1": DeviceRecord(device_id="n1", wave=2, steps=[_step(WINDOW_STEP)]),
               "d1": DeviceRecord(device_id="d1", wave=2, state="done")}
    watch = stragglers(records, 2)  # what the flow finds, then only warns: nothing of the record changes
    assert watch is not None and watch.devices == ("n1",)
    warning = unwatched_warning(watch.devices, "1.1.0", ROLLOUT, "watch_stragglers is off")
    assert warning.startswith("1 window straggler(s) not judged (watch_stragglers is off): n1")
    assert stragglers(records, 2) == watch  # a re-run with the watch on finds the same devices, since the same note


def _pointer(version: str, stage: RolloutStage | None) -> ChannelPointer:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edgefleet.flows.trust.pointer_signing import sign_pointer

    return sign_pointer(Ed25519PrivateKey.generate(), model="birds", channel="stable", version=version,
                        manifest_sha256="b" * 64, previous=None, updated_by="alice", rollout=stage)


def test_a_straggler_halt_signs_share_0_only_while_the_channel_still_names_this_rollout() -> None:
    full = RolloutStage(id=ROLLOUT, replaces="1.0.0", replaces_manifest_sha256="c" * 64, share_bp=SHARE_BP_FULL)
    assert halt_blocker(_pointer("1.1.0", full), ROLLOUT, "stable") is None
    promoted = halt_blocker(_pointer("1.2.0", None), ROLLOUT, "stable")  # a promotion moved it during the watch
    assert promoted is not None and "moved on" in promoted and "1.2.0" in promoted and "alice" in promoted
    other = RolloutStage(id="birds-1.2.0", replaces="1.1.0", replaces_manifest_sha256="c" * 64, share_bp=1000)
    newer = halt_blocker(_pointer("1.2.0", other), ROLLOUT, "stable")  # another rollout started at 100 %
    assert newer is not None and "rollout birds-1.2.0 of 1.2.0 at 10 %" in newer
    assert halt_blocker(None, ROLLOUT, "stable") == "channel stable has no verified pointer now"


def test_the_straggler_halt_path_refusals_halt_and_name_the_devices_that_need_attention() -> None:
    watch = _watch(("a", "b", "c"))
    refusing = WaveObservation(up=("a",), refused=("b", "c"), waiting=())
    decision = decide_stragglers(watch, refusing, 0.5, None)  # 2 of 3 stragglers: over 50 % of them
    assert decision.halt and decision.failed == ("b", "c") and decision.reason.startswith(watch.label)
    # measured over the stragglers alone: the fleet that took the version before them does not dilute it
    assert not decide_stragglers(watch, WaveObservation(up=("a", "b"), refused=("c",), waiting=()), 0.5, None).halt
