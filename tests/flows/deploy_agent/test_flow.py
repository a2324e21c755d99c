"""The deploy-agent flow on a real sshd device: wheel built and installed in a new venv, agent run as a
service under the `process` manager; the systemd unit rendered from the template passes systemd-analyze.

Offline install: the venv gets `--no-deps` and sees this checkout's dependencies through
`extra_site_dirs` (a .pth file), because there is no network here; the edgefleet code itself comes from
the freshly built wheel, not from the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from edgefleet.flows.deploy_agent.service import ServiceSpec, render_unit
from edgefleet.local.fleet import SimulatedFleet
from tests.flows.rollout.conftest import deploy_inputs

SYSTEM_PYTHON = "/usr/bin/python3"  # the agent's own user runs the venv: the project's Python may be in root's home


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_rendered_unit_passes_systemd_analyze_and_a_broken_one_does_not(tmp_path):
    spec = ServiceSpec(command=("/bin/sleep", "60"), state_dir=str(tmp_path), environment={"A": "b"})
    unit = tmp_path / "edgefleet-agent.service"
    unit.write_text(render_unit(spec))
    assert "ExecStart=/bin/sleep 60" in unit.read_text() and f"EnvironmentFile=-{tmp_path}" in unit.read_text()
    checked = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert checked.returncode == 0 and str(unit) not in checked.stdout + checked.stderr
    unit.write_text(render_unit(spec).replace("Restart=on-failure", "Restart=sometimes"))
    broken = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert str(unit) in broken.stdout + broken.stderr  # what check_unit() treats as a failure


@pytest.mark.slow
@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason=f"needs {SYSTEM_PYTHON}")
@pytest.mark.usefixtures("prefect_api")
def test_deploy_agent_installs_a_venv_and_runs_the_agent_under_the_process_manager(tmp_path, coral_data,
                                                                                  agent_user, readable_dir):
    from edgefleet.flows.deploy_agent.flow import DeployAgentParams, deploy_agent

    key_path, frames, wheel = deploy_inputs(tmp_path, readable_dir, coral_data)
    (tmp_path / "registry").mkdir()
    opt = readable_dir / "opt"  # the agent's own user (the default) runs the venv: not under pytest's 0700 dirs
    with SimulatedFleet(readable_dir / "fleet", 1) as fleet:
        device = fleet.devices["sim-1"]
        fleet.adopt_deployed(opt / "etc")
        params = DeployAgentParams(
            inventory=str(fleet.inventory_path), public_key=str(key_path), install_dir=str(opt), agent_user=agent_user,
            python=SYSTEM_PYTHON, no_deps=True, wheel=str(wheel),
            extra_site_dirs=(sysconfig.get_path("purelib"),), service_manager="process",
            registry=str(tmp_path / "registry"), enrolment={"dev_key_file": str(tmp_path / "enrolment.key")},
            agent={"model": "imagenet", "source": {"kind": "images", "path": str(frames), "max_fps": 2},
                   "status": {"interval_s": 0.5}})
        first = deploy_agent(params)
        assert first[0].ok and first[0].wheel_uploaded
        # every step on the device recorded, in order, and shown as one table under a stable key
        assert [step.name for step in first[0].steps if step.ok] == [
            "connect", "agent root", "config dir", "install", "keyring and config", "agent user", "device key",
            "service", "running", "updater"]
        from prefect.artifacts import Artifact

        table = Artifact.get("deploy-agent-steps")
        assert table is not None and "sim-1" in str(table.data) and "keyring and config" in str(table.data)
        pid = first[0].pid
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert command[0].decode() == str(opt / "venv" / "bin" / "edgefleet-agent") or \
            str(opt / "venv") in b" ".join(command).decode()
        config_dir = opt / "etc" / "sim-1"  # root's: the agent's user cannot rewrite or rename it
        from edgefleet.kernel.trust.release_keyring import key_file_name
        from edgefleet.kernel.trust.signatures import load_public_key as load_release_key

        ring = config_dir / "keys" / "release.d"  # the keyring: exactly the key given, named by its key id
        assert [p.name for p in ring.iterdir()] == [key_file_name(load_release_key(key_path))]
        assert (ring / key_file_name(load_release_key(key_path))).read_text() == key_path.read_text()
        assert not (config_dir / "keys" / "release.pub").exists()
        assert "device_id: sim-1" in (config_dir / "agent.yaml").read_text()
        assert f"public_key: {ring}" in (config_dir / "agent.yaml").read_text()
        # the device made its own key; only its public key was published with the fleet
        from edgefleet.device.registry import open_registry_reader
        from edgefleet.kernel.trust.signatures import key_id, load_public_key
        from edgefleet.monitor.device_key_reader import KeyRecordPolicy, load_fleet_keys

        enrolment = load_public_key(tmp_path / "enrolment.key.pub")  # signed by the enrolment key
        published = load_fleet_keys(open_registry_reader(tmp_path / "registry"),
                                    KeyRecordPolicy({key_id(enrolment): enrolment}))
        assert key_id(published.keys["sim-1"]) == first[0].device_key_id and not published.refused
        assert (device.root / "keys" / "device.key").stat().st_mode & 0o077 == 0

        again = deploy_agent(params)  # idempotent: same wheel not sent again, agent restarted
        assert again[0].ok and not again[0].wheel_uploaded and again[0].pid != pid
        assert device.agent_pid() == again[0].pid
        fleet.stop_agent("sim-1")
