"""Host specs and shell text: the compile host is its own kind of SSH host (named so in every message), and
the device CLI's command line follows the inventory (agent user, config directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.flows.fleet.connection import DeviceConnection, HostConnection
from edgefleet.flows.fleet.hosts import CompileHostSpec, GatewaySpec
from edgefleet.flows.fleet.inventory import DeviceSpec
from edgefleet.flows.fleet.shell import agent_command, remote_path
from edgefleet.flows.release.compile_params import CompileSsh
from edgefleet.flows.release.compiler import CompileError, SshCompiler, compiler_host
from edgefleet.kernel.errors import ConfigError


def _device(**fields: object) -> DeviceSpec:
    return DeviceSpec.model_validate({"id": "cam-1", "host": "10.0.0.7", "user": "pi", "key_file": "/k", **fields})


def test_the_device_cli_runs_as_the_agent_user_with_the_root_owned_config() -> None:
    device = _device(agent_user="edgefleet", config_dir="/opt/edgefleet/etc")
    assert agent_command(device, "verify", "/s p") == (
        "sudo -n -u edgefleet /opt/edgefleet/current/bin/edgefleet-agent verify '/s p' "
        "--config /opt/edgefleet/etc/cam-1/agent.yaml")


def test_without_a_config_dir_the_device_cli_gets_the_agent_root_expandable_by_the_shell() -> None:
    device = _device(user="edgefleet", agent_user="edgefleet", agent_root="~/agent")
    assert agent_command(device, "models") == '/opt/edgefleet/current/bin/edgefleet-agent models --root "$HOME"/agent'
    assert remote_path("~") == '"$HOME"' and remote_path("/a;b") == "'/a;b'"


def test_the_compile_host_is_its_own_host_spec_named_in_messages(tmp_path: Path) -> None:
    params = CompileSsh(host="builder.example.com", user="ci", key_file=str(tmp_path / "absent"),
                        known_hosts=str(tmp_path / "known_hosts"), connect_timeout_s=2.5)
    host = compiler_host(params)
    assert isinstance(host, SshCompiler)
    spec = host.spec()
    assert isinstance(spec, CompileHostSpec) and not isinstance(spec, DeviceSpec)
    assert (spec.label, spec.connect_attempts, spec.connect_timeout_s) == ("compile host builder.example.com", 1, 3)
    (tmp_path / "known_hosts").write_text("")
    with pytest.raises(ConfigError, match=r"compile host builder\.example\.com: field 'key_file'"):
        HostConnection(spec, tmp_path / "known_hosts").open()


def test_a_compile_host_without_a_key_file_is_refused_before_connecting() -> None:
    host = compiler_host(CompileSsh(host="builder.example.com"))
    assert isinstance(host, SshCompiler)
    with pytest.raises(CompileError, match="no compile.key_file"):
        host.spec()


def test_a_bastion_without_its_own_key_uses_the_hosts(tmp_path: Path) -> None:
    device = _device(key_file=str(tmp_path / "device_key"), gateway=GatewaySpec(host="bastion"))
    assert device.gateway_key_file == tmp_path / "device_key"
    (tmp_path / "known_hosts").write_text("")
    with pytest.raises(ConfigError, match=r"device cam-1: field 'key_file'"):
        DeviceConnection(device, tmp_path / "known_hosts").open()
