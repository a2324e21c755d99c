"""Collecting what the canary judge needs for one wave, and waiting for its verdict.

The judge's unit is the device (`canary.py`): each wave device's window on the new version since the
earliest activation against its own window on the old version before it (`canary.control_lookback_s`),
and the same two windows of control devices still on the old version. Where the numbers come from:
- the fleet monitor (its fleet state), per device: the wave's devices and up to `max_control_devices` of
  the devices not yet reached (the same ones on every look: a stable hash order, not inventory order);
- without a monitor, the agents' own status over SSH: the new version's distributions since it started
  against what the same device reported for the old version when the rollout found it (no controls). A status
  older than the health gate's `status_max_age_s` on the device's boot clock (`freshness.status_age`: its agent
  died or hung, or it is from an earlier boot) gives no numbers: that device counts as not reporting, and the
  verdict's reason says why.
The release's reference distributions (manifest schema 2) are compared as old-vs-new drift on the same
devices. A look that fails (the store unreadable, impossible numbers) is a verdict that fails: the wave
halts and rolls back.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from edgefleet.flows.rollout.canary import cannot_judge, judge_safely, release_classes
from edgefleet.flows.rollout.freshness import DeviceClock, status_age
from edgefleet.flows.rollout.params import CanaryGate
from edgefleet.flows.rollout.verdict import ControlKind, DeviceWindows, Sample, Verdict, WaveEvidence
from edgefleet.kernel.contracts.distributions import Distributions
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
    """The earliest activation in the wave (where the control devices' windows start)."""
    others: tuple[str, ...]
    """Devices outside this and earlier waves (candidates for the concurrent control)."""
    reference: Distributions | None
    detector: bool
    label_count: int | None = None
    """The release's number of labels (its class list, when small)."""
    activations: Mapping[str, datetime] = field(default_factory=dict)
    """Each device's own activation, where it is known apart from the wave's (a pull wave's devices take the
    version at their own poll, in their own maintenance window, hours apart): its windows start there.
    A device not in it starts at `activated_at`."""

    def started(self, device: str) -> datetime:
        """Where `device`'s windows on the new version start (before: the lookback up to it; after: from it)."""
        return self.activations.get(device, self.activated_at)


def status_sample(status: AgentStatus | None, version: str | None) -> Sample | None:
    """What an agent's status says about `version` since it started running it (None: not running it)."""
    if status is None or version is None or status.version != version:
        return None
    return Sample(inferences=status.version_frames + status.version_errors, errors=status.version_errors,
                  devices=(status.device_id,), dist=status.dist or Distributions())


def most_common(values: Sequence[str | None]) -> str | None:
    present = [value for value in values if value is not None]
    return Counter(present).most_common(1)[0][0] if present else None


Collector = Callable[[WaveSubject, CanaryGate], WaveEvidence]
"""(subject, gate) -> one look at the numbers, per device."""


def control_order(devices: Sequence[str], salt: str) -> list[str]:
    """`devices` in a stable pseudo-random order (the same on every look of a wave; not inventory order)."""
    return sorted(devices, key=lambda device: hashlib.sha256(f"{salt}/{device}".encode()).hexdigest())


class MonitorCollector:
    """Reads the fleet monitor's state per device (a connection per call: tasks run in threads)."""

    def __init__(self, config_path: str) -> None:
        from edgefleet.monitor import load_monitor_config

        self.config = load_monitor_config(config_path)

    def __call__(self, subject: WaveSubject, gate: CanaryGate) -> WaveEvidence:
        from edgefleet.monitor import open_fleet_store
        from edgefleet.monitor.windows import version_window

        with open_fleet_store(self.config, create=False) as store:
            def sample(device: str, version: str | None, since: datetime, until: datetime | None = None
                       ) -> Sample | None:
                if version is None:
                    return None
                window = version_window(store, [device], subject.model, version, since, until)
                if not window.devices:
                    return None
                return Sample(inferences=window.inferences, errors=window.errors,
                              swap_failures=window.swap_failures + window.rollbacks, devices=window.devices,
                              dist=window.dist)

            lookback = timedelta(seconds=gate.control_lookback_s)
            canary = tuple(DeviceWindows(device=device, before=sample(device, subject.before,
                                                                      subject.started(device) - lookback,
                                                                      subject.started(device)),
                                         after=sample(device, subject.version, subject.started(device)))
                           for device in subject.devices)
            start = subject.activated_at
            earlier = start - lookback
            chosen = control_order(subject.others, subject.version)[:gate.max_control_devices]
            control = tuple(DeviceWindows(device=device, before=sample(device, subject.before, earlier, start),
                                          after=sample(device, subject.before, start))
                            for device in chosen) if subject.before is not None else ()
        return WaveEvidence(canary=canary, control=control, control_kind=_kind(canary, control))


def _kind(canary: Sequence[DeviceWindows], control: Sequence[DeviceWindows]) -> ControlKind:
    if any(d.before is not None and d.after is not None for d in control):
        return "concurrent"
    return "before-activation" if any(d.before is not None for d in canary) else "none"


@dataclass(frozen=True)
class StatusRead:
    """One device's agent status as read over SSH, with the device's clocks read in the same probe (after it)."""

    status: AgentStatus | None
    clock: DeviceClock


StatusReader = Callable[[Sequence[str]], Mapping[str, StatusRead | None]]
"""device ids -> their status now (None: the device could not be read)."""


def fresh_sample(device: str, read: StatusRead | None, version: str | None, max_age_s: float
                 ) -> tuple[Sample | None, str]:
    """The canary's numbers from one status read, and why there are none when its status is stale ("" else).

    A stale status (older than `max_age_s` on the device's boot clock, or from an earlier boot) is the last word
    of an agent that died or hung: its counters say nothing of the version now, so the device is not reporting."""
    if read is None or read.status is None:
        return None, ""
    age = status_age(read.status, read.clock)
    if age.stale(max_age_s):
        return None, f"{device}: agent status {age.describe()} (over {max_age_s:g} s): not counted"
    return status_sample(read.status, version), ""


class StatusCollector:
    """Reads the agents' own status over SSH (`read_statuses`) and counts only the fresh ones (`fresh_sample`)."""

    def __init__(self, read_statuses: StatusReader, before: dict[str, Sample | None], *, max_age_s: float) -> None:
        self.read_statuses = read_statuses
        self.before = before
        self.max_age_s = max_age_s

    def __call__(self, subject: WaveSubject, gate: CanaryGate) -> WaveEvidence:
        reads = self.read_statuses(subject.devices)
        after = {device: fresh_sample(device, reads.get(device), subject.version, self.max_age_s)
                 for device in subject.devices}
        canary = tuple(DeviceWindows(device=device, before=self.before.get(device), after=after[device][0])
                       for device in subject.devices)
        notes = tuple(note for _, note in after.values() if note)
        return WaveEvidence(canary=canary, control_kind=_kind(canary, ()), notes=notes)


@dataclass(frozen=True)
class Judged:
    verdict: Verdict
    seconds: float
    """From the start of the judgement to the verdict."""
    source: str


def look(subject: WaveSubject, gate: CanaryGate, collect: Collector, *, final: bool) -> Verdict:
    """One look: the numbers, then the verdict; a look that cannot be made fails the verdict (halts)."""
    try:
        evidence = collect(subject, gate)
    except Exception as error:  # noqa: BLE001 - a judge that cannot see cannot pass the wave
        log.exception("canary %s %s: cannot collect the numbers", subject.model, subject.version)
        return cannot_judge(gate, f"cannot collect the numbers: {type(error).__name__}: {error}")
    befores = [d.before.dist for d in evidence.canary if d.before is not None]
    verdict = judge_safely(evidence, subject.reference, gate, detector=subject.detector, final=final,
                           classes=release_classes(subject.label_count, subject.reference, befores))
    if not evidence.notes:
        return verdict
    return verdict.model_copy(update={"reason": "; ".join((verdict.reason, *evidence.notes))})


def await_verdict(subject: WaveSubject, gate: CanaryGate, collect: Collector, source: str, *,
                  poll_interval_s: float, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> Judged:
    """Judges the wave until the verdict is pass or fail, or `gate.timeout_s` is over (then judged as final)."""
    started = clock()
    while True:
        final = clock() - started >= gate.timeout_s
        verdict = look(subject, gate, collect, final=final)
        if verdict.result != "wait":
            return Judged(verdict, clock() - started, source)
        log.info("canary %s %s: %s", subject.model, subject.version, verdict.reason)
        sleep(poll_interval_s)
