"""Shell command text for a host, pure: device paths quoted for the remote shell, the device CLI's command line."""

from __future__ import annotations

import shlex

from edgefleet.flows.fleet.inventory import DeviceSpec


def remote_path(path: str) -> str:
    """A device path quoted for the shell, keeping a leading `~/` expandable by the remote shell."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def agent_command(device: DeviceSpec, *args: str) -> str:
    """The device CLI's command line: `edgefleet-agent ARGS --config <agent_config>` (or `--root <agent_root>` for
    an inventory without config_dir), run as the agent's own user through `sudo -n -u` when the inventory names
    one (deploy-agent's `agent_user`) and it is not the login."""
    argv = [device.agent_command, *args]
    if device.agent_user and device.agent_user != device.user:
        argv = ["sudo", "-n", "-u", device.agent_user, *argv]
    if device.agent_config is not None:  # root and release key from the root-owned agent.yaml
        return shlex.join([*argv, "--config", device.agent_config])
    return shlex.join(argv) + " --root " + remote_path(device.agent_root)
