"""Issue 20 item 8: a Prefect parameter became root's configuration on devices. `install_dir` with a newline
made the sudoers rule `... NOPASSWD: /opt/x\\nALL ALL=(ALL) NOPASSWD: ALL/venv/bin/edgefleet-agent`, which
`visudo -c` accepts: everybody root. Every string that reaches a device (a path, a user, a command, an
environment variable, a host, an inventory field) is now validated as what it is, before any device is
touched, and the sudoers rule refuses what would change it."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from pydantic import ValidationError

from edgefleet.flows.deploy_agent.params import DeployAgentParams
from edgefleet.flows.deploy_agent.privileged import sudoers_rule
from edgefleet.flows.fleet.inventory import parse_inventory
from edgefleet.kernel.errors import ConfigError

INJECTED = "/opt/x\nALL ALL=(ALL) NOPASSWD: ALL\n#"
BASE = {"inventory": "fleet.yaml", "public_key": "release.pub", "agent": {"model": "imagenet"}}


def test_a_newline_in_install_dir_is_refused_before_any_device_is_touched():
    with pytest.raises(ValidationError, match="install_dir"):
        DeployAgentParams(**BASE, install_dir=INJECTED)


@pytest.mark.skipif(shutil.which("visudo") is None, reason="visudo (sudo) is not installed")
def test_the_rule_the_attack_wrote_is_one_visudo_accepts_and_sudoers_rule_now_refuses_it(tmp_path):
    rule = tmp_path / "rule"
    rule.write_text(f"pi ALL=(edgefleet) NOPASSWD: {INJECTED}/venv/bin/edgefleet-agent\n")
    assert subprocess.run(["visudo", "-cqf", str(rule)], capture_output=True).returncode == 0  # the attack
    with pytest.raises(ConfigError, match="sudoers"):
        sudoers_rule("pi", "edgefleet", f"{INJECTED}/venv/bin/edgefleet-agent")
    for login, agent in (("pi\nALL", "edgefleet"), ("pi", "edge fleet"), ("pi", "root,ALL")):
        with pytest.raises(ConfigError, match="sudoers"):
            sudoers_rule(login, agent, "/opt/edgefleet/venv/bin/edgefleet-agent")


@pytest.mark.parametrize(("field", "value"), [
    ("install_dir", "relative/dir"), ("install_dir", "/opt/edge fleet"), ("install_dir", "/opt/../etc"),
    ("install_dir", "/opt/x;reboot"), ("install_dir", "/opt/$(id)"), ("config_dir", "/etc/edgefleet\n"),
    ("python", "python3 -c 'import os'"), ("python", "/usr/bin/python3\nid"), ("extras", "device] @ http://x"),
    ("agent_user", "root\n"), ("agent_user", "Root"), ("agent_user", "a" * 40),
    ("environment", {"A\nB": "1"}), ("environment", {"A": "1\nLD_PRELOAD=/tmp/x.so"}), ("environment", {"A": "$(id)"}),
    ("service", {"manager": "process", "name": "agent\nExecStart=/bin/sh"}),
])
def test_every_string_that_reaches_a_device_is_validated_as_what_it_is(field, value):
    with pytest.raises(ValidationError, match=field):
        DeployAgentParams(**BASE, **{field: value})


def test_the_defaults_and_plain_values_pass():
    params = DeployAgentParams(**BASE, install_dir="/srv/edge-fleet_2/opt", python="/usr/bin/python3.11",
                               extras="device,video", environment={"PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"})
    assert params.agent_user == "edgefleet" and params.device_config_dir("cam-1") == "/srv/edge-fleet_2/opt/etc/cam-1"


@pytest.mark.parametrize(("field", "value"), [
    ("host", "10.0.0.1 -oProxyCommand=id"), ("user", "pi\nroot"), ("agent_root", "/var/lib/a\nb"),
    ("agent_root", "relative"), ("agent_command", "edgefleet-agent; reboot"), ("agent_user", "edge fleet"),
    ("config_dir", "/opt/edgefleet/etc/../../tmp"),
])
def test_inventory_fields_that_reach_a_device_are_validated(field, value, tmp_path):
    device = {"id": "cam-1", "host": "10.0.0.1", "key_file": str(tmp_path / "key"), field: value}
    with pytest.raises(ConfigError, match=field):
        parse_inventory({"known_hosts": "known_hosts", "devices": [device]})
