"""The health gate's verdicts: pure functions over the fleet monitor's facts or the agent's own status."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NamedTuple

from edgefleet.flows.rollout.params import HealthGate

VerdictState = Literal["pass", "wait", "fail"]


class Verdict(NamedTuple):
    """pass (healthy), wait (not yet known), or fail (unhealthy), with the reason and the source."""

    state: VerdictState
    reason: str
    source: str


class StatusBaseline(NamedTuple):
    """The agent's counters when it was first seen running the new version."""

    frames: int
    errors: int
    swap_failures: int


def _p95_check(new_p95: float | None, previous_p95: float | None, gate: HealthGate) -> str | None:
    if new_p95 is None or previous_p95 is None or previous_p95 <= 0:
        return None
    ratio = new_p95 / previous_p95
    if ratio > gate.max_p95_ratio:
        return (f"p95 latency {new_p95:.1f} ms is {ratio:.2f}x the previous version's {previous_p95:.1f} ms "
                f"(allowed {gate.max_p95_ratio:g}x)")
    return None


def monitor_verdict(health: Any, previous_p95: float | None, gate: HealthGate) -> Verdict:
    """Verdict from the fleet monitor's `DeviceVersionHealth` of one device for the new version."""
    source = "monitor"
    if not health.known:
        return Verdict("wait", "the fleet monitor has not heard from the device", source)
    bad_swaps = health.swap_failures + health.rollbacks
    if bad_swaps > gate.max_swap_failures:
        return Verdict("fail", f"{health.swap_failures} swap failure(s) and {health.rollbacks} rollback(s) of the "
                               f"new version reported (allowed {gate.max_swap_failures})", source)
    total = health.inferences  # the device's inference count already includes the failed ones
    if total >= gate.min_inferences and health.errors / total > gate.max_error_ratio:
        return Verdict("fail", f"{health.errors} of {total} inferences failed (allowed "
                               f"{gate.max_error_ratio:.1%})", source)
    if health.error_events > gate.max_swap_failures and health.inferences == 0:
        return Verdict("fail", f"{health.error_events} error event(s) on the new version and no inference", source)
    if health.inferences < gate.min_inferences:
        return Verdict("wait", f"{health.inferences} of {gate.min_inferences} inferences on the new version", source)
    latency = _p95_check(health.latency_p95_ms, previous_p95, gate)
    if latency:
        return Verdict("fail", latency, source)
    return Verdict("pass", f"{health.inferences} inferences, {health.errors} errors, p95 "
                           f"{health.latency_p95_ms or 0:.1f} ms", source)


def status_age_s(status: dict[str, Any], now_epoch: float) -> float:
    """Seconds since the agent last wrote its status (device clock)."""
    return now_epoch - datetime.fromisoformat(status["updated_at"]).timestamp()


def status_verdict(status: dict[str, Any] | None, version: str, baseline: StatusBaseline | None,
                   previous_p95: float | None, gate: HealthGate, now_epoch: float) -> Verdict:
    """Verdict from the agent's own `status.json` (read over SSH); `baseline` from when it first ran `version`.

    The agent's latency window spans the swap, so its p95 mixes both versions for a while: the latency
    check here is coarser than the monitor's per-version one.
    """
    source = "agent"
    if status is None:
        return Verdict("wait", "the agent has written no status", source)
    age = status_age_s(status, now_epoch)
    if age > gate.status_max_age_s:
        return Verdict("wait", f"the agent's status is {age:.0f} s old (agent not alive?)", source)
    if status.get("state") != "running":
        return Verdict("wait", f"the agent is {status.get('state')}", source)
    if status.get("version") != version or baseline is None:
        return Verdict("wait", f"the agent still runs {status.get('version')}", source)
    swap_failures = status.get("swap_failures", 0) - baseline.swap_failures
    if swap_failures > gate.max_swap_failures:
        return Verdict("fail", f"{swap_failures} swap failure(s) since the new version started", source)
    frames = status.get("frames", 0) - baseline.frames
    errors = status.get("errors", 0) - baseline.errors
    if frames + errors >= gate.min_inferences and errors / (frames + errors) > gate.max_error_ratio:
        return Verdict("fail", f"{errors} of {frames + errors} inferences failed (allowed "
                               f"{gate.max_error_ratio:.1%})", source)
    if frames < gate.min_inferences:
        return Verdict("wait", f"{frames} of {gate.min_inferences} inferences on the new version", source)
    latency = _p95_check(status.get("latency_ms_p95"), previous_p95, gate)
    if latency:
        return Verdict("fail", latency, source)
    return Verdict("pass", f"{frames} inferences, {errors} errors, p95 {status.get('latency_ms_p95', 0):.1f} ms",
                   source)
