"""What a pull rollout writes into its record for a wave (`pull_flow` calls these; no I/O but the run logger):
the wave's devices, what the watch saw them do, the devices left waiting for their window or silent in it, and the
restart after a halt sent the moved devices back.

A wave's devices (`add_wave`): those its share moves that no passed wave holds. A device keeps its record only when
it is in the interrupted attempt of this same wave (a resumed run: what the watch saw stays seen); any other device
of the wave starts `pending` with the wave's number, keeping the version it ran before the rollout (`before`: what
a send-back restores) and its history steps. So on a run restarted after a halt (`restart_after_send_back`), a device
the halt sent back while its window was closed (still `failed`, after = the version, its old wave) is re-added to
the wave that moves it again and watched there, carried (`pull_windows.left_waiting`) or judged as a straggler
(`pull_stragglers`) like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from prefect import get_run_logger

from edgefleet.flows.rollout.pull_waves import WaveObservation, moved
from edgefleet.flows.rollout.pull_windows import NO_REPORT_STEP, WINDOW_STEP, WavePlan, openings
from edgefleet.flows.rollout.record import DeviceRecord, RolloutRecord, StepRecord, utc_now

RESTART_STEP = "restart"
"""The step a device left waiting for its window gets when the rollout restarts after a halt's send-back."""


def restart_after_send_back(record: RolloutRecord, now: datetime) -> None:
    """A re-run of a rollout whose halt sent the moved devices back starts again at its first wave
    (`PullProgress.restart`); the waves of the halted run are history (the first wave replaces them anyway), so no
    device record of that run passes for an interrupted attempt of this run's waves (`add_wave`), and a device the
    halted run left waiting for its window is not carried (`left_waiting`) by a wave of this run that does not
    move it: it waits, with a `restart` step, for the wave that moves it again."""
    if record.pull is not None:
        record.pull.restart()
    record.waves.clear()
    for device in record.devices.values():
        if device.steps and device.steps[-1].name == WINDOW_STEP:
            device.steps.append(StepRecord(name=RESTART_STEP, ok=True, started_at=now, seconds=0.0,
                                           detail="the rollout restarted after a halt sent the moved devices back: "
                                                  "waits for the wave that moves it again"))


def add_wave(record: RolloutRecord, fleet: Mapping[str, str | None], share_bp: int) -> tuple[str, ...]:
    """Records the wave's devices (moved at `share_bp`, not in a passed wave); a device of an interrupted attempt
    of this wave keeps its record, any other starts pending in this wave (see the module docstring). Returns them."""
    wave_number = len(record.pull.passed) + 1 if record.pull else 1
    earlier = {device_id for wave in record.waves[:wave_number - 1] for device_id in wave
               if record.devices[device_id].state != "rolled_back"}  # one sent back moves again: watched here
    attempt = set(record.waves[wave_number - 1]) if len(record.waves) >= wave_number else set()
    devices = tuple(d for d in moved(record.rollout_id, sorted(fleet), share_bp) if d not in earlier)
    for device_id in devices:
        known = record.devices.get(device_id)
        if known is None or known.state == "rolled_back" or device_id not in attempt:
            record.devices[device_id] = DeviceRecord(
                device_id=device_id, wave=wave_number, before=known.before if known and known.before else
                fleet[device_id], steps=list(known.steps) if known else [])
    del record.waves[wave_number - 1:]
    record.waves.append(list(devices))
    return devices


def activations_of(record: RolloutRecord, devices: Sequence[str], since: datetime) -> dict[str, datetime]:
    """Each of `devices`' activation as the record has it (first seen reporting the version), else `since`. Pure."""
    return {device: record.devices[device].activated_at or since for device in devices}


def apply_observation(record: RolloutRecord, observation: WaveObservation, since: datetime) -> None:
    """Records what the watch saw: the devices up on the version (done) and those that refused it (failed)."""
    for device_id in observation.up:
        device = record.devices[device_id]
        device.state, device.after = "done", record.version
        device.activated_at = device.activated_at or observation.up_at.get(device_id, since)
    for device_id in observation.refused:
        record.devices[device_id].refused_by_device = True
        record.devices[device_id].fail("activate", "Refused", f"{device_id} refused {record.version} (swap failure "
                                       "or rollback reported to the monitor)")


def note_window_waiting(record: RolloutRecord, observation: WaveObservation, plan: WavePlan, wave: int) -> None:
    """Records (and logs) the wave's devices still waiting for their maintenance window when it was judged: they
    take the version when it opens, unwatched by this wave; the next wave watches them (`left_waiting`)."""
    now = utc_now()
    opens_at = openings(plan, observation.window_waiting, now)
    for device_id in observation.window_waiting:
        opens = opens_at.get(device_id)
        record.devices[device_id].steps.append(StepRecord(
            name=WINDOW_STEP, ok=True, started_at=now, seconds=0.0,
            detail=f"waiting for its maintenance window when wave {wave} was judged"
                   + (f" (opens {opens.isoformat()})" if opens else "")))
    if observation.window_waiting:
        get_run_logger().info("wave %d judged on %d reporting device(s); %d wait for their maintenance window and "
                              "take the version when it opens", wave, len(observation.up),
                              len(observation.window_waiting))


def note_silent(record: RolloutRecord, carried: list[str], wave: int) -> None:
    """Records the devices an earlier wave left waiting for their window that had it in this wave and still did not
    report: silent, they are not carried to the next wave (`left_waiting`)."""
    now = utc_now()
    for device_id in carried:
        record.devices[device_id].steps.append(StepRecord(
            name=NO_REPORT_STEP, ok=False, started_at=now, seconds=0.0,
            detail=f"had its maintenance window while wave {wave} watched it, and did not report the version"))
