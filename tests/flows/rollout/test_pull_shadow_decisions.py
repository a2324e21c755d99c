"""The pull rollout's shadow wave, its pure decisions (flows/rollout/pull_shadow.py): when it runs, what the fleet
monitor's stored pairs and refusals mean, and that its verdict is the SSH shadow wave's (one judge, one gate)."""

from __future__ import annotations

from datetime import UTC, datetime

from edgefleet.flows.rollout.params import CanaryGate
from edgefleet.flows.rollout.pull_shadow import outcome_of, pull_look, shadow_wave_due
from edgefleet.flows.rollout.record import PullProgress, ShadowOutcome
from edgefleet.flows.rollout.shadow import judge_shadow
from edgefleet.flows.rollout.shadow_flow import await_shadow_verdict
from edgefleet.flows.rollout.shadow_params import ShadowWave
from edgefleet.kernel.contracts.distributions import BucketCount, ClassCount, Distributions
from edgefleet.kernel.contracts.telemetry import ModelRef, ShadowSummary, score_delta_bucket

GATE = CanaryGate(min_samples=50)
ON = ShadowWave(enabled=True, timeout_s=10.0, poll_interval_s=1.0)


def pairs(frames: int, agree: int, candidate: dict[int, int] | None = None) -> ShadowSummary:
    mix = {1: frames // 2, 2: frames - frames // 2}

    def dist(counts: dict[int, int]) -> Distributions:
        return Distributions(classes=[ClassCount(id=i, n=n) for i, n in counts.items()])

    return ShadowSummary(model=ModelRef(name="imagenet", version="1.3.0", variant="cpu", backend="cpu"),
                         frames=frames, top1_agree=agree, primary=dist(mix), candidate=dist(candidate or mix),
                         score_delta=[BucketCount(i=score_delta_bucket(0.0), n=frames)])


def outcome(result: str) -> ShadowOutcome:
    return ShadowOutcome(share_bp=100, devices=("d1",), result=result, reason="", judged_at=datetime.now(UTC))


def test_the_shadow_wave_runs_first_and_once_it_passed() -> None:
    assert shadow_wave_due(ON, PullProgress())
    assert not shadow_wave_due(ShadowWave(), PullProgress())  # off by default
    assert not shadow_wave_due(ON, PullProgress(shadow=outcome("pass")))  # resumed after it passed
    assert shadow_wave_due(ON, PullProgress(shadow=outcome("fail")))  # a halted one runs again on resume
    assert not shadow_wave_due(ON, PullProgress(passed=[100]))  # a rollout already past its first wave


def test_a_device_that_refused_the_candidate_fails_the_wave_at_once() -> None:
    clock = [0.0]
    look = pull_look({"d1": pairs(400, 398), "d2": None}, {"d1": 0, "d2": 1}, "1.3.0")
    assert look.not_running == {"d2": "refused 1.3.0 (1 swap failure or rollback events reported)"}
    verdict = await_shadow_verdict(lambda: look, GATE, ON, clock=lambda: clock[0], sleep=lambda s: None)
    assert verdict.result == "fail" and "d2: refused 1.3.0" in verdict.reason


def test_the_stored_pairs_are_judged_as_the_ssh_wave_judges_them() -> None:
    stored = {"d1": pairs(300, 2, {7: 150, 8: 150}), "d2": pairs(300, 5, {7: 100, 9: 200})}
    clock = [0.0]
    verdict = await_shadow_verdict(lambda: pull_look(stored, {}, "1.3.0"), GATE, ON, clock=lambda: clock[0],
                                   sleep=lambda s: None)
    assert verdict == judge_shadow(stored, GATE)
    assert verdict.result == "fail" and {"agreement", "class_mix"} <= set(verdict.failed_metrics)
    kept = outcome_of(verdict, 120, ("d1", "d2"))
    assert (kept.result, kept.share_bp, kept.devices) == ("fail", 120, ("d1", "d2"))
    assert {row["metric"] for row in kept.table} == {"agreement", "class_mix", "score_delta", "errors"}


def test_without_pairs_by_the_timeout_the_wave_fails() -> None:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    verdict = await_shadow_verdict(lambda: pull_look({"d1": None}, {}, "1.3.0"), GATE, ON,
                                   clock=lambda: clock[0], sleep=sleep)
    assert verdict.result == "fail" and "without a verdict" in verdict.reason and clock[0] >= ON.timeout_s


def test_rollout_show_prints_the_shadow_agreement() -> None:
    from rich.console import Console

    from edgefleet.cli.rollout import print_shadow

    verdict = judge_shadow({"d1": pairs(300, 2, {7: 150, 8: 150})}, GATE)
    console = Console(record=True, width=200)
    print_shadow(outcome_of(verdict, 120, ("d1",)), console)
    text = console.export_text()
    assert "shadow wave on d1 (1.2% of the fleet): fail" in text
    assert "agreement" in text and "0.00667" in text and "0.9" in text


def test_a_shadow_wave_waiting_for_a_night_window_waits_past_its_timeout_for_the_pairs() -> None:
    from datetime import UTC, datetime, timedelta

    from edgefleet.device.window import MaintenanceWindow
    from edgefleet.flows.rollout.pull_params import GroupWindow
    from edgefleet.flows.rollout.pull_windows import latest_due, plan_wave

    night = MaintenanceWindow(cron="0 2 * * *", timezone="Europe/Berlin", duration_minutes=120)
    noon = datetime(2026, 6, 10, 12, tzinfo=UTC)  # the window opens at 00:00 UTC, 12 hours later
    wave = ON.model_copy(update={"poll_interval_s": 600.0})  # a look every 10 minutes of the injected clock
    timeout = timedelta(seconds=wave.timeout_s)
    plan = plan_wave((GroupWindow(ids=("n1",), window=night),), ("d1", "n1"), {}, noon, timeout)
    wait = latest_due(plan, noon)
    assert wait == timedelta(hours=12) + timeout  # n1 gets its 10 s inside its window
    assert latest_due(plan_wave((), ("d1",), {}, noon, timeout), noon) == timeout  # no windows: as before
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    def look():  # n1's pairs come once its window opened
        ready = clock[0] >= 12 * 3600
        return pull_look({"d1": pairs(400, 398), "n1": pairs(400, 398) if ready else None}, {}, "1.3.0")

    verdict = await_shadow_verdict(look, GATE, wave, timeout_s=wait.total_seconds(), clock=lambda: clock[0],
                                   sleep=sleep)
    assert verdict.result == "pass" and clock[0] >= 12 * 3600
    clock[0] = 0.0  # on the wave's own timeout (before): failed 10 s in, 12 hours before n1 could shadow it
    unaware = await_shadow_verdict(look, GATE, wave, clock=lambda: clock[0], sleep=sleep)
    assert unaware.result == "fail" and clock[0] < 12 * 3600
