"""Maintenance windows (cron + IANA time zone + duration): a device activates only inside one, across DST."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgefleet.device.window import MaintenanceWindow, in_window, next_window_start, window_start

UTC = timezone.utc
# zones with DST at different dates and sizes (Lord Howe moves by 30 minutes), and one without
ZONES = ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago", "Asia/Kolkata", "UTC"]
# instants from a few days around each 2026 DST change of those zones
CHANGES = [datetime(2026, 3, 8, 7, tzinfo=UTC), datetime(2026, 3, 29, 1, tzinfo=UTC),
           datetime(2026, 4, 4, 15, tzinfo=UTC), datetime(2026, 10, 4, 15, tzinfo=UTC),
           datetime(2026, 10, 25, 1, tzinfo=UTC), datetime(2026, 11, 1, 6, tzinfo=UTC),
           datetime(2026, 9, 6, 4, tzinfo=UTC)]

crons = st.one_of(
    st.builds(lambda m, h: f"{m} {h} * * *", st.integers(0, 59), st.integers(0, 23)),
    st.builds(lambda m, h, d: f"{m} {h} * * {d}", st.integers(0, 59), st.integers(0, 23), st.integers(0, 6)),
    st.builds(lambda m, s: f"{m} {s}-23/3 * * *", st.integers(0, 59), st.integers(0, 2)),
    st.sampled_from(["30 2 * * *", "30 1 * * *", "0 2 * * 0", "*/20 1-3 * * *"]),
)
windows = st.builds(MaintenanceWindow, cron=crons, timezone=st.sampled_from(ZONES),
                    duration_minutes=st.integers(1, 6 * 60))
instants = st.builds(lambda base, seconds: base + timedelta(seconds=seconds), st.sampled_from(CHANGES),
                     st.integers(-3 * 86_400, 3 * 86_400))


def oracle_open(window: MaintenanceWindow, instant: datetime) -> bool:
    """Brute force: every local wall-clock minute around `instant` that the cron matches, read with fold=0."""
    zone = ZoneInfo(window.timezone)
    local = instant.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    minute = local - window.duration - timedelta(hours=4)
    while minute <= local + timedelta(hours=4):
        if croniter.match(window.cron, minute):
            start = minute.replace(tzinfo=zone).astimezone(UTC)
            if start <= instant < start + window.duration:
                return True
        minute += timedelta(minutes=1)
    return False


@settings(max_examples=40, deadline=None)
@given(window=windows, instant=instants)
def test_open_exactly_when_a_cron_start_covers_the_instant(window: MaintenanceWindow, instant: datetime) -> None:
    assert in_window(window, instant) == oracle_open(window, instant)


@settings(max_examples=40, deadline=None)
@given(window=windows, instant=instants)
def test_the_window_lasts_its_duration_in_elapsed_time(window: MaintenanceWindow, instant: datetime) -> None:
    start = window_start(window, instant)
    if start is not None:
        assert start <= instant < start + window.duration
        assert in_window(window, start) and in_window(window, start + window.duration - timedelta(seconds=1))
    nxt = next_window_start(window, instant)
    assert nxt >= instant and in_window(window, nxt)
    if start is None:  # closed now, and nothing opens between now and the next start
        for fraction in (0.25, 0.5, 0.75):
            assert not in_window(window, instant + (nxt - instant) * fraction)


def test_a_start_in_the_skipped_hour_opens_one_wall_hour_later() -> None:
    window = MaintenanceWindow(cron="30 2 * * *", timezone="America/New_York", duration_minutes=60)
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist: the window is 03:30-04:30 EDT
    assert next_window_start(window, datetime(2026, 3, 8, 5, tzinfo=UTC)) == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    assert not in_window(window, datetime(2026, 3, 8, 7, 29, tzinfo=UTC))
    assert in_window(window, datetime(2026, 3, 8, 8, 29, tzinfo=UTC))
    assert not in_window(window, datetime(2026, 3, 8, 8, 30, tzinfo=UTC))


def test_a_start_in_the_repeated_hour_opens_once() -> None:
    window = MaintenanceWindow(cron="30 1 * * *", timezone="America/New_York", duration_minutes=30)
    # 2026-11-01: 01:00-02:00 happens twice (EDT, then EST); the window is the first 01:30-02:00 EDT only
    assert in_window(window, datetime(2026, 11, 1, 5, 45, tzinfo=UTC))
    assert not in_window(window, datetime(2026, 11, 1, 6, 45, tzinfo=UTC))  # 01:45 EST, the second time


@pytest.mark.parametrize(("fields", "message"), [
    ({"cron": "0 2 * *"}, "5 fields"), ({"cron": "0 0 2 * * *"}, "5 fields"), ({"cron": "61 2 * * *"}, "not valid"),
    ({"timezone": "Mars/Olympus"}, "unknown"), ({"duration_minutes": 0}, "greater than 0"),
])
def test_a_bad_window_names_what_is_wrong(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MaintenanceWindow(**({"cron": "0 2 * * *", "timezone": "UTC", "duration_minutes": 60} | fields))


def test_no_window_is_always_open() -> None:
    assert in_window(None, datetime(2026, 1, 1, tzinfo=UTC))


def test_the_agent_config_carries_the_window_and_names_a_bad_one(tmp_path: Path) -> None:
    from edgefleet.device.agent.config import load_config
    from edgefleet.kernel.errors import ConfigError

    path = tmp_path / "agent.yaml"
    path.write_text("device_id: cam-1\nmodel: birds\nregistry:\n  uri: /srv/registry\n  poll_jitter: 0.2\n"
                    "  window: {cron: '0 2 * * 6', timezone: Europe/Berlin, duration_minutes: 180}\n")
    config = load_config(path)
    assert config.registry.window == MaintenanceWindow(cron="0 2 * * 6", timezone="Europe/Berlin",
                                                       duration_minutes=180)
    assert config.registry.poll_jitter == 0.2
    path.write_text("device_id: cam-1\nmodel: birds\nregistry:\n"
                    "  window: {cron: '0 2 * * 6', timezone: Europe/Berln, duration_minutes: 180}\n")
    with pytest.raises(ConfigError, match="Europe/Berln") as caught:
        load_config(path)
    assert "'registry.window.timezone'" in caught.value.message and "IANA" in caught.value.message
