"""The fleet inventory (`fleet.yaml`): which devices exist and how to reach them over SSH.

    known_hosts: known_hosts            # required: host keys are verified, unknown hosts are refused
    defaults:                           # optional: any device field, applied where a device omits it
      user: pi
      key_file: ~/.ssh/edgefleet_ed25519
      agent_root: /var/lib/edgefleet-agent
      agent_command: /opt/edgefleet/current/bin/edgefleet-agent
      agent_user: edgefleet             # deploy-agent's agent_user (default edgefleet)
      config_dir: /opt/edgefleet/etc    # deploy-agent's config_dir: <config_dir>/<id>/agent.yaml, release key
      gateway: {host: bastion.example.com, user: ops}   # optional: reached through this bastion (ProxyJump)
    devices:
      - id: cam-1
        host: 10.0.0.11
        tags: [canary, lab]
      - {id: cam-2, host: 10.0.0.12, port: 2222}

Relative paths (known_hosts, key files) are relative to the inventory file. Passwords are not accepted
anywhere: devices are reached with SSH keys only. Errors name the device and the field.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from edgefleet.flows.fleet.device_values import AgentRootPath, CommandName, DevicePath, UnixName
from edgefleet.flows.fleet.hosts import SshHost, Strict
from edgefleet.kernel.contracts.layout import DEFAULT_AGENT_ROOT
from edgefleet.kernel.contracts.names import DeviceId
from edgefleet.kernel.errors import ConfigError, describe_validation_error

SECRET_KEYS = ("password", "passphrase", "secret", "key_passphrase")
# deploy-agent's default install_dir (/opt/edgefleet) + current/bin (the link deploy-agent and the updater switch):
# tests/flows/rollout/test_waves_inventory.py ties them.
DEFAULT_AGENT_COMMAND = "/opt/edgefleet/current/bin/edgefleet-agent"


class DeviceSpec(SshHost):
    """One device of the fleet: an SSH host with the agent on it."""

    id: DeviceId = Field(description="unique device id (the agent's device_id)")
    tags: tuple[str, ...] = Field(default=(), description="free-form labels used to target devices")
    agent_root: AgentRootPath = Field(default=DEFAULT_AGENT_ROOT,
                                      description="the agent root on the device (models, status.json, spool)")
    agent_command: CommandName = Field(default=DEFAULT_AGENT_COMMAND,
                                       description="how to call the device CLI there: an absolute path (default: "
                                       "where deploy-agent installs it with its default install_dir; a "
                                       "non-interactive SSH session's PATH has no venv on it)")
    agent_user: UnixName | None = Field(default=None, description="the system user the agent runs as (deploy-"
                                        "agent's agent_user); the device CLI is then run as it with `sudo -n -u`")
    config_dir: DevicePath | None = Field(
        default=None, description="deploy-agent's config_dir (default <install_dir>/etc, e.g. /opt/edgefleet/etc): "
        "the device CLI takes the agent root and the release key from <config_dir>/<id>/agent.yaml; empty: "
        "--root agent_root and the key under it (agents deployed before the root-owned config directory)")

    @property
    def agent_config(self) -> str | None:
        """The root-owned agent.yaml deploy-agent wrote, when the inventory names the config directory."""
        return f"{self.config_dir}/{self.id}/agent.yaml" if self.config_dir is not None else None

    @property
    def label(self) -> str:
        return f"device {self.id}"


class Inventory(Strict):
    """The whole fleet: devices (with defaults applied) and the known_hosts file that vouches for them."""

    known_hosts: Path
    devices: tuple[DeviceSpec, ...]

    def device(self, device_id: str) -> DeviceSpec:
        """The device with this id.

        Raises:
            ConfigError: no such device (the message lists the known ids).
        """
        for device in self.devices:
            if device.id == device_id:
                return device
        raise ConfigError(f"device {device_id!r} is not in the inventory",
                          f"use one of: {', '.join(d.id for d in self.devices) or 'none'} (or add it to fleet.yaml)")

    def select(self, ids: Iterable[str] = (), tags: Iterable[str] = ()) -> tuple[DeviceSpec, ...]:
        """Devices named in `ids` or carrying any of `tags`, in inventory order; all devices if both empty.

        Raises:
            ConfigError: an id is unknown, or the selection is empty.
        """
        ids, tags = list(ids), set(tags)
        for device_id in ids:
            self.device(device_id)
        if not ids and not tags:
            chosen = self.devices
        else:
            chosen = tuple(d for d in self.devices if d.id in ids or tags.intersection(d.tags))
        if not chosen:
            raise ConfigError(f"no device in the inventory carries any of the tags {sorted(tags)}",
                              f"tags in use: {', '.join(sorted({t for d in self.devices for t in d.tags})) or 'none'}")
        return chosen


def _find_secrets(node: Any, where: str) -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if str(key).lower() in SECRET_KEYS:
                found.append(f"{where}.{key}" if where else str(key))
            found += _find_secrets(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found += _find_secrets(item, f"{where}[{index}]")
    return found



def _resolve(path: str | os.PathLike[str], base: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else base / path


def parse_inventory(document: Any, *, source: str = "fleet.yaml", base_dir: Path | None = None) -> Inventory:
    """Validates an inventory document (the parsed YAML).

    Args:
        document: the mapping with `known_hosts`, `defaults` and `devices`.
        source: what to call it in errors (the file name).
        base_dir: relative paths are taken from here (the file's directory); default the working directory.

    Raises:
        ConfigError: naming the device and the field that is wrong.
    """
    base_dir = base_dir or Path.cwd()
    if not isinstance(document, dict):
        raise ConfigError(f"{source} must be a mapping with known_hosts, defaults and devices",
                          "see the fleet.yaml example in edgefleet.flows.fleet.inventory")
    secrets = _find_secrets(document, "")
    if secrets:
        raise ConfigError(f"{source} holds a password or secret at {', '.join(secrets)}: passwords are not accepted",
                          "remove it; devices are reached with SSH keys only (key_file), and an encrypted key "
                          "is unlocked by ssh-agent, never by a value in this file")
    unknown = set(document) - {"known_hosts", "defaults", "devices"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level field(s) {', '.join(sorted(map(str, unknown)))}",
                          "the top level has known_hosts, defaults and devices")
    if not document.get("known_hosts"):
        raise ConfigError(f"{source}: missing field 'known_hosts'",
                          "name a known_hosts file with every device's host key (ssh-keyscan, checked out of "
                          "band); unknown hosts are refused")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: 'defaults' must be a mapping of device fields", "e.g. defaults: {user: pi}")
    devices_raw = document.get("devices")
    if not isinstance(devices_raw, list) or not devices_raw:
        raise ConfigError(f"{source}: 'devices' must be a non-empty list",
                          "add at least one device: - {id: ..., host: ...}")
    devices, seen = [], set()
    for index, raw in enumerate(devices_raw):
        name = raw.get("id", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: device {name} (devices[{index}]) must be a mapping of fields",
                              "write it as {id: ..., host: ...}")
        merged = {**defaults, **raw}
        if "key_file" in merged and merged["key_file"] is not None:
            merged["key_file"] = _resolve(merged["key_file"], base_dir)
        gateway = merged.get("gateway")
        if isinstance(gateway, dict) and gateway.get("key_file") is not None:
            merged["gateway"] = {**gateway, "key_file": _resolve(gateway["key_file"], base_dir)}
        try:
            device = DeviceSpec(**merged)
        except ValidationError as error:
            raise ConfigError(f"{source}: device {name!s} (devices[{index}]): {describe_validation_error(error)}",
                              "fix the field(s) named (fields come from the device entry or from defaults)") from None
        if device.id in seen:
            raise ConfigError(f"{source}: device {device.id} (devices[{index}]) appears twice",
                              "device ids must be unique: rename or remove one")
        seen.add(device.id)
        devices.append(device)
    return Inventory(known_hosts=_resolve(document["known_hosts"], base_dir), devices=tuple(devices))


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    """Reads and validates `fleet.yaml`.

    Raises:
        ConfigError: the file is missing or not YAML, or a device or field is wrong (named).
    """
    path = Path(path).expanduser()
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"inventory {path} does not exist", "pass the path of your fleet.yaml") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"inventory {path} is not valid YAML: {error}",
                          "fix the syntax at the position shown") from None
    return parse_inventory(document, source=str(path), base_dir=path.parent.resolve())


def dump_inventory(devices: Sequence[dict[str, Any]], known_hosts: str | os.PathLike[str],
                   defaults: dict[str, Any] | None = None) -> str:
    """The YAML text of an inventory (used by the simulated fleet and the demo)."""
    document: dict[str, Any] = {"known_hosts": str(known_hosts)}
    if defaults:
        document["defaults"] = defaults
    document["devices"] = list(devices)
    return yaml.safe_dump(document, sort_keys=False)
