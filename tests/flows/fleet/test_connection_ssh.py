"""Connections to a real sshd: host keys are verified (unknown and changed keys refused), and nothing hangs."""

from __future__ import annotations

import pytest
from paramiko import Channel

from edgefleet.flows.fleet.connection import (
    DeviceConnection,
    DeviceUnreachable,
    HostKeyError,
    RemoteCommandError,
    connect,
)
from edgefleet.flows.fleet.hosts import GatewaySpec
from edgefleet.flows.fleet.inventory import load_inventory
from edgefleet.local.emulators import free_port
from edgefleet.local.fleet import SimulatedFleet


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    with SimulatedFleet(tmp_path_factory.mktemp("ssh-fleet"), 1) as fleet:
        yield fleet


def test_known_host_connects_and_runs_commands(one_device):
    inventory = load_inventory(one_device.inventory_path)
    with connect(inventory, inventory.devices[0]) as connection:
        assert connection.run("echo ok").stdout == "ok\n"
        with pytest.raises(RemoteCommandError) as failed:
            connection.run("echo broken >&2; exit 3")
        assert failed.value.exit_code == 3 and "broken" in failed.value.message
        with pytest.raises(RemoteCommandError, match="timed out"):
            connection.run("sleep 10", timeout_s=1)


def test_unknown_host_is_refused(one_device, tmp_path):
    inventory = load_inventory(one_device.inventory_path)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError) as refused:
        DeviceConnection(inventory.devices[0], empty).open()
    assert "sim-1" in refused.value.message and "not in" in refused.value.message
    assert "ssh-keyscan" in refused.value.fix
    assert empty.read_text() == ""  # nothing was added behind the operator's back


def test_changed_host_key_is_refused(one_device, tmp_path):
    inventory = load_inventory(one_device.inventory_path)
    device = inventory.devices[0]
    other_key = tmp_path / "other.pub"
    other_key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x\n")
    forged = tmp_path / "known_hosts"
    forged.write_text(f"[127.0.0.1]:{device.port} {other_key.read_text()}")
    with pytest.raises(HostKeyError, match="differs from"):
        DeviceConnection(device, forged).open()


def test_unreachable_device_fails_within_the_connect_timeout(one_device):
    inventory = load_inventory(one_device.inventory_path)
    closed = inventory.devices[0].model_copy(update={"port": free_port(), "connect_attempts": 1})
    with pytest.raises(DeviceUnreachable, match="unreachable"):
        DeviceConnection(closed, inventory.known_hosts).open()


@pytest.fixture(scope="module")
def behind_a_bastion(tmp_path_factory):
    """Two real sshds: sim-1 the bastion, sim-2 the device reached through it (ProxyJump)."""
    with SimulatedFleet(tmp_path_factory.mktemp("bastion-fleet"), 2) as fleet:
        inventory = load_inventory(fleet.inventory_path)
        bastion, device = inventory.devices
        gateway = GatewaySpec(host=bastion.host, port=bastion.port, user=bastion.user)
        yield fleet, inventory, device.model_copy(update={"gateway": gateway})


def _accepted(fleet, device_id: str) -> int:
    return (fleet.devices[device_id].home / "sshd.log").read_text().count("Accepted publickey")


def test_a_device_behind_a_gateway_is_reached_through_it(behind_a_bastion):
    fleet, inventory, device = behind_a_bastion
    logins_before = _accepted(fleet, "sim-1")
    with DeviceConnection(device, inventory.known_hosts) as connection:
        assert connection.run("echo ok").stdout == "ok\n"
        assert isinstance(connection.connection.transport.sock, Channel)  # a direct-tcpip channel of the bastion
    assert _accepted(fleet, "sim-1") == logins_before + 1  # the bastion let us in, once


def test_a_gateway_with_an_unknown_host_key_is_refused(behind_a_bastion, tmp_path):
    fleet, inventory, device = behind_a_bastion
    known = tmp_path / "known_hosts"  # the device's key only: the bastion's is unknown
    known.write_text(next(line for line in inventory.known_hosts.read_text().splitlines()
                          if line.startswith(f"[127.0.0.1]:{device.port} ")) + "\n")
    with pytest.raises(HostKeyError) as refused:
        DeviceConnection(device, known).open()
    assert "gateway" in refused.value.message and "not in" in refused.value.message


def test_the_gateway_comes_from_the_inventory_with_its_key_resolved(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("known_hosts: kh\ndefaults: {user: pi, key_file: keys/id, "
                    "gateway: {host: bastion.example.com, user: ops, key_file: keys/bastion}}\n"
                    "devices:\n  - {id: cam-1, host: 10.0.0.11}\n  - {id: cam-2, host: 10.0.0.12, gateway: null}\n")
    cam_1, cam_2 = load_inventory(path).devices
    assert cam_1.gateway == GatewaySpec(host="bastion.example.com", user="ops", key_file=tmp_path / "keys/bastion")
    assert cam_2.gateway is None

from tests.flows.rollout.conftest import _emulator_env_restored  # noqa: E402,F401 - fixtures its old conftest gave it
