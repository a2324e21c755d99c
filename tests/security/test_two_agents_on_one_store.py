"""Finding 9: two agents could run on one store at once (no lock), corrupting the spool's seq and racing on
`current`. The agent now holds an exclusive lock on its root while it runs; a second one is refused."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from edgefleet.device.agent.loop import AGENT_LOCK_FILE
from edgefleet.device.cli import app
from edgefleet.kernel.fsutil import file_lock


def test_a_second_agent_on_the_same_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "agent"
    frames = tmp_path / "frames"
    frames.mkdir()
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "device_id": "cam-1", "model": "birds", "root": str(root), "drain_timeout_s": 0.2,
        "source": {"kind": "images", "path": str(frames)},
    }))
    with file_lock(root / AGENT_LOCK_FILE, timeout_s=1, what="the first agent"):  # the first agent runs
        result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "another edgefleet-agent runs on it" in result.output
    assert not (root / "spool.sqlite").exists()  # it touched nothing
