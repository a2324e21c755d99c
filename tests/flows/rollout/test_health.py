"""The liveness verdict from the agent's status, judged on the device's boot clock (issue 24)."""

from __future__ import annotations

from datetime import UTC, datetime

from edgefleet.flows.fleet.agent import PROBE_MARK, parse_probe
from edgefleet.flows.rollout.freshness import DeviceClock
from edgefleet.flows.rollout.health import StatusBaseline, status_verdict
from edgefleet.flows.rollout.params import LivenessCheck
from edgefleet.kernel.contracts.status import AgentStatus, BootClock

BOOT = "6f1c2d7e-0b1a-4c55-9d0e-3a2b1c0d9e8f"
NOW = 1_796_000_000.0  # the device's wall clock when the rollout reads it (NTP synced)
HOURS = 3 * 3600.0


def _status(written_epoch: float, *, mono: float, boot: str = BOOT) -> AgentStatus:
    at = datetime.fromtimestamp(written_epoch, UTC)
    return AgentStatus(device_id="cam-1", pid=7, state="running", started_at=at, updated_at=at, version="2.0.0",
                       version_frames=50, boot=BootClock(boot_id=boot, started_s=10.0, updated_s=mono))


def _probe_output(status: AgentStatus, *, wall: float, uptime: float, boot: str = BOOT) -> str:
    """What the probe prints on a Linux device: its wall clock, then (after the status) its uptime and boot id."""
    return "\n".join([PROBE_MARK, "/agent", f"{wall:.3f}", "2.0.0", "1.0.0", "4096", "-", "",
                      status.model_dump_json(by_alias=True), f"{uptime:.2f}", boot, ""])


def test_a_status_written_before_ntp_stepped_the_clock_by_hours_is_fresh_on_the_boot_clock():
    # the agent wrote its status 2 s ago (boot clock 5000 s -> 5002 s), when the Pi's clock was still 3 h behind
    status = _status(NOW - HOURS, mono=5000.0)
    seen = parse_probe(_probe_output(status, wall=NOW, uptime=5002.0))
    verdict = status_verdict(seen.status, "2.0.0", StatusBaseline(0), LivenessCheck(), DeviceClock.of(seen))
    assert verdict.state == "pass", verdict.reason


def test_a_dead_agent_whose_clock_was_hours_ahead_is_stale_on_the_boot_clock():
    # the agent stopped 600 s ago (boot clock 5000 s -> 5600 s); it wrote its status while the clock was 3 h ahead
    status = _status(NOW + HOURS, mono=5000.0)
    seen = parse_probe(_probe_output(status, wall=NOW, uptime=5600.0))
    verdict = status_verdict(seen.status, "2.0.0", StatusBaseline(0), LivenessCheck(), DeviceClock.of(seen))
    assert verdict.state == "wait" and "600 s old" in verdict.reason, verdict.reason


def test_a_status_of_an_agent_before_the_boot_clock_is_judged_on_the_wall_clock_and_says_so():
    old = AgentStatus(device_id="cam-1", pid=7, state="running", schema=2, version="2.0.0", version_frames=50,
                      started_at=datetime.fromtimestamp(NOW - 60, UTC), updated_at=datetime.fromtimestamp(NOW - 2, UTC))
    verdict = status_verdict(old, "2.0.0", StatusBaseline(0), LivenessCheck(), DeviceClock(NOW, 5000.0, BOOT))
    assert verdict.state == "pass" and "wall clock" in verdict.reason and "schema 2" in verdict.reason
    stopped = status_verdict(old, "2.0.0", StatusBaseline(0), LivenessCheck(), DeviceClock(NOW + 600, 5600.0, BOOT))
    assert stopped.state == "wait" and "602 s old" in stopped.reason and "wall clock" in stopped.reason
