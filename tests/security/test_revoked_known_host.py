"""Issue 20 item 9: an `@revoked` line in known_hosts crashed the connection with paramiko's InvalidHostKey
traceback (and `@cert-authority` the same). A revoked host key is now refused with a clear error, even where
another line lists it as known; unsupported and malformed lines are errors naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.flows.fleet.connection import DeviceConnection, HostKeyError
from edgefleet.flows.fleet.inventory import load_inventory
from edgefleet.kernel.errors import ConfigError
from edgefleet.local.fleet import SimulatedFleet

OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture(scope="module")
def device_and_key(tmp_path_factory):
    with SimulatedFleet(tmp_path_factory.mktemp("revoked-fleet"), 1) as fleet:
        device = load_inventory(fleet.inventory_path).devices[0]
        key = " ".join(Path(f"{fleet.devices['sim-1'].host_key}.pub").read_text().split()[:2])
        yield device, key


def _known_hosts(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_revoked_host_key_is_refused_even_where_it_is_also_listed(device_and_key, tmp_path):
    device, key = device_and_key
    name = f"[127.0.0.1]:{device.port}"
    for lines in ((f"@revoked * {key}", f"{name} {key}"), (f"@revoked {name} {key}",),
                  (f"{name} {OTHER_KEY}", f"@revoked * {key}")):
        with pytest.raises(HostKeyError, match="@revoked") as refused:
            DeviceConnection(device, _known_hosts(tmp_path, *lines)).open()
        assert "sim-1" in refused.value.message and "re-key" in refused.value.fix


def test_a_revoked_line_for_another_key_does_not_stop_a_known_host(device_and_key, tmp_path):
    device, key = device_and_key
    known = _known_hosts(tmp_path, f"@revoked * {OTHER_KEY}", f"[127.0.0.1]:{device.port} {key}")
    with DeviceConnection(device, known) as connection:
        assert connection.run("echo ok").stdout == "ok\n"


@pytest.mark.parametrize(("line", "says"), [
    (f"@cert-authority *.fleet {OTHER_KEY}", "not supported"),
    (f"@trusted * {OTHER_KEY}", "unknown marker"),
    ("[127.0.0.1]:22 ssh-ed25519", "needs hosts, key type and key"),
    ("[127.0.0.1]:22 ssh-ed25519 not!base64", "not a known_hosts line"),
    ("@revoked * ssh-ed25519 not!base64", "not base64"),
])
def test_unsupported_or_malformed_lines_are_clear_errors_naming_the_line(device_and_key, tmp_path, line, says):
    device, key = device_and_key
    known = _known_hosts(tmp_path, f"[127.0.0.1]:{device.port} {key}", line)
    with pytest.raises(ConfigError, match=says) as refused:
        DeviceConnection(device, known).open()
    assert f"{known} line 2" in refused.value.message


def test_hashed_and_commented_lines_still_work(device_and_key, tmp_path):
    """`ssh-keygen -H` hashes host names; comments and blank lines are skipped, as OpenSSH does."""
    import subprocess

    device, key = device_and_key
    known = _known_hosts(tmp_path, "# fleet", "", f"[127.0.0.1]:{device.port} {key} host-sim-1")
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert "|1|" in known.read_text()
    with DeviceConnection(device, known) as connection:
        assert connection.run("echo ok").stdout == "ok\n"
