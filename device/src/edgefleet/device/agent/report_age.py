"""How old a report this device's agent wrote is, judged on the device's boot clock (issue 24): what
`edgefleet-agent shadow MODEL` prints for the shadow report. Pure, apart from `DeviceNow.read`.

The agent stamps the report with this boot's id and `time.monotonic()` when it writes it (`BootClock`, the stamp
its status carries too); a reader on the same device reads the same clock (CLOCK_MONOTONIC is one clock for every
process of a boot) and the boot id. Their difference is the report's age whatever the wall clock did: a Raspberry
Pi without an RTC boots at its last saved time (or in 1970) and NTP steps it by hours, either way. On the wall
clock, a report written before a step back is stamped in the future (it read 0 s old: fresh, from an agent that
may have stopped long ago), and one written before a step forward reads hours old.

- Same boot: age = monotonic now - the stamp.
- Another boot: written before the last reboot (a report file the reboot left in the agent root): no age, since
  the clocks of two boots compare with nothing; this boot's agent has not rewritten it.
- No stamp (a report of the agent before the stamp: readers accept that shape) or no boot id read here (not
  Linux): the rule before, this device's wall clock now against the report's `updated_at`, and the age says so;
  a report stamped ahead of the wall clock has no age ("wall clock ahead"), never 0.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from pydantic import ValidationError

from edgefleet.kernel.contracts.status import BOOT_ID_FILE, BootClock, read_boot_id

ReportClock = Literal["boot", "wall"]
REBOOTED = ("written before the last reboot: its boot-clock stamp is of an earlier boot, and this boot's agent "
            "has not rewritten it")


@dataclass(frozen=True)
class DeviceNow:
    """One reading of this device's clocks: the wall clock, the boot's monotonic clock and the boot's id (None:
    none to read, e.g. not Linux)."""

    wall: datetime
    monotonic_s: float
    boot_id: str | None

    @classmethod
    def read(cls) -> DeviceNow:
        return cls(wall=datetime.now(timezone.utc), monotonic_s=time.monotonic(), boot_id=read_boot_id())


@dataclass(frozen=True)
class ReportStamps:
    """When a report says it was written: its wall time (`updated_at`) and its boot-clock stamp (`boot`); either
    None when absent or unreadable."""

    updated_at: datetime | None
    boot: BootClock | None


@dataclass(frozen=True)
class ReportAge:
    """A report's age in seconds (None: unknown, `note` says why), the clock it was judged on, and on the wall
    clock the caveat (`note`); None `note` on the boot clock with an age."""

    seconds: float | None
    clock: ReportClock
    note: str | None = None

    def describe(self) -> str:
        """'12 s old', '12 s old (judged on the device's wall clock: ...)', 'age unknown: <why>'."""
        if self.seconds is None:
            return f"age unknown: {self.note}"
        said = f"{self.seconds:.0f} s old"
        return f"{said} ({self.note})" if self.note else said


def stamps_of(report: Mapping[str, object]) -> ReportStamps:
    """The stamps of a report's JSON object; one that does not parse reads as absent (judged without it)."""
    boot = None
    raw_boot = report.get("boot")
    if isinstance(raw_boot, Mapping):
        try:
            boot = BootClock.model_validate(raw_boot)
        except ValidationError:
            boot = None
    return ReportStamps(updated_at=_parse_time(report.get("updated_at")), boot=boot)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:  # Python 3.9's fromisoformat takes no "Z"
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def report_age(stamps: ReportStamps, now: DeviceNow) -> ReportAge | None:
    """The age of a report with `stamps` at `now` (see the module docstring); None when it says nothing of when
    it was written."""
    stamp = stamps.boot
    if stamp is not None and now.boot_id is not None:
        age = stamp.age_s(now.boot_id, now.monotonic_s)
        return ReportAge(None, "boot", REBOOTED) if age is None else ReportAge(age, "boot")
    if stamps.updated_at is None:
        return None
    why = ("it carries no boot-clock stamp (written by an agent before the stamp)" if stamp is None
           else f"this device's boot id could not be read ({BOOT_ID_FILE})")
    wall_s = (now.wall - stamps.updated_at).total_seconds()
    if wall_s < 0:
        return ReportAge(None, "wall", f"wall clock ahead: the report is stamped {-wall_s:.0f} s ahead of this "
                                       f"device's wall clock (stepped back since it was written: NTP, or a device "
                                       f"without an RTC), and {why}")
    return ReportAge(wall_s, "wall", f"judged on the device's wall clock: {why}; a clock step since misjudges it")
