"""`doctor`'s checks of the host: the disk's and the clock's thresholds."""

from __future__ import annotations

from datetime import datetime, timezone

from edgefleet.device.doctor.host import check_clock, check_disk
from edgefleet.device.doctor.report import DoctorLimits


def test_disk_and_clock_thresholds(tmp_path):
    roomy = DoctorLimits(disk_warn_bytes=0, disk_fail_bytes=0)
    tight = DoctorLimits(disk_warn_bytes=10**18, disk_fail_bytes=0)
    full = DoctorLimits(disk_warn_bytes=10**18, disk_fail_bytes=10**18)
    assert [check_disk(tmp_path / "not-yet", limits).status for limits in (roomy, tight, full)] == \
        ["ok", "warn", "fail"]

    limits = DoctorLimits()
    unset = datetime(1970, 1, 1, tzinfo=timezone.utc)
    now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    assert check_clock(unset, limits, None).status == "fail"
    assert "timedatectl set-ntp true" in check_clock(unset, limits, None).fix
    assert check_clock(now, limits, False).status == "warn"
    assert check_clock(now, limits, True).status == "ok"
