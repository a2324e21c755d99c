"""`make demo` end to end: the main job runs on embedded defaults and stops everything it started."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgefleet.device.contracts.layout import channel_key


def _processes_mentioning(text: str) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if text in line and "pytest" not in line]


@pytest.mark.slow
def test_the_demo_releases_rolls_out_twice_and_leaves_nothing_running(tmp_path):
    workdir = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "edgefleet.demo", "--workdir", str(workdir)],
                            capture_output=True, text=True, timeout=900, env=None)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "edgefleet demo: done" in result.stdout
    registry = workdir / "registry"
    assert sorted(p.name for p in (registry / "models" / "shapes").iterdir() if p.name[0].isdigit()) == [
        "1.0.0", "1.1.0"]
    records = {p.stem: json.loads(p.read_text()) for p in (registry / "rollouts").glob("*.json")}
    assert {name: record["state"] for name, record in records.items()} == {
        "shapes-1.0.0": "completed", "shapes-1.1.0": "completed"}
    assert json.loads((registry / channel_key("shapes", "canary")).read_text())["version"] == "1.1.0"
    statuses = [json.loads(p.read_text()) for p in (workdir / "fleet").glob("sim-*/agent-root/status.json")]
    assert [(s["version"], s["state"]) for s in statuses] == [("1.1.0", "stopped")] * 3  # all ran 1.1.0
    assert _processes_mentioning(str(workdir)) == []  # sshd, agents, emulator, Prefect server: all stopped
