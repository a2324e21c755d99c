"""The doctor's report and which of its failures block a rollout (`blocking_failures`, what the rollout's
preflight applies to `edgefleet-agent doctor --json`), with the thresholds of the checks."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.kernel.findings import Finding, Status, failures

# Checks whose failure means "no usable Edge TPU": they block a rollout only where the TPU is required.
TPU_CHECKS = frozenset({"libedgetpu", "edgetpu_devices", "device_permissions"})
# Failures a rollout goes on with: telemetry waits in the spool, the health gate falls back to the agent's
# status over SSH. Credentials block through what needs them (a gs:// registry's own check), not by themselves.
NEVER_BLOCKING = frozenset({"pubsub", "credentials", "telemetry"})


class DoctorReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    checks: tuple[Finding, ...]
    tpu_required: bool = Field(default=False, description="the agent's inference.require_edgetpu")

    @property
    def failed(self) -> tuple[Finding, ...]:
        return failures(self.checks)


class DoctorLimits(BaseModel):
    """Thresholds of the checks (the agent config's defaults; not per-device tuning)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    disk_warn_bytes: int = Field(default=500 * 10**6, ge=0, description="free space below this: warn")
    disk_fail_bytes: int = Field(default=100 * 10**6, ge=0, description="free space below this: fail")
    clock_floor: datetime = Field(default=datetime(2025, 1, 1, tzinfo=timezone.utc),
                                  description="a clock before this is unset (signed pointers would not verify)")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="registry / Pub/Sub reachability")
    probe_timeout_s: float = Field(default=30.0, gt=0, description="the Edge TPU probe")


def blocking_failures(report: DoctorReport, *, tpu_required: bool) -> tuple[Finding, ...]:
    """The failures that block a rollout: all of them but Pub/Sub's, and the TPU's only when it is required."""
    return tuple(check for check in report.failed
                 if check.name not in NEVER_BLOCKING and (tpu_required or check.name not in TPU_CHECKS))



def ok(name: str, detail: str) -> Finding:
    """A check that passed."""
    return Finding(name=name, status=Status.OK, detail=detail)
