"""The agent updater on a real filesystem (issue 23, item 4): a signed agent release published and promoted in
a registry directory, installed by the real pip into `versions/<v>/venv` beside the running agent, `current`
switched, the agent restarted (its console script writes status.json), kept when it comes up `running` and
rolled back (link back, restart) when it does not."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edgefleet.device.selfupdate import load_state, run_once, subprocess_runner
from tests.device.agent_release import AgentReleases, build_wheel


@pytest.fixture
def releases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AgentReleases:
    made = AgentReleases(tmp_path)
    monkeypatch.setenv("FAKE_AGENT_STATUS", str(made.status_file))  # read by the test wheel's agent
    return made


def _no_sleep(_: float) -> None:
    raise AssertionError("the test agents report at once: nothing should wait")


def test_a_promoted_agent_is_installed_beside_and_kept_when_healthy(releases: AgentReleases) -> None:
    legacy = releases.install_dir / "venv"  # what deploy-agent installed
    legacy.mkdir()
    releases.release("1.1.0")
    result = run_once(releases.config(), releases.device_view, sleep=_no_sleep)
    assert result.outcome == "updated", result.detail
    assert os.readlink(releases.install_dir / "current") == "versions/1.1.0/venv"
    assert legacy.is_dir()  # beside, never over, the running one
    state = load_state(releases.install_dir)
    assert state.running is not None and state.running.startswith("1.1.0 ") and state.pending is None
    again = run_once(releases.config(), releases.device_view, sleep=_no_sleep)
    assert again.outcome == "none" and "running agent" in again.detail


def test_an_agent_that_does_not_come_up_is_rolled_back_and_not_retried(releases: AgentReleases) -> None:
    (releases.install_dir / "venv").mkdir()
    releases.release("1.1.0")
    assert run_once(releases.config(), releases.device_view, sleep=_no_sleep).outcome == "updated"
    restarts: list[list[str]] = []

    def runner(command, timeout_s):
        restarts.append(list(command))
        subprocess_runner(command, timeout_s)

    releases.release("1.2.0", state="failed")
    result = run_once(releases.config(), releases.device_view, runner=runner, sleep=_no_sleep)
    assert result.outcome == "rolled-back", result.detail
    assert os.readlink(releases.install_dir / "current") == "versions/1.1.0/venv"
    assert restarts[-1] == list(releases.config().restart_command)  # restarted on the old agent
    assert '"version": "1.1.0"' in releases.status_file.read_text()  # and the old agent runs again
    state = load_state(releases.install_dir)
    assert state.running is not None and state.running.startswith("1.1.0 ") and len(state.refused) == 1
    again = run_once(releases.config(), releases.device_view, sleep=_no_sleep)
    assert again.outcome == "none" and "not retried" in again.detail


def test_a_clock_stepped_back_right_after_the_switch_keeps_the_healthy_agent(releases: AgentReleases) -> None:
    """A Pi boots at its last saved time, 2 min ahead; NTP steps the clock back right after the switch (the
    reviewer's case). The new agent comes up running: it is kept, and nothing is refused."""
    (releases.install_dir / "venv").mkdir()
    releases.release("1.1.0")
    current = releases.install_dir / "current"

    def wall() -> datetime:  # ahead until `current` moves, then stepped back by NTP
        switched = current.is_symlink() and os.readlink(current) == "versions/1.1.0/venv"
        return datetime.now(timezone.utc) + (timedelta(0) if switched else timedelta(minutes=2))

    def sleep(_: float) -> None:
        raise AssertionError(f"still waiting for an agent that reports running: {releases.status_file.read_text()}")

    result = run_once(releases.config(), releases.device_view, clock=wall, sleep=sleep)
    assert result.outcome == "updated", result.detail
    state = load_state(releases.install_dir)
    assert state.running is not None and state.running.startswith("1.1.0 ") and state.refused == ()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="`edgefleet registry agent publish|promote` is the operator "
                    "CLI (edgefleet.cli), which runs on the pipeline side and needs Python 3.11; the device's "
                    "`self-update` command is tested below on every Python")
def test_the_operator_and_device_commands_publish_promote_and_update(releases: AgentReleases) -> None:
    import yaml
    from typer.testing import CliRunner

    from edgefleet.cli import app
    from edgefleet.device.cli import app as agent
    from edgefleet.kernel.trust.signatures import save_private_key

    (releases.install_dir / "venv").mkdir()
    key = save_private_key(releases.release_key, releases.root / "release.key")
    wheel = build_wheel(releases.root / "built", "2.0.0", "running")
    common = ["--registry", str(releases.registry.root), "--signing-key", str(key)]
    published = CliRunner().invoke(app, ["registry", "agent", "publish", str(wheel), "--version", "2.0.0",
                                         "--lock", str(releases.locks[0]), *common])
    assert published.exit_code == 0 and "published agent 2.0.0" in published.output, published.output
    promoted = CliRunner().invoke(app, ["registry", "agent", "promote", "2.0.0", "--channel", "stable", *common])
    assert promoted.exit_code == 0 and "agent channel stable -> 2.0.0" in promoted.output, promoted.output
    config = releases.root / "updater.yaml"
    config.write_text(yaml.safe_dump(releases.config().model_dump(mode="json")))
    updated = CliRunner().invoke(agent, ["self-update", "--config", str(config)])
    assert updated.exit_code == 0 and updated.output.startswith("updated: agent 2.0.0"), updated.output
    assert os.readlink(releases.install_dir / "current") == "versions/2.0.0/venv"
    lower = CliRunner().invoke(app, ["registry", "agent", "promote", "1.0.0", "--channel", "stable", *common])
    assert lower.exit_code != 0 and "not published" in lower.output


def test_the_device_self_update_command_installs_the_promoted_agent(releases: AgentReleases) -> None:
    """`edgefleet-agent self-update` on the device floor (Python 3.9): the release published and promoted with the
    library (the operator CLI above needs 3.11)."""
    import yaml
    from typer.testing import CliRunner

    from edgefleet.device.cli import app as agent

    (releases.install_dir / "venv").mkdir()
    releases.release("2.0.0")
    config = releases.root / "updater.yaml"
    config.write_text(yaml.safe_dump(releases.config().model_dump(mode="json")))
    updated = CliRunner().invoke(agent, ["self-update", "--config", str(config)])
    assert updated.exit_code == 0 and updated.output.startswith("updated: agent 2.0.0"), updated.output
    assert os.readlink(releases.install_dir / "current") == "versions/2.0.0/venv"
