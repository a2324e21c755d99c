"""The SSH canary (no fleet monitor) counts only fresh agent statuses: an agent that died or hung after the
activation keeps its last status.json, whose counters must not pass the wave (judged on the boot clock)."""

from __future__ import annotations

from datetime import UTC, datetime

from edgefleet.flows.rollout.freshness import DeviceClock
from edgefleet.flows.rollout.judgement import (
    StatusCollector,
    StatusRead,
    WaveSubject,
    fresh_sample,
    look,
    status_sample,
)
from edgefleet.flows.rollout.params import CanaryGate, HealthGate
from edgefleet.kernel.contracts import distributions as d
from edgefleet.kernel.contracts.status import AgentStatus, BootClock

AT = datetime(2026, 1, 1, tzinfo=UTC)
BOOT = "boot-b"
WRITTEN_S = 100.0  # the status's stamp on the boot clock
MAX_AGE_S = HealthGate().status_max_age_s
FRESH = DeviceClock(AT.timestamp(), uptime_s=WRITTEN_S + 1.0, boot_id=BOOT)
STALE = DeviceClock(AT.timestamp(), uptime_s=WRITTEN_S + MAX_AGE_S + 60.0, boot_id=BOOT)
REBOOTED = DeviceClock(AT.timestamp(), uptime_s=WRITTEN_S + 1.0, boot_id="boot-c")
# the same scene before and after: counters and distributions that pass the judge
DIST = d.build(latency={d.latency_bucket(0.3): 400, d.latency_bucket(0.4): 600},
               score={d.score_bucket(0.9): 1000}, classes={0: 500, 1: 500})


def _status(device: str, version: str) -> AgentStatus:
    return AgentStatus(device_id=device, pid=7, state="running", started_at=AT, updated_at=AT, model="m",
                       version=version, version_frames=1000, version_errors=0, dist=DIST,
                       boot=BootClock(boot_id=BOOT, started_s=10.0, updated_s=WRITTEN_S))


def _subject(*devices: str) -> WaveSubject:
    return WaveSubject(model="m", version="2.0.0", devices=devices, before="1.0.0", activated_at=AT, others=(),
                       reference=None, detector=False)


def _collector(clocks: dict[str, DeviceClock]) -> StatusCollector:
    before = {device: status_sample(_status(device, "1.0.0"), "1.0.0") for device in clocks}
    return StatusCollector(lambda ids: {i: StatusRead(_status(i, "2.0.0"), clocks[i]) for i in ids}, before,
                           max_age_s=MAX_AGE_S)


def test_a_dead_agents_last_status_does_not_pass_the_wave() -> None:
    collector = _collector({"c1": STALE})
    waiting = look(_subject("c1"), CanaryGate(), collector, final=False)
    final = look(_subject("c1"), CanaryGate(), collector, final=True)
    assert waiting.result == "wait" and final.result == "fail"
    assert "c1: agent status 75 s old" in final.reason and "not counted" in final.reason


def test_a_status_from_an_earlier_boot_gives_no_numbers() -> None:
    sample, why = fresh_sample("c1", StatusRead(_status("c1", "2.0.0"), REBOOTED), "2.0.0", MAX_AGE_S)
    assert sample is None and "earlier boot" in why


def test_a_fresh_status_is_counted_as_before() -> None:
    status = _status("c1", "2.0.0")
    assert fresh_sample("c1", StatusRead(status, FRESH), "2.0.0", MAX_AGE_S) == (status_sample(status, "2.0.0"), "")
    verdict = look(_subject("c1"), CanaryGate(), _collector({"c1": FRESH}), final=True)
    assert verdict.result == "pass" and "not counted" not in verdict.reason


def test_a_stale_device_beside_fresh_ones_is_a_device_not_reporting_and_named() -> None:
    evidence = _collector({"c1": FRESH, "c2": STALE})(_subject("c1", "c2"), CanaryGate())
    assert [w.after is not None for w in evidence.canary] == [True, False]
    assert len(evidence.notes) == 1 and evidence.notes[0].startswith("c2: ")


def test_an_unreadable_device_or_no_status_gives_no_numbers_and_no_note() -> None:
    assert fresh_sample("c1", None, "2.0.0", MAX_AGE_S) == (None, "")
    assert fresh_sample("c1", StatusRead(None, FRESH), "2.0.0", MAX_AGE_S) == (None, "")
