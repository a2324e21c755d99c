"""Maintenance windows: when a device may activate a version it pulled (cron + IANA time zone + duration). Pure.

A window opens at every local wall-clock minute its 5-field cron expression matches in `timezone` and stays
open for `duration_minutes` of elapsed time (not wall time: a window across a DST change is as long as any
other). Daylight saving time, as cron users expect it:

- a start that does not exist locally (in the hour skipped in spring) opens at the same instant the skipped
  wall time would have been with the offset before the change, i.e. one hour later on the wall clock
  (02:30 becomes 03:30 in New York on the spring-forward day);
- a start that exists twice (the hour repeated in autumn) opens once, at the first occurrence.

That is zoneinfo's `fold=0` reading of a local time. `croniter` matches the expression on naive local
times (so its own time-zone handling never comes into play); zoneinfo turns each into an instant.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator

CRON_FIELDS = 5
MAX_WINDOW_MINUTES = 7 * 24 * 60
"""A window longer than a week is no window (use none: always open)."""
DST_MARGIN = timedelta(hours=3)
"""More than any UTC offset change (the largest is 2 h), so a scan in local time never misses a start."""
_MINUTE = timedelta(minutes=1)


class MaintenanceWindow(BaseModel):
    """When a device may activate a new version (config `registry.window`; none: any time)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cron: str = Field(description="5-field cron expression of the window's start, in local time, e.g. '0 2 * * *'")
    timezone: str = Field(description="IANA time zone the cron expression is read in, e.g. Europe/Berlin")
    duration_minutes: int = Field(gt=0, le=MAX_WINDOW_MINUTES, description="how long the window stays open")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if len(value.split()) != CRON_FIELDS or not croniter.is_valid(value):
            raise ValueError(f"cron expression {value!r} is not valid: use 5 fields (minute hour day month weekday), "
                             "e.g. '0 2 * * *' for 02:00 every day")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"time zone {value!r} is unknown: use an IANA name such as Europe/Berlin or UTC "
                             "(and install the tzdata package if the system has none)") from error
        return value

    @property
    def duration(self) -> timedelta:
        return timedelta(minutes=self.duration_minutes)


def _instant(local: datetime, zone: ZoneInfo) -> datetime:
    """A naive local time as an instant (fold=0: see the module doc), in UTC."""
    return local.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)


def _local_minute(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0, fold=0)


def _starts_before(window: MaintenanceWindow, instant: datetime) -> Iterator[datetime]:
    """Window starts (instants) from the latest local start at or before `instant`'s local minute (plus the
    DST margin) backwards, in local order."""
    zone = ZoneInfo(window.timezone)
    cron = croniter(window.cron, _local_minute(instant, zone) + DST_MARGIN + _MINUTE)
    while True:
        yield _instant(cron.get_prev(datetime), zone)


def window_start(window: MaintenanceWindow, instant: datetime) -> datetime | None:
    """The start of the window `instant` is in (the latest one, when windows overlap), or None.

    Every window lasts the same elapsed time, so the latest start at or before `instant` is the only one to
    check: an earlier one ends earlier. Starts are scanned back only as far as local order and instant order
    can differ (twice the DST margin), whatever the window's length (an every-minute cron with a week-long
    window stepped through 10,000 starts on every poll)."""
    oldest = instant - 2 * DST_MARGIN
    latest = None
    for start in _starts_before(window, instant):
        if start < oldest:
            break
        if start <= instant and (latest is None or start > latest):
            latest = start
    return latest if latest is not None and instant < latest + window.duration else None


def in_window(window: MaintenanceWindow | None, instant: datetime) -> bool:
    """True when a device may activate at `instant` (always, without a window)."""
    return window is None or window_start(window, instant) is not None


def next_window_start(window: MaintenanceWindow, instant: datetime) -> datetime:
    """The first window start at or after `instant` (an instant in UTC)."""
    zone = ZoneInfo(window.timezone)
    cron = croniter(window.cron, _local_minute(instant, zone) - DST_MARGIN - _MINUTE)
    best = None
    while True:
        start = _instant(cron.get_next(datetime), zone)
        if start >= instant and (best is None or start < best):
            best = start
        if best is not None and start > best + 2 * DST_MARGIN:
            return best
