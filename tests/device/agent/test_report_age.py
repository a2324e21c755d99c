"""The age of a report the agent wrote, on the device's boot clock (issue 24): the pure decision."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from edgefleet.device.agent.report_age import REBOOTED, DeviceNow, ReportAge, ReportStamps, report_age, stamps_of
from edgefleet.kernel.contracts.status import BootClock

WALL = datetime(2026, 12, 8, 0, 30, tzinfo=timezone.utc)
NOW = DeviceNow(wall=WALL, monotonic_s=1000.0, boot_id="boot-b")


def stamped(updated_s: float, boot_id: str = "boot-b", wall: datetime = WALL) -> ReportStamps:
    return ReportStamps(updated_at=wall, boot=BootClock(boot_id=boot_id, started_s=0.0, updated_s=updated_s))


@pytest.mark.parametrize("wall_step", [timedelta(hours=-3), timedelta(0), timedelta(days=2)])
def test_a_report_of_this_boot_is_aged_on_the_boot_clock_whatever_the_wall_clock_did(wall_step: timedelta) -> None:
    """Its wall time says the future, now, or two days ago (NTP stepped the clock after it was written)."""
    age = report_age(stamped(988.0, wall=WALL - wall_step), NOW)
    assert age is not None and age == ReportAge(12.0, "boot") and age.describe() == "12 s old"


def test_a_report_of_an_earlier_boot_has_no_age() -> None:
    age = report_age(stamped(10.0, boot_id="boot-a"), NOW)
    assert age is not None and age == ReportAge(None, "boot", REBOOTED)
    assert age.describe().startswith("age unknown: written before the last reboot")


def test_a_report_without_a_boot_stamp_stamped_ahead_of_the_wall_clock_has_no_age() -> None:
    """Before: max(0, now - updated_at) read 0 s, i.e. fresh, for a report from before a step back."""
    age = report_age(ReportStamps(updated_at=WALL + timedelta(hours=1), boot=None), NOW)
    assert age is not None and age.seconds is None and age.clock == "wall"
    assert age.describe().startswith("age unknown: wall clock ahead: the report is stamped 3600 s ahead")
    assert "no boot-clock stamp" in age.describe()


def test_a_report_without_a_boot_stamp_is_aged_on_the_wall_clock_and_says_so() -> None:
    age = report_age(ReportStamps(updated_at=WALL - timedelta(seconds=30), boot=None), NOW)
    assert age is not None and (age.seconds, age.clock) == (30.0, "wall")
    assert age.describe().startswith("30 s old (judged on the device's wall clock: it carries no boot-clock stamp")


def test_without_a_boot_id_here_a_stamped_report_is_aged_on_the_wall_clock_naming_why() -> None:
    age = report_age(stamped(988.0, wall=WALL - timedelta(seconds=5)),
                     DeviceNow(wall=WALL, monotonic_s=1000.0, boot_id=None))
    assert age is not None and (age.seconds, age.clock) == (5.0, "wall")
    assert age.note is not None and "boot id could not be read" in age.note


def test_a_report_that_says_nothing_of_when_it_was_written_has_no_age() -> None:
    assert report_age(ReportStamps(updated_at=None, boot=None), NOW) is None


def test_the_stamps_of_the_previous_agents_report_and_of_this_ones() -> None:
    previous = stamps_of({"updated_at": "2026-12-08T00:29:00Z", "candidate": "2.0.0"})
    assert previous == ReportStamps(updated_at=WALL - timedelta(minutes=1), boot=None)
    current = stamps_of({"updated_at": "2026-12-08T00:29:00+00:00",
                         "boot": {"boot_id": "boot-b", "started_s": 1.0, "updated_s": 2.0}})
    assert current.boot == BootClock(boot_id="boot-b", started_s=1.0, updated_s=2.0)


def test_stamps_that_do_not_parse_read_as_absent() -> None:
    """A damaged file is judged without them (never a crash of the command, never a made-up age)."""
    assert stamps_of({"updated_at": "yesterday", "boot": {"boot_id": ""}}) == ReportStamps(None, None)
    assert report_age(stamps_of({"updated_at": 3, "boot": "x"}), NOW) is None
