"""The decisions after a wave (halt, what to roll back and how, the halt record), as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

from edgefleet.flows.rollout.record import DeviceOutcome, DeviceRecord, RolloutRecord
from edgefleet.flows.rollout.verdict import Verdict
from edgefleet.flows.rollout.waves import decide_wave, halt_info, plan_rollback


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


def test_the_judge_looks_only_at_waves_with_devices_up_and_within_the_threshold():
    from edgefleet.flows.rollout.waves import needs_judgement

    assert needs_judgement(["a", "b"], ["a"], ["b"], 0.5)
    assert not needs_judgement(["a", "b"], ["a"], ["b"], 0.0)  # halts whatever the verdict says
    assert not needs_judgement(["a"], ["a"], [], 1.0)  # nobody came up: nothing to judge


def _device(device_id: str, **fields) -> DeviceRecord:
    return DeviceRecord.model_validate({"device_id": device_id, "wave": 1, "state": "failed", **fields})


def test_rollback_switches_back_only_devices_this_rollout_switched():
    activated = datetime(2026, 1, 1, tzinfo=UTC)
    plan = plan_rollback([
        _device("switched", before="1.0.0", after="2.0.0", activated_at=activated),
        _device("refused", before="1.0.0", after="1.0.0", activated_at=activated, refused_by_device=True),
        _device("never-activated", before="1.0.0"),
        _device("new-device", before=None, activated_at=activated),
        _device("already-there", before="2.0.0", activated_at=activated),
    ], "2.0.0")
    assert plan.roll == (("switched", "1.0.0"),)
    assert plan.already == ("refused",)  # the agent went back by itself: only recorded
    assert plan.kept == ("never-activated", "new-device", "already-there")


def test_a_halt_names_the_wave_every_failed_device_and_each_hard_failure():
    record = RolloutRecord(rollout_id="r", model="m", version="2.0.0", manifest_sha256="ab" * 32)
    record.devices = {"a": _device("a"), "b": _device("b"), "c": _device("c", state="done")}
    record.devices["a"].fail("health", "HealthTimeout", "not up in 60 s")
    decision = decide_wave(["a", "b", "c"], ["a", "b"], ["c"], None, 0.5, "failed", ["c"])
    halted = halt_info(record, 2, ["a", "b"], decision)
    assert halted.wave == 2 and halted.failed == ("a", "b") and halted.halted_by == ("failure_threshold",)
    assert halted.reason == "2 of 3 devices failed (threshold 50%): a at health: not up in 60 s"
    passed = decide_wave(["c"], [], ["c"], _verdict("fail", ("latency",)), 0.0, "failed", ["c"])
    assert halt_info(record, 1, [], passed).failed == ("c",)
    assert halt_info(record, 1, [], passed).reason == passed.reason  # no hard failure to add


def test_a_step_note_is_what_the_record_shows_for_a_passed_step():
    from edgefleet.flows.rollout.tasks import DeviceRun

    run = DeviceRun("d1")
    with run.step("upload") as note:
        note.detail = "sent 10 B"
    with run.step("verify"):
        pass
    assert [(s.name, s.ok, s.detail) for s in run.steps] == [("upload", True, "sent 10 B"), ("verify", True, "")]


def test_a_record_takes_each_run_but_keeps_the_first_before_to_roll_back_to():
    from edgefleet.flows.rollout.record import DeviceError

    device = DeviceRecord(device_id="a", wave=1)
    failed = DeviceOutcome(device_id="a", ok=False, before="1.0.0", after="2.0.0", bytes_transferred=10,
                           error=DeviceError(step="health", kind="HealthTimeout", message="not up"))
    device.apply(failed)
    device.rolled_back_to = "1.0.0"
    device.apply(DeviceOutcome(device_id="a", ok=True, before="1.5.0", after="2.0.0", bytes_reused=10))
    assert (device.state, device.before, device.after, device.attempts) == ("done", "1.0.0", "2.0.0", 2)
    assert device.error is None and device.bytes_transferred == 0 and device.bytes_reused == 10
    assert device.rolled_back_to is None


def test_a_resumed_run_keeps_what_earlier_runs_did_and_works_only_on_the_rest():
    record = RolloutRecord(rollout_id="r", model="m", version="2.0.0", manifest_sha256="ab" * 32)
    record.begin_run([["a"], ["b", "c"]], "failed")
    assert record.runs == 1 and record.todo(["b", "c"]) == ["b", "c"]
    record.devices["a"].apply(DeviceOutcome(device_id="a", ok=True, before="1.0.0", after="2.0.0"))
    record.devices["b"].apply(DeviceOutcome(device_id="b", ok=False, before="1.0.0"))
    record.devices["c"].apply(DeviceOutcome(device_id="c", ok=True, before="1.0.0", after="2.0.0"))
    assert record.split(["b", "c"]) == (["b"], ["c"])
    record.state = "halted"
    record.begin_run([["a", "d"], ["b", "c"]], "all")  # re-run with one more device
    assert (record.runs, record.state, record.halted, record.rollback_policy) == (2, "running", None, "all")
    assert record.todo(["a", "d"]) == ["d"] and record.todo(["b", "c"]) == ["b"]
    assert record.devices["a"].state == "done" and record.devices["d"].wave == 1
