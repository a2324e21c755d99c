"""The pull rollout's decisions (pure): shares per wave, AWS IoT Jobs' exponential rate, and a wave's verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from edgefleet.flows.rollout.params import CanaryGate
from edgefleet.flows.rollout.pull_params import ExponentialRate, PullRolloutParams, RateIncreaseCriteria, ShareSchedule
from edgefleet.flows.rollout.pull_waves import (
    WaveObservation,
    decide_pull_wave,
    moved,
    next_rate,
    next_rate_wave,
    next_share_wave,
    observe,
    seen_up,
    share_steps,
)
from edgefleet.flows.rollout.verdict import cannot_judge

FLEET = [f"cam-{n:03d}" for n in range(200)]
ROLLOUT = "birds-1.1.0"


def test_shares_are_basis_points_increasing_to_the_whole_fleet() -> None:
    assert share_steps(ShareSchedule(shares=["1%", "12.5%", "100%"])) == [100, 1250, 10_000]
    for bad in (["10%", "5%", "100%"], ["1%", "50%"], ["0%", "100%"], [10, "100%"]):
        with pytest.raises(ValidationError, match="share"):
            ShareSchedule(shares=bad)


def test_share_waves_only_add_devices_and_end_at_everybody() -> None:
    schedule, passed, seen = ShareSchedule(), [], []
    while (step := next_share_wave(schedule, ROLLOUT, FLEET, passed, first_wave_min=3)) is not None:
        now = moved(ROLLOUT, FLEET, step.share_bp)
        assert set(seen) <= set(now)
        seen, passed = now, [*passed, step.share_bp]
    assert passed[1:] == [1_000, 5_000, 10_000] and len(seen) == len(FLEET)
    assert len(moved(ROLLOUT, FLEET, passed[0])) >= 3  # 1% of 200 is 2: the first wave was raised to 3


def test_the_exponential_rate_grows_by_its_factor_up_to_the_cap() -> None:
    rate = ExponentialRate(base_rate_per_minute=2, increment_factor=2, maximum_per_minute=10)
    assert [next_rate(rate, current, 5, 5) for current in (2, 4, 8)] == [4, 8, 10]
    strict = rate.model_copy(update={"rate_increase_criteria": RateIncreaseCriteria(number_of_succeeded_things=5)})
    assert next_rate(strict, 4, notified=8, succeeded=4) == 4 and next_rate(strict, 4, 8, 5) == 8


def test_exponential_waves_move_rate_more_devices_each_time() -> None:
    rate = ExponentialRate(base_rate_per_minute=2, increment_factor=2, maximum_per_minute=50)
    passed: list[int] = []
    counts, current = [], None
    while (step := next_rate_wave(rate, ROLLOUT, FLEET, passed, current, notified=0, succeeded=0,
                                  first_wave_min=1)) is not None:
        counts.append(len(moved(ROLLOUT, FLEET, step.share_bp)))
        passed, current = [*passed, step.share_bp], step.rate
    assert counts[:5] == [2, 6, 14, 30, 62] and counts[-1] == len(FLEET)
    assert all(b - a <= 50 for a, b in zip(counts, counts[1:], strict=False))


def test_a_wave_sorts_its_devices_by_what_the_monitor_says() -> None:
    seen = observe(["a", "b", "c", "d"], {"a": "1.1.0", "b": "1.0.0", "c": "1.1.0"}, {"c": 1}, "1.1.0", 0)
    assert (seen.up, seen.refused, seen.waiting, seen.settled) == (("a",), ("c",), ("b", "d"), False)


def test_the_wave_decision() -> None:
    gate = CanaryGate()
    fail = cannot_judge(gate, "latency doubled")
    up = WaveObservation(up=("a", "b"), refused=(), waiting=())
    assert not decide_pull_wave(up, 0.0, None).halt
    assert decide_pull_wave(up, 0.0, fail).halt and decide_pull_wave(up, 0.0, fail).failed == ("a", "b")
    refused = WaveObservation(up=("a",), refused=("b",), waiting=())
    assert decide_pull_wave(refused, 0.0, None).halted_by == ("failure_threshold",)
    assert not decide_pull_wave(refused, 0.5, None).halt
    silent = WaveObservation(up=(), refused=(), waiting=("a",))
    assert decide_pull_wave(silent, 0.0, None).halted_by == ("no_report",)
    assert not decide_pull_wave(WaveObservation((), (), ()), 0.0, None).halt


def test_params_need_a_monitor_and_the_public_key() -> None:
    with pytest.raises(ValidationError, match="monitor_config"):
        PullRolloutParams(registry="r", model="birds", version="1.1.0", public_key="k")
    params = PullRolloutParams(registry="r", model="birds", version="1.1.0", public_key="k", monitor_config="m.yaml",
                               schedule={"kind": "exponential", "base_rate_per_minute": 5})
    assert isinstance(params.schedule, ExponentialRate) and params.schedule.maximum_per_minute == 1000


def test_a_rerun_after_a_halt_starts_again_at_the_first_wave_and_watches_every_device_it_moves() -> None:
    from edgefleet.flows.rollout.pull_record import add_wave as _add_wave
    from edgefleet.flows.rollout.record import PullProgress, RolloutRecord

    fleet = {device: "1.0.0" for device in FLEET}
    record = RolloutRecord(rollout_id=ROLLOUT, model="birds", version="1.1.0", manifest_sha256="a" * 64,
                           channel="stable", rollback_policy="all", pull=PullProgress(replaces="1.0.0"))
    first = _add_wave(record, fleet, 500)
    for device in first:
        record.devices[device].state, record.devices[device].after = "done", "1.1.0"
    record.pull.shares.append(500)
    record.pull.passed.append(500)
    second = _add_wave(record, fleet, 2000)
    for device in set(first) | set(second):  # halted in wave 2: share 0 sent every moved device back
        record.devices[device].state, record.devices[device].after = "rolled_back", "1.0.0"
    record.state, record.pull.sent_back = "halted", True
    record.pull.restart()  # what the flow does when it opens a halted record
    schedule = ShareSchedule(shares=("5%", "20%", "100%"))
    assert next_share_wave(schedule, ROLLOUT, FLEET, record.pull.passed, 1).share_bp == 500
    again = _add_wave(record, fleet, 500)
    assert set(again) == set(first)  # wave 1 again, every device of it watched
    later = _add_wave(record, fleet, 2000)  # and a wave that re-stages a share moves nobody unwatched
    assert set(later) | set(again) == set(moved(ROLLOUT, FLEET, 2000))


def test_each_device_is_up_from_the_first_look_that_saw_it_report_the_version() -> None:
    began = datetime(2026, 6, 10, 12, tzinfo=UTC)
    first = seen_up(WaveObservation(up=("a",), refused=(), waiting=("b", "c")), {}, began)
    assert first.up_at == {"a": began}
    later = began + timedelta(hours=12)  # b's window opened at night
    second = seen_up(WaveObservation(up=("a", "b"), refused=("c",), waiting=()), first.up_at, later)
    assert second.up_at == {"a": began, "b": later} and second.refused == ("c",)
