"""Issue 22, item 3: deploy-agent gives each device its Google credentials (one path: `credentials_file`), and a
re-run rotates them atomically.

Through real sshd onto a simulated device, the agent as its own system user: the file is root's, readable by the
agent's group only (0640), named in agent.yaml; the agent's user reads it and cannot change it; `doctor` run as
the agent's user with that agent.yaml (what the rollout's preflight runs) acts as the same service account.
"""

from __future__ import annotations

import json
import stat
import subprocess

import pytest
import yaml
from google_credentials import service_account_file
from pydantic import ValidationError

from edgefleet.flows.deploy_agent.credentials import credentials_text
from edgefleet.flows.deploy_agent.params import CREDENTIALS_FILE, DeployAgentParams
from edgefleet.kernel.errors import ConfigError
from tests.flows.rollout.conftest import as_uid, deploy_inputs, deploy_params_as_agent_user, running_agent_config


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_deploy_agent_installs_the_credentials_0640_for_the_agents_group_and_rotates_them(
        tmp_path, readable_dir, agent_user, coral_data):
    from edgefleet.flows.deploy_agent.flow import deploy_agent
    from edgefleet.local.fleet import SimulatedFleet

    inputs = deploy_inputs(tmp_path, readable_dir, coral_data)
    first = service_account_file(tmp_path / "sim-1-first.json", email="first@edgefleet-test.iam.gserviceaccount.com")
    pids: list[int] = []
    with SimulatedFleet(readable_dir / "fleet", 1) as fleet:
        params = deploy_params_as_agent_user(fleet, inputs, readable_dir, agent_user)
        source = tmp_path / "{device_id}.json"
        first.rename(tmp_path / "sim-1.json")
        try:
            result = deploy_agent(DeployAgentParams(**params, credentials_file=str(source)))[0]
            assert result.ok, result.detail
            pids.append(result.pid)
            config_path = running_agent_config(result.pid)
            installed = config_path.parent / CREDENTIALS_FILE
            assert yaml.safe_load(config_path.read_text())["credentials_file"] == str(installed)
            mode = installed.stat()
            assert stat.S_IMODE(mode.st_mode) == 0o640 and mode.st_uid == 0
            assert mode.st_gid == int(subprocess.run(["id", "-g", agent_user], capture_output=True, text=True,
                                                     check=True).stdout)
            assert json.loads(as_uid(agent_user, f"cat {installed}").stdout)["client_email"].startswith("first@")
            assert as_uid(agent_user, f"echo x >> {installed}").returncode != 0  # readable, never writable
            # the deployed venv's agent (as the preflight runs it): the project's own Python may be in root's home
            deployed = readable_dir / "opt" / "venv" / "bin" / "edgefleet-agent"
            doctor = as_uid(agent_user, f"{deployed} doctor --json "
                                        f"--config {config_path}")
            checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
            assert checks["credentials"]["status"] == "ok", checks["credentials"]
            assert "first@edgefleet-test" in checks["credentials"]["detail"]

            # Rotation: a re-run installs the new file by renaming it over the old one (a new inode, whole).
            service_account_file(tmp_path / "sim-1.json", email="second@edgefleet-test.iam.gserviceaccount.com")
            again = deploy_agent(DeployAgentParams(**params, credentials_file=str(source)))[0]
            assert again.ok, again.detail
            pids.append(again.pid)
            rotated = installed.stat()
            assert rotated.st_ino != mode.st_ino and stat.S_IMODE(rotated.st_mode) == 0o640
            assert json.loads(installed.read_text())["client_email"].startswith("second@")
            assert not installed.with_name(CREDENTIALS_FILE + ".new").exists()
        finally:
            for pid in pids:
                subprocess.run(["kill", str(pid)], capture_output=True)


def test_credentials_in_the_service_environment_only_are_refused():
    with pytest.raises(ValidationError, match="credentials_file"):
        DeployAgentParams(inventory="fleet.yaml", public_key="release.pub", agent={"model": "m"},
                          environment={"GOOGLE_APPLICATION_CREDENTIALS": "/etc/key.json"})


def test_a_persons_login_or_a_non_credentials_file_is_refused_before_any_device(tmp_path):
    person = tmp_path / "cam-1.json"
    person.write_text(json.dumps({"type": "authorized_user", "refresh_token": "x"}))
    with pytest.raises(ConfigError, match="never goes to devices"):
        credentials_text(str(tmp_path / "{device_id}.json"), "cam-1")
    person.write_text("not json")
    with pytest.raises(ConfigError, match="not a Google credentials file"):
        credentials_text(str(person), "cam-1")
    with pytest.raises(ConfigError, match="cannot be read"):
        credentials_text(str(tmp_path / "missing.json"), "cam-1")
    key = service_account_file(tmp_path / "key.json")
    assert json.loads(credentials_text(str(key), "cam-1"))["type"] == "service_account"
