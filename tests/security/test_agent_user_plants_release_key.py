"""Issue 20 item 5: the agent's user owned the directory holding its read-only trust anchor
(`<agent root>/keys/release.pub`, root's file in root's `keys/` under the agent's root): it could rename `keys/`
and plant its own `release.pub`, then sign models for itself. deploy-agent now keeps the key (and agent.yaml)
in a root-owned `<install_dir>/etc/<device id>/`, and doctor fails a trust anchor the agent's user can reach,
by the file or by any directory above it.

The layout is built on the real file system with a stand-in uid (chown works as root, CI runs as root); the
reach is judged for that uid (`writable_component`), as doctor does for its own user."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgefleet.device.trust.anchor import writable_component
from edgefleet.flows.deploy_agent.params import RELEASE_KEY_FILE, DeployAgentParams

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds files owned by another uid: needs root (CI)")

AGENT_UID, AGENT_GID = 64123, 64123


def _tree(base: Path) -> tuple[Path, Path]:
    """The old layout: agent root owned by the agent, keys/ and release.pub root's; returns (root, key)."""
    base.chmod(0o755)
    root = base / "agent-root"
    (root / "keys").mkdir(parents=True)
    key = root / "keys" / "release.pub"
    key.write_text("key")
    os.chown(root, AGENT_UID, AGENT_GID)
    return root, key


def test_the_old_layout_lets_the_agent_rename_keys_and_plant_its_own(tmp_path):
    root, key = _tree(tmp_path)
    assert writable_component(key, AGENT_UID, {AGENT_GID}) == root  # it owns the directory above keys/


def test_the_deployed_layout_is_out_of_the_agents_reach(tmp_path):
    root, _ = _tree(tmp_path)
    params = DeployAgentParams(inventory="fleet.yaml", public_key="release.pub", agent={"model": "m"},
                               install_dir=str(tmp_path / "opt"))
    anchor = Path(params.device_config_dir("cam-1")) / RELEASE_KEY_FILE
    anchor.parent.mkdir(parents=True)
    anchor.write_text("key")
    (tmp_path / "opt").chmod(0o755)
    assert not anchor.is_relative_to(root)
    assert writable_component(anchor, AGENT_UID, {AGENT_GID}) is None  # tmp_path's sticky /tmp is above root's


@pytest.mark.parametrize("how", ["group-writable parent", "other-writable file", "agent-owned config dir",
                                 "symlink to an agent-owned file"])
def test_every_way_into_the_anchor_is_found(tmp_path, how):
    tmp_path.chmod(0o755)
    config = tmp_path / "etc"
    config.mkdir()
    anchor = config / "release.pub"
    anchor.write_text("key")
    if how == "group-writable parent":
        os.chown(config, 0, AGENT_GID)
        config.chmod(0o775)
        expected = config
    elif how == "other-writable file":
        anchor.chmod(0o666)
        expected = anchor
    elif how == "agent-owned config dir":
        os.chown(config, AGENT_UID, AGENT_GID)
        expected = config
    else:
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        (theirs / "release.pub").write_text("planted")
        os.chown(theirs, AGENT_UID, AGENT_GID)
        anchor.unlink()
        anchor.symlink_to(theirs / "release.pub")
        expected = theirs
    assert writable_component(anchor, AGENT_UID, {AGENT_GID}) == expected


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_the_deployed_agent_cannot_rename_its_way_to_its_trust_anchor(tmp_path, readable_dir, agent_user, coral_data):
    """End to end, through sshd: after deploy-agent, the agent's user tries to replace the key its config names
    (write it, rename its directory, plant another); the key stays the release key."""
    import subprocess

    import yaml

    from edgefleet.flows.deploy_agent.flow import DeployAgentParams, deploy_agent
    from edgefleet.local.fleet import SimulatedFleet
    from tests.flows.rollout.conftest import as_uid, deploy_inputs, deploy_params_as_agent_user, running_agent_config

    inputs = deploy_inputs(tmp_path, readable_dir, coral_data)
    with SimulatedFleet(readable_dir / "fleet", 1) as fleet:
        params = DeployAgentParams(**deploy_params_as_agent_user(fleet, inputs, readable_dir, agent_user))
        result = deploy_agent(params)[0]
        try:
            assert result.ok, result.detail
            config = yaml.safe_load(running_agent_config(result.pid).read_text())
            ring = Path(config["public_key"])  # the keyring deploy-agent installs: keys/release.d/<key id>.pub
            (anchor,) = ring.iterdir()
            keys = ring.parent
            as_uid(agent_user, f"echo forged > {anchor}")
            as_uid(agent_user, f"cp {anchor} {ring}/0000000000000000.pub")  # plant a key beside it
            as_uid(agent_user, f"mv {keys} {keys}.old && mkdir -p {ring} && echo forged > {anchor}")
            assert anchor.read_text() == inputs.public_key.read_text()
            assert list(ring.iterdir()) == [anchor]
        finally:
            subprocess.run(["kill", str(result.pid)], capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="makes files owned by another user (runs as root in CI)")
def test_a_rollout_naming_the_store_by_root_does_not_trust_a_key_the_agents_user_owns(tmp_path: Path) -> None:
    """The path beside: a fleet.yaml without config_dir makes the rollout (logged in as root) name the store by
    --root, whose keys/release.pub the agent's own user owns after deploy-agent's chown of the agent root. The
    store commands refuse such a key instead of verifying versions with it."""
    from typer.testing import CliRunner

    from edgefleet.device.cli import app
    from edgefleet.kernel.trust.signatures import generate_keypair, save_public_key

    root = tmp_path / "agent"
    (root / "keys").mkdir(parents=True)
    save_public_key(generate_keypair()[1], root / "keys" / "release.pub")
    own = CliRunner().invoke(app, ["models", "--root", str(root)])
    assert own.exit_code == 0, own.output  # the caller's own (legacy, single-user) layout still works
    nobody = 65534
    for path in (root, root / "keys", root / "keys" / "release.pub"):
        os.chown(path, nobody, nobody)
    planted = CliRunner().invoke(app, ["models", "--root", str(root)])
    assert planted.exit_code == 2
    assert f"user {nobody} can change" in planted.output and "config_dir" in planted.output
