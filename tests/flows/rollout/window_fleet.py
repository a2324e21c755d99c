"""Test support for the pull rollout's window decisions: a night window, a clock the watch reads without waiting, and
a stand-in for the fleet monitor's view whose devices take the version at their first poll inside their window."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from edgefleet.device.window import MaintenanceWindow, in_window

NIGHT = MaintenanceWindow(cron="0 2 * * *", timezone="Europe/Berlin", duration_minutes=120)
NOON = datetime(2026, 6, 10, 12, tzinfo=UTC)  # 14:00 in Berlin
NIGHT_OPENS = datetime(2026, 6, 11, 0, tzinfo=UTC)  # 02:00 CEST


class TenMinuteClock:
    """The watch's time source: every reading 10 minutes after the last (no real waiting)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=10)
        return self.now


class WindowFleet:
    """A stand-in for the fleet monitor's view (`pull_tasks.MonitorView`'s reads): its devices take the version at
    their first poll inside their window (the device's own check, `edgefleet.device.window`), as a pull-mode agent
    does, and report it."""

    def __init__(self, clock: TenMinuteClock, windows: dict[str, MaintenanceWindow | None]) -> None:
        self.clock, self.windows = clock, windows
        self.moved_at: dict[str, datetime] = {}

    def versions(self, stale_after_s: float) -> dict[str, str | None]:
        for device, window in self.windows.items():
            if device not in self.moved_at and in_window(window, self.clock.now):
                self.moved_at[device] = self.clock.now
        return {device: "1.1.0" if device in self.moved_at else "1.0.0" for device in self.windows}

    def failures(self, devices: Sequence[str], version: str, since: datetime) -> dict[str, int]:
        return {}
