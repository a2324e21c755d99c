"""A status's age on the device's boot clock, whatever its wall clock did (issue 24): pure, fast."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from edgefleet.flows.fleet.agent import PROBE_MARK, parse_probe
from edgefleet.flows.rollout.freshness import DeviceClock, report_fresh, seen_again, status_age
from edgefleet.kernel.contracts.status import AgentStatus, BootClock

BOOT, EARLIER_BOOT = "boot-b", "boot-a"
NOW = 1_796_000_000.0  # the device's wall clock at the probe
MAX_AGE_S = 15.0


def _status(written_epoch: float, mono: float | None, *, boot: str = BOOT, schema: int = 3) -> AgentStatus:
    at = datetime.fromtimestamp(written_epoch, UTC)
    stamp = None if mono is None else BootClock(boot_id=boot, started_s=10.0, updated_s=mono)
    return AgentStatus(device_id="cam-1", pid=7, state="running", started_at=at, updated_at=at, schema=schema,
                       boot=stamp)


@pytest.mark.parametrize("skew_h", [-24.0, -3.0, 3.0, 24.0 * 365 * 56])
def test_a_device_clock_hours_off_when_the_status_was_written_does_not_change_its_age(skew_h):
    age = status_age(_status(NOW + skew_h * 3600, mono=5000.0), DeviceClock(NOW, uptime_s=5002.5, boot_id=BOOT))
    assert (age.clock, age.seconds, age.note) == ("boot", 2.5, "")
    assert not age.stale(MAX_AGE_S)


def test_a_clock_jump_mid_rollout_neither_kills_an_alive_agent_nor_revives_a_dead_one():
    # the device's wall clock jumps between looks: +3 h (NTP after a boot without RTC), then -5 h (a bad server)
    walls = [NOW, NOW + 3 * 3600, NOW - 2 * 3600, NOW - 2 * 3600 + 40]
    uptimes = [5000.0, 5010.0, 5020.0, 5060.0]
    looks = list(zip(walls, uptimes, strict=True))
    alive = [status_age(_status(wall - 1, mono=up - 1), DeviceClock(wall, up, BOOT)) for wall, up in looks]
    assert [age.seconds for age in alive] == [1.0, 1.0, 1.0, 1.0]
    dead = _status(NOW + 3 * 3600, mono=5010.0)  # its last status, written after the jump ahead
    ages = [status_age(dead, DeviceClock(wall, up, BOOT)) for wall, up in looks[1:]]
    assert [age.seconds for age in ages] == [0.0, 10.0, 50.0]
    assert [age.stale(MAX_AGE_S) for age in ages] == [False, False, True]


def test_a_status_from_an_earlier_boot_is_stale_however_recent_its_stamps_look():
    age = status_age(_status(NOW - 1, mono=9000.0, boot=EARLIER_BOOT), DeviceClock(NOW, 30.0, BOOT))
    assert math.isinf(age.seconds) and age.clock == "boot" and age.stale(MAX_AGE_S)
    assert "earlier boot" in age.describe()


def test_a_status_of_the_previous_revision_falls_back_to_the_wall_rule_and_says_so():
    age = status_age(_status(NOW - 4, mono=None, schema=2), DeviceClock(NOW, 5000.0, BOOT))
    assert (age.clock, age.seconds) == ("wall", 4.0)
    assert "schema 2" in age.note and "no boot clock" in age.note and "wall clock" in age.describe()
    # the old rule, its weakness included: a status written before a 3 h step reads 3 h old
    assert status_age(_status(NOW - 3 * 3600, mono=None, schema=2), DeviceClock(NOW, 5000.0, BOOT)).stale(MAX_AGE_S)


def test_a_device_whose_boot_clock_cannot_be_read_falls_back_to_the_wall_rule_and_says_so():
    age = status_age(_status(NOW - 4, mono=5000.0), DeviceClock(NOW))
    assert (age.clock, age.seconds) == ("wall", 4.0) and "boot clock could not be read" in age.note


def test_the_probe_output_of_a_device_without_proc_uptime_or_an_older_probe_reads_no_boot_clock():
    seen = parse_probe(f"{PROBE_MARK}\n/root\n1700000000.5\n1.0.0\n\n4096\n-\n\n\n\n\n")
    assert (seen.uptime_s, seen.boot_id) == (None, None)
    seen = parse_probe(f"{PROBE_MARK}\n/root\n1700000000.5\n1.0.0\n\n4096\n-\n\n\n")  # the lines before issue 24
    assert (seen.uptime_s, seen.boot_id) == (None, None) and DeviceClock.of(seen).wall_epoch == 1700000000.5
    seen = parse_probe(f"{PROBE_MARK}\n/root\n1700000000.5\n1.0.0\n\n4096\n-\n\n\n812.25\n{BOOT}\n")
    assert DeviceClock.of(seen) == DeviceClock(1700000000.5, 812.25, BOOT)


def test_a_shadow_report_counts_once_seen_rewritten_and_stops_counting_when_its_agent_stops():
    first = seen_again(None, '{"updated_at": "1970-01-01T00:05:00Z"}', 100.0)  # a Pi that booted in 1970
    assert not report_fresh(first, 100.0, 30.0)  # one look says nothing of its age
    same = seen_again(first, first.text, 102.0)
    assert same == first and not report_fresh(same, 102.0, 30.0)
    rewritten = seen_again(same, '{"updated_at": "2026-12-07T21:00:00Z"}', 104.0)  # NTP stepped it by 56 years
    assert report_fresh(rewritten, 104.0, 30.0) and report_fresh(rewritten, 134.0, 30.0)
    assert not report_fresh(seen_again(rewritten, rewritten.text, 134.5), 134.5, 30.0)  # the agent stopped


def test_a_dead_agents_report_from_the_future_is_never_judged():
    # written while the device's clock was hours ahead; its agent died: the text never changes again
    seen = seen_again(None, '{"updated_at": "2027-01-01T00:00:00Z"}', 0.0)
    for now_s in (2.0, 4.0, 60.0, 3600.0):
        seen = seen_again(seen, seen.text, now_s)
        assert not report_fresh(seen, now_s, 30.0)
