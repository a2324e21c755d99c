"""deploy-agent wires the agent's self-update (issue 23 item 4): the service starts `current/bin/edgefleet-agent`,
`current` is moved atomically to the venv deploy-agent installed, and (opt-in) the root updater's config and its
systemd service + timer are rendered, fitted to the device's systemd and verified by bookworm's and bullseye's
`systemd-analyze`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from edgefleet.device.selfupdate import UpdaterConfig
from edgefleet.flows.deploy_agent.device_steps import agent_service_spec
from edgefleet.flows.deploy_agent.params import DeployAgentParams
from edgefleet.flows.deploy_agent.selfupdate import (
    SelfUpdateParams,
    current_link_command,
    remove_updater_command,
    render_update_units,
    restart_command,
    update_unit_names,
    updater_document,
)
from edgefleet.flows.deploy_agent.service import service_commands
from edgefleet.flows.deploy_agent.unit_compat import fit_unit
from edgefleet.flows.fleet.inventory import DeviceSpec
from edgefleet.kernel.errors import ConfigError

from .test_unit_compat import _analyzers, _version, bullseye_analyze  # noqa: F401 - the fixture

INSTALL = "/opt/edgefleet"


def _params(**extra) -> DeployAgentParams:
    return DeployAgentParams(inventory="fleet.yaml", public_key="release.pub", agent={"model": "m"}, **extra)


def _device() -> DeviceSpec:
    return DeviceSpec(id="cam-1", host="cam-1.local", key_file=Path("/root/.ssh/id"),
                      agent_root="/var/lib/edgefleet-agent")


def test_the_agent_service_starts_the_agent_through_current():
    spec = agent_service_spec(_params(install_dir=INSTALL), _device(), "/var/lib/edgefleet-agent", "/opt/x/etc/cam-1")

    assert spec.command[0] == f"{INSTALL}/current/bin/edgefleet-agent"
    assert spec.command[1:] == ("run", "--config", "/opt/x/etc/cam-1/agent.yaml")


def _sh(command: str) -> None:
    subprocess.run(["sh", "-c", command], check=True, capture_output=True, text=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the link is made root-owned (chown -h root:root), as on a device")
def test_current_is_pointed_at_the_deployed_venv_replacing_a_self_updated_one(tmp_path):
    (tmp_path / "venv").mkdir()
    (tmp_path / "versions" / "1.5.0" / "venv").mkdir(parents=True)

    _sh(current_link_command(str(tmp_path)))
    assert os.readlink(tmp_path / "current") == "venv" and (tmp_path / "current").lstat().st_uid == 0

    os.symlink("versions/1.5.0/venv", tmp_path / "current.new")
    os.replace(tmp_path / "current.new", tmp_path / "current")  # what the updater does
    _sh(current_link_command(str(tmp_path)))  # a deploy afterwards: the operator's install wins

    assert os.readlink(tmp_path / "current") == "venv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "venv", "versions"]  # no temp link left


def test_current_is_never_moved_into_a_directory_of_that_name(tmp_path):
    (tmp_path / "venv").mkdir()
    (tmp_path / "current" / "keep").mkdir(parents=True)

    with pytest.raises(subprocess.CalledProcessError):
        _sh(current_link_command(str(tmp_path)))
    assert sorted(p.name for p in (tmp_path / "current").iterdir()) == ["keep"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "venv"]


def test_self_update_is_off_by_default_and_typed():
    assert _params().self_update is None
    on = _params(self_update={"channel": "stable", "interval": "1h"})
    assert on.self_update == SelfUpdateParams(channel="stable", interval="1h")
    for bad in ({"interval": "1 hour"}, {"interval": "0h"}, {"channel": "../x"}, {"chanel": "stable"}):
        with pytest.raises(ValidationError):
            _params(self_update=bad)


def test_the_updater_config_is_the_updaters_own_model():
    spec = agent_service_spec(_params(), _device(), "/var/lib/edgefleet-agent", "/opt/edgefleet/etc/cam-1")
    text = updater_document(SelfUpdateParams(channel="beta", max_attempts=5), install_dir=INSTALL,
                            state_dir=spec.state_dir,
                            registry="gs://bucket/edgefleet", public_key="/opt/edgefleet/etc/cam-1/keys/release.d",
                            restart_command=restart_command("systemd", spec, service_commands("systemd", spec)),
                            python="python3")

    config = UpdaterConfig.model_validate(yaml.safe_load(text))
    assert config.channel == "beta" and config.install_dir == Path(INSTALL) and config.max_attempts == 5
    assert config.status_file == Path("/var/lib/edgefleet-agent/status.json")
    assert config.restart_command == ("systemctl", "restart", "edgefleet-agent.service")
    with pytest.raises(ConfigError, match="self-update config"):
        updater_document(SelfUpdateParams(), install_dir=INSTALL, state_dir="/x", registry="gs://b",
                         public_key="k", restart_command=("true",), python="python3", extra_site_dirs=("relative",))


def test_the_process_manager_restarts_the_agent_with_its_own_commands():
    spec = agent_service_spec(_params(service={"manager": "process"}), _device(), "/var/lib/a", "/opt/edgefleet/etc/c")
    commands = service_commands("process", spec)

    assert restart_command("process", spec, commands) == ("sh", "-c", commands.restart)


def test_turning_self_update_off_removes_the_timer_and_the_config():
    command = remove_updater_command("edgefleet-agent", "/opt/edgefleet/etc/cam-1/updater.yaml", systemd=True)

    assert "systemctl disable --now edgefleet-agent-update.timer" in command
    assert "/etc/systemd/system/edgefleet-agent-update.timer" in command
    assert command.endswith("rm -f /opt/edgefleet/etc/cam-1/updater.yaml")


def _installed(tmp_path: Path) -> Path:
    """An install dir whose current/bin/edgefleet-agent exists (systemd-analyze checks ExecStart=)."""
    install = tmp_path / "opt"
    program = install / "venv" / "bin" / "edgefleet-agent"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    os.symlink("venv", install / "current")
    return install


def _verify(analyze: str, directory: Path, texts: tuple[str, str]) -> list[str]:
    service_unit, timer_unit = update_unit_names("edgefleet-agent")
    paths = [directory / service_unit, directory / timer_unit]
    for path, text in zip(paths, texts, strict=True):
        path.write_text(text)
    verified = subprocess.run([analyze, "verify", *map(str, paths)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "SYSTEMD_LOG_COLOR": "0"}, check=False)
    lines = [line for line in (verified.stdout + verified.stderr).splitlines()
             if any(str(path) in line for path in paths)]
    return lines + ([f"exit {verified.returncode}"] if verified.returncode else [])


def test_the_updater_units_verify_clean_with_each_systemd(bullseye_analyze, tmp_path):  # noqa: F811
    install = _installed(tmp_path)
    config = install / "etc" / "updater.yaml"
    service, timer = render_update_units(SelfUpdateParams(interval="30min"), service_name="edgefleet-agent",
                                         install_dir=str(install), config_path=str(config))

    assert f"ExecStart={install}/current/bin/edgefleet-agent self-update --config {config}\n" in service
    assert "OnUnitActiveSec=30min\n" in timer and "Unit=edgefleet-agent-update.service\n" in timer
    units = tmp_path / "units"
    units.mkdir()
    for analyze in _analyzers(bullseye_analyze):
        version = _version(analyze)
        fitted = (fit_unit(service, version).text, fit_unit(timer, version).text)
        assert _verify(analyze, units, fitted) == [], f"systemd {version}"
    broken = (service.replace("Type=oneshot", "Type=sometimes"), timer)
    assert _verify(_analyzers(bullseye_analyze)[-1], units, broken) != []  # what check_unit() treats as a failure


def test_the_updater_runs_once_the_clock_is_set_without_pulling_time_sync_in():
    service, _timer = render_update_units(SelfUpdateParams(), service_name="edgefleet-agent", install_dir=INSTALL,
                                          config_path=f"{INSTALL}/etc/updater.yaml")
    text = fit_unit(service, 247).text  # kept on the oldest systemd: time-sync.target is older than it

    after = next(line for line in text.splitlines() if line.startswith("After="))
    assert "time-sync.target" in after.split("=", 1)[1].split()
    assert not any(line.startswith("Wants=") and "time-sync.target" in line for line in text.splitlines())


def test_a_path_that_would_change_the_updaters_unit_is_refused():
    with pytest.raises(ConfigError, match="updater's unit"):
        render_update_units(SelfUpdateParams(), service_name="edgefleet-agent", install_dir="/opt/edge fleet",
                            config_path="/opt/x/updater.yaml")


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.slow
@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason=f"needs {SYSTEM_PYTHON}")
@pytest.mark.usefixtures("prefect_api")
def test_deploy_over_ssh_runs_the_agent_through_current_and_installs_the_updater_config(
        tmp_path, coral_data, agent_user, readable_dir):
    """The real path: sshd, a built wheel, the process manager. The running agent is the one `current` names; with
    self_update the updater config is root's 0640 and loads as the updater's own model; turned off it is gone."""
    import sysconfig

    from edgefleet.flows.deploy_agent.flow import deploy_agent
    from edgefleet.local.fleet import SimulatedFleet
    from tests.flows.rollout.conftest import deploy_inputs

    key_path, frames, wheel = deploy_inputs(tmp_path, readable_dir, coral_data)
    (tmp_path / "registry").mkdir()
    opt = readable_dir / "opt"
    with SimulatedFleet(readable_dir / "fleet", 1) as fleet:
        fleet.adopt_deployed(opt / "etc")
        settings = dict(
            inventory=str(fleet.inventory_path), public_key=str(key_path), install_dir=str(opt), agent_user=agent_user,
            python=SYSTEM_PYTHON, no_deps=True, wheel=str(wheel), extra_site_dirs=(sysconfig.get_path("purelib"),),
            service_manager="process", registry=str(tmp_path / "registry"),
            enrolment={"dev_key_file": str(tmp_path / "enrolment.key")},
            agent={"model": "imagenet", "source": {"kind": "images", "path": str(frames), "max_fps": 2},
                   "status": {"interval_s": 0.5}})
        [first] = deploy_agent(DeployAgentParams(**settings, self_update={"channel": "beta", "interval": "30min"}))
        assert first.ok, first.detail
        assert os.readlink(opt / "current") == "venv" and (opt / "current").lstat().st_uid == 0
        arguments = Path(f"/proc/{first.pid}/cmdline").read_bytes().split(b"\0")
        assert str(opt / "current" / "bin" / "edgefleet-agent").encode() in arguments
        updater = opt / "etc" / "sim-1" / "updater.yaml"
        assert updater.stat().st_mode & 0o777 == 0o640 and updater.stat().st_uid == 0
        config = UpdaterConfig.model_validate(yaml.safe_load(updater.read_text()))
        assert config.channel == "beta" and config.install_dir == opt and config.registry == str(tmp_path / "registry")
        assert config.public_key == opt / "etc" / "sim-1" / "keys" / "release.d"
        assert config.restart_command[:2] == ("sh", "-c") and "setsid nohup" in config.restart_command[2]
        assert "no timer without systemd" in first.detail

        [again] = deploy_agent(DeployAgentParams(**settings))  # self_update off again: the config goes
        assert again.ok and not updater.exists()
        fleet.stop_agent("sim-1")


def test_the_updater_reads_the_registry_with_the_agents_credentials_file(tmp_path):
    """A root updater outside Google Cloud has no credentials of its own: deploy-agent names the agent's
    credentials_file in updater.yaml, and the updater's registry read uses it (a missing file is named)."""
    from typer.testing import CliRunner

    from edgefleet.device.cli import app

    spec = agent_service_spec(_params(), _device(), "/var/lib/edgefleet-agent", "/opt/edgefleet/etc/cam-1")
    credentials = tmp_path / "google-credentials.json"
    text = updater_document(SelfUpdateParams(), install_dir=str(tmp_path / "opt"), state_dir=spec.state_dir,
                            registry="gs://bucket", public_key=str(tmp_path / "release.d"), python="python3",
                            restart_command=("true",), credentials_file=str(credentials))
    assert UpdaterConfig.model_validate(yaml.safe_load(text)).credentials_file == credentials
    (tmp_path / "updater.yaml").write_text(text)
    result = CliRunner().invoke(app, ["self-update", "--config", str(tmp_path / "updater.yaml")])
    assert result.exit_code != 0 and str(credentials) in result.output, result.output
