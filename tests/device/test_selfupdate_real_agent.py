"""The updater with the real agent (issue 23, item 4): `edgefleet-agent run` started by deploy-agent's
`process` service manager from `<install_dir>/current`, upgraded by `self-update` to the project's own wheel
(built here, published and promoted with a real release key) in `versions/<v>/venv`, then a release whose agent
never comes up is rolled back and the real agent runs again from the kept version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from edgefleet.device.agent.runtime_files import RUNTIME_DIRECTORY_ENV
from edgefleet.device.selfupdate import run_once
from edgefleet.flows.deploy_agent.service import ServiceSpec, env_file_text, process_commands
from edgefleet.flows.release.agent import promote_agent, publish_agent
from edgefleet.kernel.contracts.status import parse_status
from tests.device.agent.conftest import MODEL, Releases
from tests.device.agent_release import AgentReleases

REPO = Path(__file__).resolve().parents[2]
START_WAIT_S = 120.0  # generous: a loaded CI machine


def _build_project_wheel(out: Path) -> Path:
    """The device wheel, built on this (device) Python from a copy of the tree: setuptools builds in the tree's
    `build/`, and CI builds it on three Pythons at once (`edgefleet.flows.deploy_agent.flow.build_wheel` does the
    same on the pipeline side; it cannot be imported on a device Python)."""
    source = out.parent / "device-source"
    leftovers = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__")
    shutil.copytree(REPO / "device", source, ignore=leftovers)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True)
    [wheel] = out.glob("edgefleet-*.whl")
    return wheel


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_running(status_file: Path, after: float) -> int:
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        status = parse_status(status_file.read_bytes()) if status_file.exists() else None
        if status is not None and status.state == "running" and status.started_at.timestamp() >= after:
            return status.pid
        time.sleep(0.2)
    raise AssertionError(f"the agent did not report running: {status_file.read_text() if status_file.exists() else ''}")


@pytest.mark.slow
def test_the_real_agent_is_upgraded_beside_itself_and_a_bad_release_rolled_back(
        coral_data: Path, tmp_path: Path) -> None:
    models = Releases(coral_data, tmp_path / "models")
    models.install("1.0.0")
    agents = AgentReleases(tmp_path / "agents")
    agents.release_key = models.private_key  # one release key signs models and the agent
    agents.public_key = models.public_key_path
    agent_root = models.root
    config = tmp_path / "agent.yaml"
    config.write_text(f"device_id: cam-1\nmodel: {MODEL}\nroot: {agent_root}\n"
                      f"source: {{kind: images, path: {models.images()}}}\n")
    install = agents.install_dir
    (install / "venv").symlink_to(Path(sys.executable).parent.parent)  # the agent deploy-agent installed
    runtime = tmp_path / "run"  # systemd's RuntimeDirectory= (issue 24): the status is read through the root's link
    spec = ServiceSpec(command=(str(install / "current" / "bin" / "edgefleet-agent"), "run", "--config", str(config)),
                       user="root" if os.geteuid() == 0 else os.environ.get("USER", "root"),
                       state_dir=str(agent_root), service_dir=str(tmp_path / "service"),
                       environment={RUNTIME_DIRECTORY_ENV: str(runtime)})
    Path(spec.service_dir).mkdir()
    Path(spec.env_file).write_text(env_file_text(spec.environment))
    commands = process_commands(spec)
    restart = ("sh", "-c", commands.restart)
    os.symlink("venv", install / "current")
    started = time.time()
    subprocess.run(restart, check=True)
    try:
        first = _wait_running(agent_root / "status.json", started - 1)
        wheel = _build_project_wheel(tmp_path / "wheel")
        publish_agent(agents.registry, wheel, "9.0.0", signing_key=agents.release_key, locks=agents.locks)
        promote_agent(agents.registry, "9.0.0", "stable", signing_key=agents.release_key)
        updater = agents.config(status_file=agent_root / "status.json", restart_command=restart, poll_s=0.5,
                                extra_site_dirs=(Path(sysconfig.get_path("purelib")),))
        result = run_once(updater, agents.device_view)
        assert result.outcome == "updated", result.detail
        upgraded = parse_status((agent_root / "status.json").read_bytes())
        assert upgraded is not None and upgraded.pid != first and upgraded.state == "running"
        assert "versions/9.0.0/venv/bin/python" in _cmdline(upgraded.pid)  # the new venv's interpreter
        site = install / "versions" / "9.0.0" / "venv" / "lib"
        assert list(site.glob("python*/site-packages/edgefleet/device/selfupdate.py"))
        assert upgraded.model == MODEL and upgraded.version == "1.0.0"  # the same model runs on

        os.environ["FAKE_AGENT_STATUS"] = str(agent_root / "status.json")
        agents.release("9.1.0", state="failed")  # an agent that never comes up
        result = run_once(updater, agents.device_view)
        assert result.outcome == "rolled-back", result.detail
        assert os.readlink(install / "current") == "versions/9.0.0/venv"
        back = _wait_running(agent_root / "status.json", upgraded.started_at.timestamp())
        assert back != upgraded.pid and "versions/9.0.0/venv/bin/python" in _cmdline(back)
        assert (agent_root / "status.json").resolve() == (runtime / "status.json").resolve()  # the verdicts read it
    finally:
        os.environ.pop("FAKE_AGENT_STATUS", None)
        subprocess.run(["sh", "-c", commands.stop], check=False)
