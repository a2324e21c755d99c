"""Issue 23, item 4: the updater runs as root and reads the agent's status.json, in the agent root the agent's
user owns. That user replaces status.json with a FIFO (root's read blocks for ever: no verdict, no rollback) or
a symlink to an endless file (root reads without bound). The updater must read it only as a bounded regular
file: a trap is no status, so the new agent is judged not healthy and rolled back at the deadline."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgefleet.device.selfupdate import DeviceClocks, await_health, load_state, save_state
from edgefleet.device.selfupdate_plan import Pending, UpdaterState, version_target
from edgefleet.device.trust.pointers import ChannelRecord
from tests.device.agent_release import AgentReleases

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
BOOT, SWITCH_S = "b" * 32, 100.0


def _pending_switch(releases: AgentReleases) -> UpdaterState:
    for target in ("venv", version_target("1.2.0")):
        (releases.install_dir / target).mkdir(parents=True)
    os.symlink(version_target("1.2.0"), releases.install_dir / "current")
    pending = Pending(version="1.2.0", manifest_sha256="a" * 64, target=version_target("1.2.0"),
                      previous_target="venv", switched_at=NOW, boot_id=BOOT, switched_s=SWITCH_S,
                      deadline_s=SWITCH_S + timedelta(minutes=5).total_seconds(), channel_after=ChannelRecord())
    state = UpdaterState(pending=pending)
    save_state(releases.install_dir, state)
    return state


@pytest.mark.parametrize("trap", ["fifo", "endless"])
def test_a_trapped_status_file_is_no_status_and_the_switch_rolls_back(tmp_path: Path, trap: str) -> None:
    releases = AgentReleases(tmp_path)
    state = _pending_switch(releases)
    if trap == "fifo":
        os.mkfifo(releases.status_file)
    else:
        os.symlink("/dev/zero", releases.status_file)
    ticks = iter([SWITCH_S + 10, SWITCH_S + 10, SWITCH_S + timedelta(minutes=6).total_seconds()])
    clocks = DeviceClocks(wall=lambda: NOW, monotonic=lambda: next(ticks), boot_id=BOOT)
    restarts: list[tuple[str, ...]] = []
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(await_health(
        releases.config(), state, lambda command, _timeout: restarts.append(tuple(command)),
        clocks, lambda _s: None)), daemon=True)
    worker.start()
    worker.join(timeout=60)  # generous; a blocked read never returns at all
    assert not worker.is_alive(), "the updater hangs on the agent's status file"
    [result] = outcome
    assert result.outcome == "rolled-back"  # type: ignore[attr-defined]
    assert os.readlink(releases.install_dir / "current") == "venv" and restarts
    assert load_state(releases.install_dir).pending is None
