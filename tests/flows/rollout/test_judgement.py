"""Waiting for a wave's verdict: a judge that cannot judge halts the wave (no crash, no endless wait)."""

from __future__ import annotations

from datetime import UTC, datetime

from edgefleet.flows.rollout.judgement import WaveSubject, await_verdict, control_order
from edgefleet.flows.rollout.params import CanaryGate
from edgefleet.flows.rollout.verdict import DeviceWindows, Sample, WaveEvidence
from edgefleet.flows.rollout.waves import decide_wave
from edgefleet.kernel.contracts import distributions as d

SUBJECT = WaveSubject(model="m", version="2.0.0", devices=("c1",), before="1.0.0",
                      activated_at=datetime(2026, 1, 1, tzinfo=UTC), others=("k1", "k2", "k3"), reference=None,
                      detector=False)


def _await(collect):  # noqa: ANN001, ANN202
    sleeps: list[float] = []
    judged = await_verdict(SUBJECT, CanaryGate(), collect, "monitor", poll_interval_s=1.0, clock=lambda: 0.0,
                           sleep=sleeps.append)
    return judged, sleeps


def test_a_look_that_raises_is_a_failed_verdict_that_rolls_the_wave_back() -> None:
    def broken(subject, gate):  # noqa: ANN001, ANN202
        raise OSError("database disk image is malformed")

    judged, sleeps = _await(broken)
    assert judged.verdict.result == "fail" and judged.verdict.halted_by == ("judge",) and sleeps == []
    assert "malformed" in judged.verdict.reason
    decision = decide_wave(["c1"], [], ["c1"], judged.verdict, 0.0, "failed", ["c1"])
    assert decision.halt and decision.roll_back == ("c1",)


def test_schema_valid_but_impossible_counts_halt_instead_of_crashing_mid_wave() -> None:
    # past the telemetry contract's bounds (refused at ingest now; a fleet state written before them may hold it)
    impossible = Sample.model_construct(inferences=10, errors=11, dist=d.Distributions.model_construct(
        latency=[d.BucketCount.model_construct(i=5000, n=2**53)]))

    def collect(subject, gate):  # noqa: ANN001, ANN202
        return WaveEvidence(canary=(DeviceWindows(device="c1", before=impossible, after=impossible),))

    judged, _ = _await(collect)
    assert judged.verdict.result == "fail" and judged.verdict.halted_by == ("judge",)
    assert judged.verdict.table()[0]["metric"] == "judge (critical)"


def test_controls_are_the_same_devices_on_every_look_and_not_inventory_order() -> None:
    devices = [f"k{i}" for i in range(100)]
    assert control_order(devices, "2.0.0") == control_order(list(reversed(devices)), "2.0.0")
    assert control_order(devices, "2.0.0")[:30] != devices[:30]
