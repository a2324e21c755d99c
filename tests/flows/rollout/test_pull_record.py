"""What a pull rollout writes into its record per wave (`pull_record.py`): which devices a wave adds and with what
record, on a resumed run and on a run restarted after a halt sent the moved devices back."""

from __future__ import annotations

from datetime import UTC, datetime

from edgefleet.flows.fleet.steps import StepRecord
from edgefleet.flows.rollout.pull_record import RESTART_STEP, add_wave, restart_after_send_back
from edgefleet.flows.rollout.pull_stragglers import stragglers
from edgefleet.flows.rollout.pull_windows import WINDOW_STEP, left_waiting
from edgefleet.flows.rollout.record import DeviceRecord, PullProgress, RolloutRecord

NOON = datetime(2026, 6, 10, 12, tzinfo=UTC)
FLEET = {f"d{n}": "1.0.0" for n in range(6)}


def _record() -> RolloutRecord:
    return RolloutRecord(rollout_id="r", model="birds", version="2.0.0", manifest_sha256="a" * 64, channel="stable",
                         rollback_policy="all", pull=PullProgress(replaces="1.0.0"))


def test_a_device_the_halt_sent_back_in_its_closed_window_is_re_added_pending_to_the_restarted_wave() -> None:
    record = _record()
    record.waves = [["d0"], ["d1", "d2"]]
    sent = DeviceRecord(device_id="d0", wave=1, before="1.0.0", after="2.0.0", state="done",
                        steps=[StepRecord(name="activate", ok=True, started_at=NOON, seconds=1.0)])
    sent.fail("canary", "Halted", "wave 2 halted")  # sent back, its window closed: never seen back
    record.devices["d0"] = sent
    restart_after_send_back(record, NOON)  # what the flow does when it opens a halted record (`_open_record`)
    fleet = FLEET | {"d0": "2.0.0"}  # still on the version: the fleet's view is not what it ran before
    assert "d0" in add_wave(record, fleet, 10000)
    again = record.devices["d0"]
    assert (again.wave, again.state, again.before, again.after, again.error) == (1, "pending", "1.0.0", None, None)
    assert [step.name for step in again.steps] == ["activate"]  # its history is kept
    again.steps.append(StepRecord(name=WINDOW_STEP, ok=True, started_at=NOON, seconds=0.0))  # wave 1 left it waiting
    assert record.pull is not None
    record.pull.passed.append(10000)
    assert left_waiting(record.devices.values(), 2) == ("d0",)
    watch = stragglers(record.devices, 1)
    assert watch is not None and watch.devices == ("d0",)


def test_a_resumed_interrupted_wave_keeps_its_devices_records() -> None:
    record = _record()
    first = add_wave(record, FLEET, 10000)
    record.devices["d1"].state, record.devices["d1"].after = "done", "2.0.0"  # seen up before the crash
    assert add_wave(record, FLEET, 10000) == first  # the same wave, resumed: not restarted
    assert (record.devices["d1"].state, record.devices["d1"].after) == ("done", "2.0.0")


def test_a_device_the_halted_run_left_waiting_for_its_window_is_carried_only_after_the_restarted_run_moves_it() -> None:
    record = _record()
    record.devices["d5"] = DeviceRecord(device_id="d5", wave=1, before="1.0.0",
                                        steps=[StepRecord(name=WINDOW_STEP, ok=True, started_at=NOON, seconds=0.0)])
    assert left_waiting(record.devices.values(), 2) == ("d5",)  # the halted run's wave 2 would have watched it
    restart_after_send_back(record, NOON)
    assert left_waiting(record.devices.values(), 2) == ()  # the new run's wave 2 may not move it: not carried
    assert stragglers(record.devices, 1) is None
    assert [step.name for step in record.devices["d5"].steps] == [WINDOW_STEP, RESTART_STEP]
