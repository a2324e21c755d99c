"""How old an agent's status is, judged on one clock: the device's boot clock (issue 24). Pure.

The agent stamps its status on the boot's monotonic clock (status schema 3, `AgentStatus.boot`: its boot id and
`time.monotonic()` when it wrote it); the rollout's probe reads the same device's boot clock (`/proc/uptime`) and
boot id in the same command, after the status (`edgefleet.flows.fleet.agent.probe`). Their difference is the
status's age whatever the device's wall clock did: a Raspberry Pi without an RTC boots at its last saved time
(or in 1970) and NTP steps it by hours or days, either way, possibly mid-rollout. Judged on wall times, a status
written before such a step looks hours old (an alive agent judged dead: preflight refuses the device, the health
wait rolls it back) or, after a step back, from the future (a dead agent judged alive for hours).

- Same boot: age = uptime - the stamp (`/proc/uptime` counts CLOCK_BOOTTIME, which is the agent's
  CLOCK_MONOTONIC plus the time the device was suspended since boot: 0 on a camera that never suspends; on one
  that did, the age reads longer, never shorter).
- Another boot: the status was written by an agent of an earlier boot (a status file that survived a reboot): it
  says nothing about this boot's agent, so it is stale (infinitely old).
- No boot stamp (an agent older than status schema 3, or not Linux) or no boot clock read (a device without
  `/proc/uptime` or a boot id): the rule before, the device's wall clock now against the status's wall time, both
  the device's; the age says so (`StatusAge.note`), and the rollout record carries the note.

No wall clock of the operator's machine enters any of these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from edgefleet.flows.fleet.agent import DeviceProbe
from edgefleet.kernel.contracts.status import AgentStatus

StatusClock = Literal["boot", "wall"]


@dataclass(frozen=True)
class DeviceClock:
    """The device's clocks as one probe read them (after the status): wall (epoch seconds), boot (seconds since
    boot, None: not read) and the boot's id (None: not read)."""

    wall_epoch: float
    uptime_s: float | None = None
    boot_id: str | None = None

    @classmethod
    def of(cls, seen: DeviceProbe) -> DeviceClock:
        return cls(wall_epoch=seen.now_epoch, uptime_s=seen.uptime_s, boot_id=seen.boot_id)


@dataclass(frozen=True)
class StatusAge:
    """How old a status is (seconds; `inf`: written in another boot), on which clock, and why not on the boot
    clock when it is the wall clock (`note`, for the record; "" on the boot clock)."""

    seconds: float
    clock: StatusClock
    note: str = ""

    def stale(self, max_age_s: float) -> bool:
        return self.seconds > max_age_s

    def describe(self) -> str:
        """'12 s old', 'written in an earlier boot', with the wall clock's note when judged on it."""
        said = "written in an earlier boot of the device" if math.isinf(self.seconds) else f"{self.seconds:.0f} s old"
        return f"{said} ({self.note})" if self.note else said


def status_age(status: AgentStatus, now: DeviceClock) -> StatusAge:
    """The age of `status` at `now` (see the module docstring for the rules)."""
    stamp = status.boot
    if stamp is not None and now.uptime_s is not None and now.boot_id is not None:
        age = stamp.age_s(now.boot_id, now.uptime_s)
        return StatusAge(math.inf if age is None else age, "boot")
    if stamp is None:
        why = (f"the agent's status (schema {status.schema_}) carries no boot clock: an agent before status schema 3, "
               "or not on Linux")
    else:
        why = "the device's boot clock could not be read (no /proc/uptime or boot id)"
    return StatusAge(now.wall_epoch - status.updated_at.timestamp(), "wall",
                     f"judged on the device's wall clock: {why}; a clock step there misjudges it")


@dataclass(frozen=True)
class ReportSeen:
    """A device's shadow report as the shadow wave's looks saw it: its text, when this text was first seen (the
    rollout's own monotonic seconds), and whether the agent was seen rewriting it (the text changed between two
    looks). The shadow report carries no boot-clock stamp: its age is judged on the rollout's clock alone, by
    its agent rewriting it (every `shadow.report_interval_s`, 2 s by default: `updated_at` changes each time)."""

    text: str
    since_s: float
    rewritten: bool = False


def seen_again(previous: ReportSeen | None, text: str, now_s: float) -> ReportSeen:
    """The report after one more look at `now_s` that read `text`."""
    if previous is None:
        return ReportSeen(text, now_s)
    if previous.text == text:
        return previous
    return ReportSeen(text, now_s, rewritten=True)


def report_fresh(seen: ReportSeen, now_s: float, max_age_s: float) -> bool:
    """Whether the report's pairs are judged: its agent was seen rewriting it, the last time within `max_age_s`
    (counted from the look that first read this text: at most one look later than the rewrite). A report never
    seen to change (the first look, or a stopped or crash-looping agent's last one) is not judged, whatever the
    device's wall clock says of its `updated_at`."""
    return seen.rewritten and now_s - seen.since_s <= max_age_s
