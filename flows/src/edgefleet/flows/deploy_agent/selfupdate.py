"""deploy-agent's part of the agent's self-update (issue 23 item 4): the `current` link and, opt-in, the updater.

`current` (`<install_dir>/current -> venv`): the agent's service starts `<install_dir>/current/bin/edgefleet-agent`,
so the root updater (`edgefleet-agent self-update`, `edgefleet.device.selfupdate`) switches versions by moving one
link. deploy-agent points it at the venv it installed each time it runs (the operator's explicit install wins over
a pulled one), atomically (`ln -sfn` to a temp name, then `mv -T`: a reader sees the old or the new link, never
none) and root-owned (`chown -h root:root`).

`self_update: {channel: stable, interval: 1h}` (default off) also installs, root-owned:
- `<config_dir>/<device id>/updater.yaml` (0640), validated with the updater's own `UpdaterConfig`;
- systemd: `<service>-update.service` (oneshot, root) and `<service>-update.timer`, rendered from
  `templates/edgefleet-agent-update.{service,timer}`, fitted to the device's systemd (`unit_compat`), checked with
  `systemd-analyze verify`, the timer enabled and started. Turned off again, the timer is stopped and removed.
- `process` (no systemd as init): the config only; run `self-update` from the device's own scheduler.
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Callable
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from edgefleet.device.selfupdate_plan import DEFAULT_MAX_ATTEMPTS
from edgefleet.flows.deploy_agent.service import (
    SYSTEMD_UNIT_DIR,
    ServiceCommands,
    ServiceSpec,
    _unit_value,
    service_commands,
)
from edgefleet.flows.fleet.connection import DeviceShell
from edgefleet.kernel.configfile import validate
from edgefleet.kernel.contracts.names import ChannelName
from edgefleet.kernel.errors import ConfigError

CURRENT_LINK = "current"  # the updater's name for it (edgefleet.device.selfupdate_plan.CURRENT_LINK)
DEPLOYED_VENV = "venv"  # relative to the install dir, as the updater's targets are
UPDATER_CONFIG_FILE = "updater.yaml"
UPDATER_CONFIG_MODE = 0o640
UPDATE_SERVICE_TEMPLATE = "edgefleet-agent-update.service"
UPDATE_TIMER_TEMPLATE = "edgefleet-agent-update.timer"
UPDATE_SUFFIX = "-update"
UPDATE_RUN_MARGIN_S = 300.0  # beyond the updater's install and health timeouts before systemd stops a run
# A systemd time span as the timer takes it: a number and one unit (30min, 1h, 1d).
TIMESPAN_PATTERN = r"^[1-9][0-9]{0,5}(s|min|h|d)$"


class SelfUpdateParams(BaseModel):
    """The root updater deploy-agent installs beside the agent (opt-in)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: ChannelName = Field(default="stable", description="the agent channel followed (agent/channels/)")
    interval: str = Field(default="1h", pattern=TIMESPAN_PATTERN, description="time between runs (systemd span)")
    randomized_delay: str = Field(default="15min", pattern=TIMESPAN_PATTERN,
                                  description="random delay added to each run: a fleet does not update at once")
    boot_delay: str = Field(default="10min", pattern=TIMESPAN_PATTERN, description="first run after boot")
    health_timeout_s: float = Field(default=300.0, gt=0, description="the new agent must report running within")
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1,
                              description="attempts of a release whose wait ran out before the device refuses it "
                              "for good (an agent that said `failed` is refused at once)")
    install_timeout_s: float = Field(default=1800.0, gt=0, description="making the new venv may take this long")


def current_link_command(install_dir: str, target: str = DEPLOYED_VENV) -> str:
    """Points `<install_dir>/current` at `target` (relative) atomically and root-owned: a new link under a temp
    name, renamed over the old one (`mv -T`: never into a directory named `current`)."""
    q = shlex.quote
    link = f"{install_dir}/{CURRENT_LINK}"
    temp = f"{link}.tmp-$$"
    return (f"ln -sfn {q(target)} {temp} && chown -h root:root {temp} && mv -Tf {temp} {q(link)} "
            f"|| {{ rm -f {temp}; exit 1; }}")


def agent_program(install_dir: str) -> str:
    """The agent's executable as the services start it: through `current`."""
    return f"{install_dir}/{CURRENT_LINK}/bin/edgefleet-agent"


def updater_config_path(config_dir: str) -> str:
    return f"{config_dir}/{UPDATER_CONFIG_FILE}"


def updater_document(self_update: SelfUpdateParams, *, install_dir: str, state_dir: str, registry: str,
                     public_key: str, restart_command: tuple[str, ...], python: str,
                     wheelhouse: str | None = None, extra_site_dirs: tuple[str, ...] = (),
                     credentials_file: str | None = None) -> str:
    """The updater's YAML, validated with its own config model (an error names the parameter to fix)."""
    from edgefleet.device.selfupdate import UpdaterConfig
    from edgefleet.kernel.contracts.layout import STATUS_FILE

    document = {"install_dir": install_dir, "status_file": f"{state_dir}/{STATUS_FILE}", "registry": registry,
                "public_key": public_key, "channel": self_update.channel, "restart_command": list(restart_command),
                "python": python, "health_timeout_s": self_update.health_timeout_s,
                "max_attempts": self_update.max_attempts,
                "install_timeout_s": self_update.install_timeout_s}
    if credentials_file:  # the agent's own: a root updater reading gs:// outside Google Cloud has nothing else
        document["credentials_file"] = credentials_file
    if wheelhouse:
        document["wheelhouse"] = wheelhouse
    if extra_site_dirs:
        document["extra_site_dirs"] = list(extra_site_dirs)
    validate(UpdaterConfig, document, origin="self-update config", fix="fix the deploy-agent `self_update` parameter")
    return yaml.safe_dump(document, sort_keys=False)


def restart_command(manager: str, spec: ServiceSpec, commands: ServiceCommands) -> tuple[str, ...]:
    """How the updater restarts the agent: systemctl, or the process manager's own restart."""
    if manager == "systemd":
        return ("systemctl", "restart", f"{spec.name}.service")
    return ("sh", "-c", commands.restart)


def update_unit_names(service_name: str) -> tuple[str, str]:
    """(service unit, timer unit) of the updater of service `service_name`."""
    return f"{service_name}{UPDATE_SUFFIX}.service", f"{service_name}{UPDATE_SUFFIX}.timer"


def _template(name: str) -> str:
    return resources.files("edgefleet.flows").joinpath("templates", name).read_text()


def render_update_units(self_update: SelfUpdateParams, *, service_name: str, install_dir: str,
                        config_path: str) -> tuple[str, str]:
    """(service text, timer text) of the updater: `current/bin/edgefleet-agent self-update --config ...` as root."""
    service_unit, _timer = update_unit_names(service_name)
    for what, value in (("install_dir", install_dir), ("config_dir", config_path)):
        if any(char.isspace() or char in "\"'\\%$" for char in value):
            raise ConfigError(f"{what} {value!r} cannot go into the updater's unit (white space, quote, % or $)",
                              "use a plain absolute path")
    timeout_s = self_update.install_timeout_s + self_update.health_timeout_s + UPDATE_RUN_MARGIN_S
    values = {"description": _unit_value("description", f"edgefleet agent self-update ({service_name})"),
              "exec_start": f"{agent_program(install_dir)} self-update --config {config_path}",
              "timeout_s": f"{timeout_s:g}"}
    service = string.Template(_template(UPDATE_SERVICE_TEMPLATE)).substitute(values)
    timer = string.Template(_template(UPDATE_TIMER_TEMPLATE)).substitute(
        description=f"edgefleet agent self-update ({service_name}), every {self_update.interval} with jitter",
        boot_delay=self_update.boot_delay, interval=self_update.interval,
        randomized_delay=self_update.randomized_delay, service_unit=service_unit)
    return service, timer


def update_unit_paths(service_name: str) -> tuple[str, str]:
    service_unit, timer_unit = update_unit_names(service_name)
    return f"{SYSTEMD_UNIT_DIR}/{service_unit}", f"{SYSTEMD_UNIT_DIR}/{timer_unit}"


def remove_updater_command(service_name: str, config_path: str, *, systemd: bool) -> str:
    """Undoes an earlier `self_update` (now off): the timer stopped and gone, the config removed."""
    q = shlex.quote
    service_path, timer_path = update_unit_paths(service_name)
    _service_unit, timer_unit = update_unit_names(service_name)
    stop = (f"if [ -e {q(timer_path)} ]; then systemctl disable --now {q(timer_unit)} || true; "
            f"rm -f {q(timer_path)} {q(service_path)}; systemctl daemon-reload; fi; ") if systemd else ""
    return f"{stop}rm -f {q(config_path)}"


def install_updater(connection: DeviceShell, params: Any, spec: ServiceSpec, *, config_dir: str, public_key: str,
                    check_unit: Callable[[DeviceShell, str], str], credentials_file: str | None = None) -> str:
    """Installs (self_update set) or removes (unset) the updater on one device; returns a note for the result.

    `connection` is deploy-agent's (root on the device), `params` its DeployAgentParams (untyped here: params.py
    imports this module), `check_unit` how it verifies a unit on the device (`systemd-analyze verify`, the agent
    unit's check).

    Raises:
        ConfigError: self_update without a registry to pull from, or a systemd older than supported.
        EdgefleetError: systemd-analyze complained about a unit.
    """
    from edgefleet.flows.deploy_agent.unit_compat import fit_unit, parse_systemd_version

    systemd = params.service_manager == "systemd"
    config_path = updater_config_path(config_dir)
    if params.self_update is None:
        connection.run(remove_updater_command(spec.name, config_path, systemd=systemd))
        return ""
    if params.registry is None:
        raise ConfigError("self_update is set but registry is not: the updater pulls agent releases from it",
                          "set registry (gs://bucket[/prefix]) or drop self_update")
    document = updater_document(
        params.self_update, install_dir=params.install_dir, state_dir=spec.state_dir, registry=params.registry,
        public_key=public_key, python=params.python, wheelhouse=params.wheelhouse,
        extra_site_dirs=params.extra_site_dirs, credentials_file=credentials_file,
        restart_command=restart_command(params.service_manager, spec, service_commands(params.service_manager, spec)))
    connection.write_text(config_path, document, mode=UPDATER_CONFIG_MODE)
    connection.run(f"chown root:root {shlex.quote(config_path)}")
    if not systemd:
        return f", self-update config {config_path} (no timer without systemd)"
    version = parse_systemd_version(connection.run("systemctl --version").stdout)
    texts = render_update_units(params.self_update, service_name=spec.name, install_dir=params.install_dir,
                                config_path=config_path)
    for path, text in zip(update_unit_paths(spec.name), texts, strict=True):
        connection.write_text(path, fit_unit(text, version).text)
    for path in update_unit_paths(spec.name):
        check_unit(connection, path)
    _service_unit, timer_unit = update_unit_names(spec.name)
    connection.run(f"systemctl daemon-reload && systemctl enable --now {shlex.quote(timer_unit)}")
    return f", self-update every {params.self_update.interval} ({timer_unit})"
