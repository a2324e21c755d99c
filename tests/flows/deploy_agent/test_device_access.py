"""The agent's service reaches the device nodes its frame source needs (issue 22, item 6), and deploy-agent
renders the unit for the device's own systemd (item 7).

`DevicePolicy=closed` let the agent open USB and apex nodes only, and its user was not in `video`: an agent
whose source is a camera crash-looped on /dev/video0. (No transient unit can be started here, systemd is not
the init: the device policy is checked as rendered, and by systemd-analyze in test_unit_systemd_versions.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from local_device import LocalConnection

from edgefleet.flows.deploy_agent.device_access import (
    CAMERA_DEVICE_CLASSES,
    TPU_DEVICE_CLASSES,
    device_access,
    device_allow_lines,
    source_kind,
)
from edgefleet.flows.deploy_agent.device_steps import agent_service_spec, fitted_unit
from edgefleet.flows.deploy_agent.flow import DeployAgentParams
from edgefleet.flows.deploy_agent.privileged import create_user_command
from edgefleet.flows.deploy_agent.service import render_unit
from edgefleet.flows.fleet.inventory import DeviceSpec
from edgefleet.kernel.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
CAMERA_AGENT = {"model": "shapes", "source": {"kind": "camera", "camera_index": 0}}


def _params(agent: dict) -> DeployAgentParams:
    return DeployAgentParams(inventory="fleet.yaml", public_key="release.pub", agent=agent)


def _device() -> DeviceSpec:
    return DeviceSpec(id="pi-1", host="pi-1.local", user="pi", key_file=Path("/nonexistent/key"))


def _allowed(unit: str) -> set[str]:
    return {line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("DeviceAllow=")}


def test_a_camera_agents_unit_allows_the_camera_nodes_and_its_user_joins_video():
    params = _params(CAMERA_AGENT)

    unit = render_unit(agent_service_spec(params, _device(), "/var/lib/edgefleet-agent", "/opt/edgefleet/etc/pi-1"))

    assert "DevicePolicy=closed\n" in unit
    assert _allowed(unit) == {f"char-{name} rw" for name in TPU_DEVICE_CLASSES + CAMERA_DEVICE_CLASSES}
    assert {"char-video4linux rw", "char-media rw", "char-dma_heap rw"} <= _allowed(unit)
    groups = device_access(source_kind(params.agent)).groups
    joins = create_user_command("edgefleet", "/var/lib/edgefleet-agent", groups)
    assert "usermod -aG video edgefleet" in joins and "usermod -aG plugdev edgefleet" in joins


@pytest.mark.parametrize("agent", [{"model": "shapes"}, {"model": "shapes", "source": {"kind": "images"}},
                                   {"model": "shapes", "source": {"kind": "video", "path": "/data/a.mp4"}}])
def test_an_agent_without_a_camera_keeps_camera_nodes_closed_and_stays_out_of_video(agent):
    unit = render_unit(agent_service_spec(_params(agent), _device(), "/var/lib/a", "/opt/edgefleet/etc/pi-1"))

    assert _allowed(unit) == {"char-usb_device rw", "char-apex rw"}
    assert "video" not in device_access(source_kind(agent)).groups


def test_a_device_class_that_is_not_a_proc_devices_name_never_reaches_the_unit():
    with pytest.raises(ValueError, match="not a /proc/devices name"):
        device_allow_lines(("video4linux rw\nDeviceAllow=block-sda",))


def test_deploy_agent_renders_the_unit_for_the_systemd_the_device_runs(tmp_path):
    prepared = subprocess.run(["bash", str(REPO / ".ci" / "debian-systemd"), "bullseye"], capture_output=True,
                              text=True, timeout=600, check=False)
    if prepared.returncode != 0 and "apt-get" in prepared.stderr and "not found" in prepared.stderr:
        pytest.skip("bullseye's systemctl comes from its Debian package: needs apt-get")
    assert prepared.returncode == 0, prepared.stderr
    bullseye_bin = str(Path(prepared.stdout.strip().splitlines()[-1]).parents[2] / "bin")  # its real systemctl
    spec = agent_service_spec(_params(CAMERA_AGENT), _device(), "/var/lib/a", "/opt/edgefleet/etc/pi-1")

    unit = fitted_unit(LocalConnection(bullseye_bin), spec)

    assert unit.systemd_version == 247 and unit.omitted == ("PrivateIPC",)
    assert "PrivateIPC" not in unit.text and "char-video4linux rw" in unit.text


def test_deploy_agent_on_a_host_without_systemd_names_the_process_manager(tmp_path):
    failing = tmp_path / "systemctl"  # what systemctl says in a container whose init is not systemd
    failing.write_text("#!/bin/sh\necho 'System has not been booted with systemd as init system' >&2\nexit 1\n")
    failing.chmod(0o755)
    spec = agent_service_spec(_params({"model": "shapes"}), _device(), "/var/lib/a", "/opt/edgefleet/etc/pi-1")

    with pytest.raises(ConfigError, match="systemctl --version") as refused:
        fitted_unit(LocalConnection(str(tmp_path)), spec)

    assert "manager: process" in refused.value.fix
