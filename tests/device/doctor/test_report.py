"""Which of `doctor`'s failures block a rollout."""

from __future__ import annotations

from edgefleet.device.doctor.report import DoctorReport, blocking_failures
from edgefleet.kernel.findings import Finding, Status


def test_tpu_failures_block_a_rollout_only_where_the_tpu_is_required():
    report = DoctorReport(checks=(
        Finding(name="libedgetpu", status=Status.FAIL, detail="crash", fix="x"),
        Finding(name="disk", status=Status.FAIL, detail="full", fix="y"),
        Finding(name="pubsub", status=Status.FAIL, detail="unreachable", fix="z"),  # the spool holds telemetry
        Finding(name="clock", status=Status.WARN, detail="not synchronized"),
    ))

    assert [c.name for c in blocking_failures(report, tpu_required=False)] == ["disk"]
    assert [c.name for c in blocking_failures(report, tpu_required=True)] == ["libedgetpu", "disk"]
