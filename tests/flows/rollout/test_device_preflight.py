"""The rollout preflight's use of `edgefleet-agent doctor --json`: which failures block which version.

The device side is a recorded doctor answer (the doctor itself is tested on hosts in
tests/device/doctor/); the real rollout tests run the real doctor over SSH on every device.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgefleet.device.doctor import DoctorReport
from edgefleet.flows.fleet.connection import CommandResult
from edgefleet.flows.rollout.device import PreflightError, doctor_preflight
from edgefleet.kernel.findings import Finding, Status


class RecordedDevice:
    """A device connection whose `edgefleet-agent doctor --json` prints `stdout` and exits `exit_code`."""

    def __init__(self, stdout: str, exit_code: int = 0, stderr: str = "") -> None:
        self.device = SimpleNamespace(id="cam-7")
        self.result = CommandResult(stdout, stderr, exit_code)
        self.calls: list[tuple[str, ...]] = []

    def agent(self, *args: str, check: bool = True, timeout_s: float | None = None) -> CommandResult:
        self.calls.append(args)
        return self.result


def doctor_says(*checks: Finding, tpu_required: bool = False) -> RecordedDevice:
    report = DoctorReport(checks=checks, tpu_required=tpu_required)
    return RecordedDevice(report.model_dump_json(), exit_code=1 if report.failed else 0)


NO_TPU = Finding(name="edgetpu_devices", status=Status.FAIL, detail="no Edge TPU", fix="plug it in")
CRASHING = Finding(name="libedgetpu", status=Status.FAIL, detail="edgetpu_unavailable (crash): SIGSEGV", fix="rebuild")
FULL_DISK = Finding(name="disk", status=Status.FAIL, detail="12 MB free", fix="free space")
NO_PUBSUB = Finding(name="pubsub", status=Status.FAIL, detail="Pub/Sub not reachable", fix="network")


def test_a_healthy_device_passes_with_no_notes():
    device = doctor_says(Finding(name="disk", status=Status.OK, detail="5000 MB free"))

    assert doctor_preflight(device, has_edgetpu_variant=True) == ()
    assert device.calls == [("doctor", "--json")]


def test_no_tpu_is_a_note_where_the_cpu_variant_may_run():
    notes = doctor_preflight(doctor_says(NO_TPU, CRASHING), has_edgetpu_variant=True)

    assert notes == ("edgetpu_devices: no Edge TPU", "libedgetpu: edgetpu_unavailable (crash): SIGSEGV")


def test_no_tpu_blocks_where_the_device_requires_it_for_an_edgetpu_release():
    with pytest.raises(PreflightError, match="doctor found edgetpu_devices: no Edge TPU") as caught:
        doctor_preflight(doctor_says(NO_TPU, tpu_required=True), has_edgetpu_variant=True)
    assert caught.value.fix == "edgetpu_devices: plug it in"
    # A CPU-only release does not need the TPU even there.
    assert doctor_preflight(doctor_says(NO_TPU, tpu_required=True), has_edgetpu_variant=False)


def test_every_blocking_failure_is_listed_and_pubsub_never_blocks():
    with pytest.raises(PreflightError) as caught:
        doctor_preflight(doctor_says(FULL_DISK, NO_PUBSUB, CRASHING, tpu_required=True), has_edgetpu_variant=True)

    assert "disk: 12 MB free" in caught.value.message and "libedgetpu: edgetpu_unavailable" in caught.value.message
    assert "pubsub" not in caught.value.message
    assert caught.value.fix == "disk: free space / libedgetpu: rebuild"


def test_an_agent_without_doctor_is_not_held_back():
    older = RecordedDevice("", exit_code=2, stderr="No such command 'doctor'.")

    assert doctor_preflight(older, has_edgetpu_variant=True) == (
        "doctor unavailable (exit 2): update the agent (deploy-agent)",)
