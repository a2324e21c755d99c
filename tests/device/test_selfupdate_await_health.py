"""The updater's wait on a pending switch, with its files (no release installed: the switch is already made):
a reboot during the wait restarts it on the new boot's clock, and a wait that only ran out rolls back without
refusing the release. The clocks are given; the status is written with the contract's own writer."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edgefleet.device.selfupdate import DeviceClocks, await_health, load_state, save_state
from edgefleet.device.selfupdate_plan import Pending, UpdaterState, version_target
from edgefleet.device.trust.pointers import ChannelRecord, version_identity
from edgefleet.kernel.contracts.status import AgentStatus, BootClock, write_status
from tests.device.agent_release import AgentReleases

WALL = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
SWITCH_BOOT, LATER_BOOT = "b" * 32, "c" * 32
SWITCH_S = 4000.0
SHA = "a" * 64


def _switched(releases: AgentReleases) -> UpdaterState:
    for target in ("venv", version_target("1.2.0")):
        (releases.install_dir / target).mkdir(parents=True)
    os.symlink(version_target("1.2.0"), releases.install_dir / "current")
    config = releases.config()
    pending = Pending(version="1.2.0", manifest_sha256=SHA, target=version_target("1.2.0"), previous_target="venv",
                      switched_at=WALL, boot_id=SWITCH_BOOT, switched_s=SWITCH_S,
                      deadline_s=SWITCH_S + config.health_timeout_s, channel_after=ChannelRecord())
    state = UpdaterState(pending=pending)
    save_state(releases.install_dir, state)
    return state


def _never(command, timeout_s):  # noqa: ANN001, ANN202 - the runner's shape
    raise AssertionError(f"nothing is restarted here: {command}")


def test_after_a_reboot_the_agent_the_service_started_at_boot_is_the_new_one(tmp_path: Path) -> None:
    releases = AgentReleases(tmp_path)
    state = _switched(releases)
    now_s = 600.0  # the updater's first run after the reboot (the timer's OnBootSec); the clock far behind
    write_status(releases.status_file, AgentStatus(
        device_id="cam-1", pid=7, state="running", started_at=WALL - timedelta(days=2),
        updated_at=WALL - timedelta(days=2), boot=BootClock(boot_id=LATER_BOOT, started_s=15.0, updated_s=now_s - 2)))
    clocks = DeviceClocks(wall=lambda: WALL - timedelta(days=2), monotonic=lambda: now_s, boot_id=LATER_BOOT)

    result = await_health(releases.config(), state, _never, clocks, lambda _s: None)

    assert result.outcome == "updated", result.detail
    assert load_state(releases.install_dir).running == version_identity("1.2.0", SHA)


def test_a_wait_that_ran_out_rolls_back_and_the_release_is_tried_again(tmp_path: Path) -> None:
    releases = AgentReleases(tmp_path)
    state = _switched(releases)
    restarts: list[tuple[str, ...]] = []
    ticks = iter([SWITCH_S + 10, SWITCH_S + 10, SWITCH_S + releases.config().health_timeout_s])
    clocks = DeviceClocks(wall=lambda: WALL, monotonic=lambda: next(ticks), boot_id=SWITCH_BOOT)

    result = await_health(releases.config(), state, lambda command, _t: restarts.append(tuple(command)), clocks,
                          lambda _s: None)

    assert result.outcome == "rolled-back" and "attempt 1 of 3" in result.detail, result.detail
    assert os.readlink(releases.install_dir / "current") == "venv" and restarts
    after = load_state(releases.install_dir)
    assert after.pending is None and after.refused == ()
    assert after.timed_out == (version_identity("1.2.0", SHA),)
