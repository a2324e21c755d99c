"""The systemd unit of the agent is hardened without cutting it off its Edge TPU (issue 12).

`systemd-analyze security --offline=true` rates the rendered unit (exposure 0 = locked down, 10 = exposed);
the target is 4.0 or lower. That the Edge TPU stays reachable under this hardening (USB device nodes through
`DeviceAllow=char-usb_device`, `/dev/apex_*` through `char-apex`, netlink for libusb hotplug) cannot be
checked without a TPU: the unit says which rules keep it reachable, and `edgefleet-agent doctor` run as the
service's user checks the nodes' permissions on a real device.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from edgefleet.flows.deploy_agent.service import ServiceSpec, protect_home, render_unit

EXPOSURE_TARGET = 4.0
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")
AGENT_ROOT = "/var/lib/edgefleet-agent"


def _unit(tmp_path, root: str = AGENT_ROOT):
    spec = ServiceSpec(command=("/bin/sleep", "60"), state_dir=root, user="edgefleet")
    path = tmp_path / "edgefleet-agent.service"
    path.write_text(render_unit(spec))
    return path


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_unit_rates_4_or_lower_in_systemd_analyze_security(tmp_path):
    unit = _unit(tmp_path)

    rated = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
                           capture_output=True, text=True, timeout=60)

    found = EXPOSURE.search(rated.stdout + rated.stderr)
    assert found, rated.stdout + rated.stderr
    assert float(found.group(1)) <= EXPOSURE_TARGET, rated.stdout
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and str(unit) not in verified.stdout + verified.stderr


def test_the_agent_may_write_its_root_only_and_reach_the_tpu_nodes(tmp_path):
    text = _unit(tmp_path).read_text()

    assert f"ReadWritePaths={AGENT_ROOT}\n" in text and "ProtectSystem=strict\n" in text
    assert "DevicePolicy=closed\n" in text
    assert "DeviceAllow=char-usb_device rw\n" in text and "DeviceAllow=char-apex rw\n" in text
    assert "NoNewPrivileges=yes\n" in text and "PrivateTmp=yes\n" in text and "ProtectHome=yes\n" in text


def test_an_agent_root_in_a_home_keeps_the_home_read_only_not_hidden():
    assert protect_home("/var/lib/edgefleet-agent") == "yes"
    assert protect_home("/root/.edgefleet-agent") == "read-only"
    assert protect_home("/home/pi/.edgefleet-agent") == "read-only"
    assert protect_home("/homestead/agent") == "yes"
