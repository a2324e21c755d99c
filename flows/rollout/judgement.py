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

from edgefleet.flows.rollout.canary import judge
from edgefleet.flows.rollout.params import CanaryGate
from edgefleet.flows.rollout.verdict import ControlKind, Sample, Verdict
from edgefleet.kernel.contracts.distributions import Distributions, merge
from edgefleet.kernel.contracts.status import AgentStatus

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


@dataclass(frozen=True)
class Looked:
    """One look at the numbers: the canary, and the controls for latency/errors and for model behaviour."""

    canary: Sample
    control: Sample | None
    control_kind: ControlKind
    behaviour_control: Sample | None
    behaviour_kind: ControlKind


Collector = Callable[[WaveSubject, CanaryGate], Looked]
"""(subject, gate) -> one look at the numbers."""


class MonitorCollector:
    """Reads the fleet monitor's state (a connection per call: tasks run in threads).

    Latency and errors are compared with devices still on the old version at the same time (same load),
    else with the wave's devices before activation; the class mix and scores with the wave's own devices
    before activation (same scenes: different cameras legitimately see different classes), else with the
    concurrent devices.
    """

    def __init__(self, config_path: str) -> None:
        from edgefleet.monitor import load_monitor_config

        self.config = load_monitor_config(config_path)

    def __call__(self, subject: WaveSubject, gate: CanaryGate) -> Looked:
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
                return Looked(canary, None, "none", None, "none")
            earlier = subject.activated_at - timedelta(seconds=gate.control_lookback_s)
            before = sample(subject.devices, subject.before, earlier, subject.activated_at)
            concurrent = sample(subject.others, subject.before, subject.activated_at) if subject.others else None
            enough = [s for s in (concurrent, before) if s is not None and s.inferences >= gate.min_samples]
            if not enough:
                return Looked(canary, before, "before-activation", before, "before-activation")
            if concurrent in enough and before in enough:
                return Looked(canary, concurrent, "concurrent", before, "before-activation")
            only = enough[0]
            kind: ControlKind = "concurrent" if only is concurrent else "before-activation"
            return Looked(canary, only, kind, only, kind)


class StatusCollector:
    """Reads the agents' own status over SSH (`read_statuses`: device ids -> their status now)."""

    def __init__(self, read_statuses: Callable[[Sequence[str]], dict[str, AgentStatus | None]],
                 before: dict[str, Sample | None]) -> None:
        self.read_statuses = read_statuses
        self.before = before

    def __call__(self, subject: WaveSubject, gate: CanaryGate) -> Looked:
        statuses = self.read_statuses(subject.devices)
        canary = pool([status_sample(statuses.get(device), subject.version) for device in subject.devices])
        control = pool([self.before.get(device) for device in subject.devices])
        kind: ControlKind = "before-activation" if control is not None else "none"
        return Looked(canary or Sample(inferences=0), control, kind, control, kind)


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
        looked = collect(subject, gate)
        verdict = judge(looked.canary, looked.control, subject.reference, gate, control_kind=looked.control_kind,
                        behaviour_control=looked.behaviour_control, behaviour_kind=looked.behaviour_kind,
                        detector=subject.detector, final=final)
        if verdict.result != "wait":
            return Judged(verdict, clock() - started, source)
        log.info("canary %s %s: %s", subject.model, subject.version, verdict.reason)
        sleep(poll_interval_s)
