"""deploy-agent from a normal SSH login with sudo, the agent as its own system user (issue 12).

A real sshd device whose login is a new non-root user allowed sudo with a password (the password comes from a
Prefect Secret block); the flow creates the agent's system user, runs the agent as it under the `process`
manager (setpriv), and keeps the trust anchor root's. Creating users needs root (CI is root): skipped
otherwise, with the reason. Everything the agent's user must read lives under a world-readable directory
(pytest's own temp dirs are private to root), and the agent runs on Debian's /usr/bin/python3 (the
project's interpreter may live in root's home).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sysconfig
import uuid
from pathlib import Path

import pytest

from edgefleet.local.fleet import SimulatedFleet
from tests.flows.rollout.conftest import deploy_inputs

SYSTEM_PYTHON = "/usr/bin/python3"
NEEDS = ("sudo", "useradd", "userdel", "chpasswd", "setpriv", "visudo")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="creates users: needs root (CI runs as root)"),
    pytest.mark.skipif(any(shutil.which(tool) is None for tool in NEEDS) or not Path(SYSTEM_PYTHON).exists(),
                       reason=f"needs {', '.join(NEEDS)} and {SYSTEM_PYTHON} (.ci/run installs sudo)"),
]


@pytest.fixture
def users():
    """A login user with a password and password-protected sudo, and the name of the agent's user-to-be;
    both removed afterwards, with their sudoers files."""
    suffix = uuid.uuid4().hex[:6]
    login, agent, password = f"efl{suffix}", f"efa{suffix}", uuid.uuid4().hex
    sudoers = Path(f"/etc/sudoers.d/eftest-{login}")
    subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", login],
                   check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{login}:{password}\n", text=True, check=True)
        sudoers.write_text(f"{login} ALL=(ALL) ALL\n")
        sudoers.chmod(0o440)
        yield login, agent, password
    finally:
        sudoers.unlink(missing_ok=True)
        Path(f"/etc/sudoers.d/zz-edgefleet-agent-{login}").unlink(missing_ok=True)
        for user in (login, agent):
            subprocess.run(["userdel", user], capture_output=True)
        subprocess.run(["groupdel", agent], capture_output=True)


@pytest.mark.usefixtures("prefect_api")
def test_deploy_through_sudo_runs_the_agent_as_its_own_user_without_write_access_to_its_key(
        users, readable_dir, tmp_path, coral_data):
    from prefect.blocks.system import Secret

    from edgefleet.flows.deploy_agent.flow import DeployAgentParams, deploy_agent
    from edgefleet.flows.fleet.agent import probe
    from edgefleet.flows.fleet.connection import DeviceConnection
    from edgefleet.flows.fleet.inventory import load_inventory
    from edgefleet.flows.rollout.device import doctor_preflight

    login, agent_user, password = users
    secret = f"sudo-{login}"
    Secret(value=password).save(secret, overwrite=True)
    key_path, frames, wheel = deploy_inputs(tmp_path, readable_dir, coral_data)
    with SimulatedFleet(readable_dir / "fleet", 1) as fleet:
        fleet.write_inventory(user=login, agent_user=agent_user, config_dir=str(readable_dir / "opt" / "etc"),
                              agent_command=str(readable_dir / "opt" / "venv" / "bin" / "edgefleet-agent"))
        fleet.adopt_deployed(readable_dir / "opt" / "etc")
        root = fleet.devices["sim-1"].root
        params = DeployAgentParams(
            inventory=str(fleet.inventory_path), public_key=str(key_path), install_dir=str(readable_dir / "opt"),
            python=SYSTEM_PYTHON, no_deps=True, wheel=str(wheel), extra_site_dirs=(sysconfig.get_path("purelib"),),
            service_manager="process", agent_user=agent_user, sudo_password_secret=secret,
            agent={"model": "imagenet", "source": {"kind": "images", "path": str(frames), "max_fps": 2},
                   "status": {"interval_s": 0.5}})
        try:
            result = deploy_agent(params)[0]
            assert result.ok, result.detail

            agent = pwd.getpwnam(agent_user)
            process = Path(f"/proc/{result.pid}/status").read_text()
            assert f"Uid:\t{agent.pw_uid}\t" in process  # the agent runs as its own user, not root
            assert agent.pw_shell == "/usr/sbin/nologin"
            ring = Path(params.device_config_dir("sim-1")) / "keys" / "release.d"
            (anchor,) = ring.iterdir()  # the keyring, one key: root's directory and file
            key = anchor.stat()
            assert (key.st_uid, key.st_mode & 0o777) == (0, 0o644)
            assert (ring.stat().st_uid, ring.stat().st_mode & 0o777) == (0, 0o755)
            assert root.stat().st_uid == agent.pw_uid  # its root: models, status, spool
            assert not (root / "keys" / "release.pub").exists()  # the trust anchor is not under its root
            # The attack: the agent's user rewrites its own trust anchor. Refused by the file system.
            tamper = subprocess.run(["setpriv", f"--reuid={agent.pw_uid}", f"--regid={agent.pw_gid}", "--clear-groups",
                                     "sh", "-c", f"echo forged >> {anchor}"],
                                    capture_output=True, text=True)
            assert tamper.returncode != 0 and "Permission denied" in tamper.stderr
            assert anchor.read_text() == key_path.read_text()
            plant = subprocess.run(["setpriv", f"--reuid={agent.pw_uid}", f"--regid={agent.pw_gid}", "--clear-groups",
                                    "sh", "-c", f"cp {anchor} {ring}/0000000000000000.pub"],  # nor add a key to it
                                   capture_output=True, text=True)
            assert plant.returncode != 0 and "Permission denied" in plant.stderr
            assert [p.name for p in ring.iterdir()] == [anchor.name]
            # The rollout runs the device CLI as the agent's user with the rule deploy-agent installed.
            device = load_inventory(fleet.inventory_path).devices[0]
            with DeviceConnection(device, fleet.known_hosts) as connection:
                status = connection.agent("status", "--json").stdout
                seen = probe(connection, "imagenet", "1.0.0")  # the preflight's look, as the login user
                notes = doctor_preflight(connection, has_edgetpu_variant=False)  # doctor as the agent's user
            assert f'"pid": {result.pid}' in status
            assert seen.status is not None and seen.status.pid == result.pid
            assert not any(note.startswith(("store", "spool", "public_key")) for note in notes), notes
        finally:
            fleet.stop_agent("sim-1")
