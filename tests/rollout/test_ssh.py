"""Connections to a real sshd: host keys are verified (unknown and changed keys refused), and nothing hangs."""

from __future__ import annotations

import pytest

from edgefleet.flows.rollout.inventory import load_inventory
from edgefleet.flows.rollout.ssh import DeviceConnection, DeviceUnreachable, HostKeyError, RemoteCommandError, connect
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
