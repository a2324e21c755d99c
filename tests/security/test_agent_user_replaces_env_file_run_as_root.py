"""Issue 20 item 5: under the `process` manager, deploy-agent's restart (root, through sudo) sourced
`<agent root>/edgefleet-agent.env` with `. file`: the agent's user owns that directory, so it replaced the file
and its next restart ran the user's shell code as root (the pid and log files there were root's to kill and
append to, as well). The env, pid and log files now live in the root-owned config directory; the restart
never reads a file in the agent's root.

The restart commands run for real (`sh`, as root: CI runs as root) on a layout where a stand-in agent uid owns
the agent root and has planted an env file there."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from edgefleet.flows.deploy_agent.device_steps import agent_service_spec
from edgefleet.flows.deploy_agent.params import DeployAgentParams
from edgefleet.flows.deploy_agent.service import ServiceSpec, process_commands
from edgefleet.flows.fleet.inventory import DeviceSpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plays root's restart: needs root (CI runs as root)")

AGENT_UID = 64124


def _agent_root(tmp_path: Path, marker: Path) -> Path:
    """The agent's root, owned by its uid, with the env file it planted (a shell line that runs as root)."""
    root = tmp_path / "agent-root"
    root.mkdir()
    (root / "edgefleet-agent.env").write_text(f"touch {marker}\n")
    os.chown(root, AGENT_UID, AGENT_UID)
    os.chown(root / "edgefleet-agent.env", AGENT_UID, AGENT_UID)
    return root


def _restart_as_root(spec: ServiceSpec) -> None:
    subprocess.run(["sh", "-c", process_commands(spec).restart], check=True, capture_output=True, timeout=60)
    subprocess.run(["sh", "-c", process_commands(spec).stop], check=False, capture_output=True, timeout=60)


def test_the_old_layout_runs_the_planted_env_file_as_root(tmp_path):
    """The attack's mechanism: a spec whose files live in the agent root (what deploy-agent used to build)."""
    marker = tmp_path / "pwned"
    root = _agent_root(tmp_path, marker)
    _restart_as_root(ServiceSpec(command=("/bin/sleep", "30"), user="root", state_dir=str(root)))
    assert marker.exists()


def test_deploy_agents_service_reads_nothing_from_the_agent_root(tmp_path):
    marker = tmp_path / "pwned"
    root = _agent_root(tmp_path, marker)
    params = DeployAgentParams(inventory="fleet.yaml", public_key="release.pub", agent={"model": "m"},
                               install_dir=str(tmp_path / "opt"), service={"manager": "process"})
    device = DeviceSpec(id="cam-1", host="127.0.0.1", key_file=tmp_path / "key")
    config_dir = params.device_config_dir(device.id)
    spec = agent_service_spec(params, device, str(root), config_dir)
    for path in (spec.env_file, spec.pid_file, spec.log_file):
        assert Path(path).parent == Path(config_dir) and not Path(path).is_relative_to(root)
    Path(config_dir).mkdir(parents=True)
    _restart_as_root(spec.model_copy(update={"command": ("/bin/sleep", "30"), "user": "root"}))
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_what_the_agents_user_plants_in_its_root_is_not_run_by_the_next_deploy(tmp_path, readable_dir, agent_user,
                                                                              coral_data):
    """End to end, through sshd: deploy; then, while deploy-agent runs again, the agent's user keeps replacing
    `<root>/edgefleet-agent.env` with shell code (a loop: it wins any race against root's own write) and points
    `<root>/edgefleet-agent.pid` at a root process. Neither is run or killed by root."""
    from edgefleet.flows.deploy_agent.flow import DeployAgentParams, deploy_agent
    from edgefleet.local.fleet import SimulatedFleet
    from tests.flows.rollout.conftest import deploy_inputs, deploy_params_as_agent_user

    inputs = deploy_inputs(tmp_path, readable_dir, coral_data)
    marker = readable_dir / "ran-as-root"
    victim = subprocess.Popen(["sleep", "600"])  # a root process
    pids: list[int] = []
    with SimulatedFleet(readable_dir / "fleet", 1) as fleet:
        params = DeployAgentParams(**deploy_params_as_agent_user(fleet, inputs, readable_dir, agent_user))
        pids.append(deploy_agent(params)[0].pid)
        root = fleet.devices["sim-1"].root
        env, pid_file = root / "edgefleet-agent.env", root / "edgefleet-agent.pid"
        loop = (f"while :; do echo 'touch {marker}' > {env}.new && mv -f {env}.new {env}; "
                f"echo {victim.pid} > {pid_file}.new && mv -f {pid_file}.new {pid_file}; done")
        attacker = subprocess.Popen(["setpriv", f"--reuid={agent_user}", f"--regid={agent_user}", "--init-groups",
                                     "sh", "-c", loop])
        try:
            again = deploy_agent(params)[0]
            pids.append(again.pid)
        finally:
            attacker.kill()
            attacker.wait()
            for pid in pids:
                subprocess.run(["kill", str(pid)], capture_output=True)
        assert env.exists()  # the attacker ran: its root is its own
        assert again.ok, again.detail
        assert not marker.exists()  # root's restart never sourced it
        assert victim.poll() is None  # nor killed the pid it named
    victim.kill()
