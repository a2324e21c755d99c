"""Collecting what the canary judge needs for one wave, and waiting for its verdict.

Where the numbers come from, best first:
- the fleet monitor (its fleet state): the wave's devices on the new version since the earliest activation
  (canary); the other devices still on the old version over the same window (concurrent control), else the
  wave's devices on the old version before the activation (`canary.control_lookback_s`);
- without a monitor, the agents' own status over SSH: the new version's distributions since it started
  (canary) against what the same devices reported for the old version when the rollout found them
  (before-activation control).
The release's reference distributions (manifest schema 2) are the third comparison in both cases.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from edgefleet.device.agent.status import AgentStatus
from edgefleet.device.contracts.distributions import Distributions, merge
from edgefleet.flows.rollout.canary import judge
from edgefleet.flows.rollout.params import CanaryGate
from edgefleet.flows.rollout.verdict import ControlKind, Sample, Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WaveSubject:
    """What one wave put on which devices."""

    model: str
    version: str
    devices: tuple[str, ...]
    """The wave's devices that came up on the new version."""
    before: str | None
    """The version most of them ran before (the control's version)."""
    activated_at: datetime
    """The earliest activation in the wave."""
    others: tuple[str, ...]
    """Devices outside this and earlier waves (candidates for the concurrent control)."""
    reference: Distributions | None
    detector: bool


def status_sample(status: AgentStatus | None, version: str | None) -> Sample | None:
    """What an agent's status says about `version` since it started running it (None: not running it)."""
    if status is None or version is None or status.version != version:
        return None
    return Sample(inferences=status.version_frames + status.version_errors, errors=status.version_errors,
                  devices=(status.device_id,), dist=status.dist or Distributions())


def pool(samples: Sequence[Sample | None]) -> Sample | None:
    """The sum of several devices' samples (None when there is none)."""
    present = [sample for sample in samples if sample is not None]
    if not present:
        return None
    return Sample(inferences=sum(s.inferences for s in present), errors=sum(s.errors for s in present),
                  swap_failures=sum(s.swap_failures for s in present),
                  devices=tuple(device for s in present for device in s.devices),
                  dist=merge(s.dist for s in present))


def most_common(values: Sequence[str | None]) -> str | None:
    present = [value for value in values if value is not None]
    return Counter(present).most_common(1)[0][0] if present else None


Collector = Callable[[WaveSubject, CanaryGate], tuple[Sample, Sample | None, ControlKind]]
"""(subject, gate) -> (canary, control, control kind): one look at the numbers."""


class MonitorCollector:
    """Reads the fleet monitor's state (a connection per call: tasks run in threads)."""

    def __init__(self, config_path: str) -> None:
        from edgefleet.monitor import load_monitor_config

        self.config = load_monitor_config(config_path)

    def __call__(self, subject: WaveSubject, gate: CanaryGate) -> tuple[Sample, Sample | None, ControlKind]:
        from edgefleet.monitor import open_fleet_store
        from edgefleet.monitor.windows import version_window

        with open_fleet_store(self.config, create=False) as store:
            def sample(devices: Sequence[str], version: str, since: datetime,
                       until: datetime | None = None) -> Sample:
                window = version_window(store, devices, subject.model, version, since, until)
                return Sample(inferences=window.inferences, errors=window.errors,
                              swap_failures=window.swap_failures + window.rollbacks, devices=window.devices,
                              dist=window.dist)

            canary = sample(subject.devices, subject.version, subject.activated_at)
            if subject.before is None:
                return canary, None, "none"
            if subject.others:
                concurrent = sample(subject.others, subject.before, subject.activated_at)
                if concurrent.inferences >= gate.min_samples:
                    return canary, concurrent, "concurrent"
            earlier = subject.activated_at - timedelta(seconds=gate.control_lookback_s)
            before = sample(subject.devices, subject.before, earlier, subject.activated_at)
            return canary, before, "before-activation"


class StatusCollector:
    """Reads the agents' own status over SSH (`read_statuses`: device ids -> their status now)."""

    def __init__(self, read_statuses: Callable[[Sequence[str]], dict[str, AgentStatus | None]],
                 before: dict[str, Sample | None]) -> None:
        self.read_statuses = read_statuses
        self.before = before

    def __call__(self, subject: WaveSubject, gate: CanaryGate) -> tuple[Sample, Sample | None, ControlKind]:
        statuses = self.read_statuses(subject.devices)
        canary = pool([status_sample(statuses.get(device), subject.version) for device in subject.devices])
        control = pool([self.before.get(device) for device in subject.devices])
        return (canary or Sample(inferences=0), control,
                "before-activation" if control is not None else "none")


@dataclass(frozen=True)
class Judged:
    verdict: Verdict
    seconds: float
    """From the start of the judgement to the verdict."""
    source: str


def await_verdict(subject: WaveSubject, gate: CanaryGate, collect: Collector, source: str, *,
                  poll_interval_s: float, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> Judged:
    """Judges the wave until the verdict is pass or fail, or `gate.timeout_s` is over (then judged as final)."""
    started = clock()
    while True:
        final = clock() - started >= gate.timeout_s
        canary, control, kind = collect(subject, gate)
        verdict = judge(canary, control, subject.reference, gate, control_kind=kind, detector=subject.detector,
                        final=final)
        if verdict.result != "wait":
            return Judged(verdict, clock() - started, source)
        log.info("canary %s %s: %s", subject.model, subject.version, verdict.reason)
        sleep(poll_interval_s)
