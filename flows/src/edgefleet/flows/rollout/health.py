"""Per-device liveness on the new version: pure functions over the fleet monitor's facts or the agent's status.

This gate only answers "did the device come up on the new version?" (it runs it and infers, it did not
refuse or roll it back, it did not only fail). Whether the new version is *worse* than the old one is the
canary judge's question (`canary.py`), asked per wave with statistics over pooled devices: a per-device
ratio of two small-sample percentiles fires on noise.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from edgefleet.flows.rollout.freshness import DeviceClock, status_age
from edgefleet.flows.rollout.params import LivenessCheck
from edgefleet.kernel.contracts.status import AgentStatus

LivenessState = Literal["pass", "wait", "fail"]


class LivenessVerdict(NamedTuple):
    """pass (up), wait (not yet known), or fail (down), with the reason and the source."""

    state: LivenessState
    reason: str
    source: str


class StatusBaseline(NamedTuple):
    """The agent's swap-failure counter when it was first seen running the new version."""

    swap_failures: int


def monitor_verdict(health: Any, gate: LivenessCheck) -> LivenessVerdict:
    """Verdict from the fleet monitor's `DeviceVersionHealth` of one device for the new version."""
    source = "monitor"
    if not health.known:
        return LivenessVerdict("wait", "the fleet monitor has not heard from the device", source)
    bad_swaps = health.swap_failures + health.rollbacks
    if bad_swaps > gate.max_swap_failures:
        return LivenessVerdict("fail", f"{health.swap_failures} swap failure(s) and {health.rollbacks} rollback(s) "
                               f"of the new version reported (allowed {gate.max_swap_failures})", source)
    successes = health.inferences - health.errors  # the device's inference count includes the failed ones
    if successes <= 0 and health.errors >= gate.min_live_inferences:
        return LivenessVerdict("fail", f"{health.errors} inferences on the new version, all failed", source)
    if successes < gate.min_live_inferences:
        return LivenessVerdict("wait", f"{successes} of {gate.min_live_inferences} inferences on the new version",
                               source)
    return LivenessVerdict("pass", f"up: {health.inferences} inferences, {health.errors} errors", source)


def status_verdict(status: AgentStatus | None, version: str, baseline: StatusBaseline | None, gate: LivenessCheck,
                   now: DeviceClock) -> LivenessVerdict:
    """Verdict from the agent's own `status.json` (read over SSH with the device's clocks, `now`); `baseline` from
    when it first ran `version`. The status's age is judged on the device's boot clock (`freshness.status_age`)."""
    source = "agent"
    if status is None:
        return LivenessVerdict("wait", "the agent has written no status", source)
    age = status_age(status, now)
    if age.stale(gate.status_max_age_s):
        return LivenessVerdict("wait", f"the agent's status is {age.describe()} (agent not alive?)", source)
    if status.state != "running":
        return LivenessVerdict("wait", f"the agent is {status.state}", source)
    if status.version != version or baseline is None:
        return LivenessVerdict("wait", f"the agent still runs {status.version}", source)
    swap_failures = status.swap_failures - baseline.swap_failures
    if swap_failures > gate.max_swap_failures:
        return LivenessVerdict("fail", f"{swap_failures} swap failure(s) since the new version started", source)
    if status.version_frames == 0 and status.version_errors >= gate.min_live_inferences:
        return LivenessVerdict("fail", f"{status.version_errors} inferences on the new version, all failed", source)
    if status.version_frames < gate.min_live_inferences:
        return LivenessVerdict("wait", f"{status.version_frames} of {gate.min_live_inferences} inferences on the "
                               "new version", source)
    said = f"; status {age.describe()}" if age.note else ""
    return LivenessVerdict("pass", f"up: {status.version_frames} inferences, {status.version_errors} errors{said}",
                           source)
