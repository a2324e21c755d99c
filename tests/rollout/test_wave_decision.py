"""The decision after a wave (halt, what to roll back), as a pure function."""

from __future__ import annotations

from edgefleet.flows.rollout.verdict import Verdict
from edgefleet.flows.rollout.waves import decide_wave


def _verdict(result: str, halted_by: tuple[str, ...] = ()) -> Verdict:
    return Verdict(result=result, score=0.5 if result == "fail" else 1.0, pass_score=0.75, control="concurrent",
                   metrics=(), halted_by=halted_by, reason=f"{result} because")


def test_a_passing_wave_goes_on_and_rolls_back_only_its_hard_failures():
    decision = decide_wave(["a", "b", "c"], ["c"], ["a", "b"], _verdict("pass"), 0.5, "failed", ["a", "b"])
    assert not decision.halt and decision.roll_back == ("c",) and decision.canary_failed == ()


def test_a_failed_verdict_halts_and_rolls_back_the_wave_it_judged():
    decision = decide_wave(["a"], [], ["a"], _verdict("fail", ("class_mix_control",)), 0.0, "failed", ["a"])
    assert decision.halt and decision.halted_by == ("class_mix_control",)
    assert decision.canary_failed == ("a",) and decision.roll_back == ("a",)
    assert "canary judge" in decision.reason


def test_policy_all_rolls_back_everything_the_rollout_changed():
    decision = decide_wave(["c", "d"], [], ["c", "d"], _verdict("fail", ("latency",)), 0.0, "all",
                           ["a", "b", "c", "d"])
    assert set(decision.roll_back) == {"a", "b", "c", "d"}


def test_hard_failures_over_the_threshold_halt_without_a_verdict():
    decision = decide_wave(["a", "b"], ["a"], ["b"], None, 0.0, "failed", ["b"])
    assert decision.halt and decision.halted_by == ("failure_threshold",)
    assert decision.roll_back == ("a",) and decision.canary_failed == ()


def test_hard_failures_within_the_threshold_do_not_halt():
    decision = decide_wave(["a", "b", "c", "d"], ["a"], ["b", "c", "d"], _verdict("pass"), 0.3, "all", ["b"])
    assert not decision.halt and decision.roll_back == ("a",)


def test_a_device_run_records_which_step_failed_and_where_the_device_is():
    import pytest

    from edgefleet.flows.rollout.device import DeviceRefused
    from edgefleet.flows.rollout.tasks import DeviceRun, StepFailed
    from edgefleet.kernel.errors import EdgefleetError

    run = DeviceRun("d1", before="1.0.0")
    with run.step("preflight"):
        pass
    with pytest.raises(StepFailed) as failure, run.step("upload"):
        raise EdgefleetError("disk full", "free space")
    outcome = run.failed(failure.value, "2.0.0")
    assert outcome.error.step == "upload" and outcome.error.kind == "EdgefleetError" and outcome.error.fix
    assert outcome.after == "1.0.0"  # never activated: still on the old version
    assert [(s.name, s.ok) for s in outcome.steps] == [("preflight", True), ("upload", False)]

    run.activated_at = run.steps[0].started_at
    with pytest.raises(StepFailed) as refused, run.step("health"):
        raise DeviceRefused("refused", "fix the model")
    assert run.failed(refused.value, "2.0.0").after == "1.0.0" and run.failed(refused.value, "2.0.0").refused_by_device
    with pytest.raises(StepFailed) as crashed, run.step("health"):
        raise RuntimeError("boom")
    outcome = run.failed(crashed.value, "2.0.0")
    assert outcome.after == "2.0.0" and outcome.error.kind == "unexpected RuntimeError"
