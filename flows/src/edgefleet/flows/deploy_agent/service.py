"""Service managers for the device agent: `systemd` (production) and `process` (no systemd as init).

Both turn "run `edgefleet-agent run --config CONFIG` as service NAME" into shell commands for the device,
so the deploy-agent flow runs them over SSH and the simulated fleet runs the very same commands locally.

systemd:
    the unit is rendered from `edgefleet/flows/templates/edgefleet-agent.service` into
    `/etc/systemd/system/<name>.service` (checked with `systemd-analyze verify` where it exists), then
    `systemctl daemon-reload`, `enable` and `restart`. systemd restarts a crashed agent; logs go to journald.

process (containers, the test fleet, devices whose init is not systemd):
    the agent is started with `setsid nohup` (its own session, so it outlives the SSH session; as `user`
    through `setpriv` when the commands run as another user, e.g. root through sudo), its pid in
    `<service_dir>/<name>.pid`, its output appended to `<service_dir>/<name>.log`, its environment read from
    `<service_dir>/<name>.env` (root reads all three: deploy-agent puts them in the root-owned config
    directory, never under the agent root). Restart = SIGTERM (the agent drains telemetry), wait, SIGKILL after the stop
    timeout, start. Nothing restarts a crashed agent: use systemd where you can.
"""

from __future__ import annotations

import re
import shlex
import string
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.flows.deploy_agent.device_access import TPU_DEVICE_CLASSES, device_allow_lines
from edgefleet.kernel.configfile import tag_required, tagged_union
from edgefleet.kernel.errors import ConfigError

UNIT_TEMPLATE = "edgefleet-agent.service"
SYSTEMD_UNIT_DIR = "/etc/systemd/system"

ServiceManagerName = Literal["systemd", "process"]
SERVICE_NAME_PATTERN = r"^[A-Za-z0-9_.@-]+$"


class ServiceSpec(BaseModel):
    """What to run as a service on one device (all paths absolute on the device)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="edgefleet-agent", pattern=SERVICE_NAME_PATTERN)
    command: tuple[str, ...] = Field(min_length=1, description="argv, e.g. (venv/bin/edgefleet-agent, run, ...)")
    user: str = "root"
    state_dir: str = Field(description="the agent root, the one directory the agent writes")
    service_dir: str | None = Field(
        default=None, description="root-owned: the env file, and the process manager's pid and log files (root "
        "reads and writes them: never in a directory the agent's user owns); default state_dir, only for an agent "
        "run by the same user as its manager (the simulated fleet)")
    environment: dict[str, str] = Field(default_factory=dict)
    description: str = "edgefleet device agent"
    restart_sec: float = Field(default=5.0, gt=0, description="systemd: pause before restarting a crashed agent")
    stop_timeout_s: float = Field(default=20.0, gt=0, description="SIGTERM, then SIGKILL after this long")
    start_timeout_s: float = Field(default=300.0, gt=0, description="systemd: READY=1 (first model loaded) within")
    watchdog_s: float = Field(default=60.0, gt=0, description="systemd: restart when no frame is inferred for this "
                              "long while inference is under way (a hung Edge TPU invoke)")
    device_classes: tuple[str, ...] = Field(default=TPU_DEVICE_CLASSES, description="systemd: /proc/devices "
                                            "classes the service may open (DeviceAllow=), see device_access")

    @property
    def files_dir(self) -> str:
        """Where the env, pid and log files live."""
        return self.service_dir or self.state_dir

    @property
    def pid_file(self) -> str:
        return f"{self.files_dir}/{self.name}.pid"

    @property
    def log_file(self) -> str:
        return f"{self.files_dir}/{self.name}.log"

    @property
    def env_file(self) -> str:
        return f"{self.files_dir}/{self.name}.env"


class _Manager(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="edgefleet-agent", pattern=SERVICE_NAME_PATTERN, description="the service's name")


class SystemdService(_Manager):
    """systemd (production): a unit in /etc/systemd/system, restarted by systemd when the agent crashes."""

    manager: Literal["systemd"] = "systemd"
    restart_sec: float = Field(default=5.0, gt=0, description="pause before systemd restarts a crashed agent")
    watchdog_s: float = Field(default=60.0, gt=0, description="restart the agent when no frame was inferred for "
                              "this long while inference is under way (a hung Edge TPU invoke); above the slowest "
                              "model's inference time")
    start_timeout_s: float = Field(default=300.0, gt=0, description="the agent's start (its first model loaded "
                                   "and probed on the Edge TPU) may take this long before systemd gives up")


class ProcessService(_Manager):
    """No systemd as init (containers, the simulated fleet): `setsid nohup` and a pid file; no restarts."""

    model_config = ConfigDict(json_schema_extra=tag_required("manager"))

    manager: Literal["process"] = "process"


# How the agent runs as a service, by `manager` (systemd when absent); a key of the other manager is an error.
if TYPE_CHECKING:  # what a checker reads; at run time the annotated union below, which pydantic validates
    ServiceManager = SystemdService | ProcessService
else:
    ServiceManager = tagged_union(SystemdService, ProcessService, tag="manager", where="service", default="systemd")


def env_file_text(environment: dict[str, str]) -> str:
    """An environment file both systemd (`EnvironmentFile=`) and `sh` (`. file`) read the same way."""
    lines = []
    for key, value in sorted(environment.items()):
        if not key.isidentifier():
            raise ConfigError(f"environment variable name {key!r} is not valid", "use letters, digits and _")
        if any(char in value for char in "\n\"\\$`"):
            raise ConfigError(f"environment variable {key} has a newline, quote, backslash, $ or backtick",
                              "such values cannot be written safely for both systemd and sh: pass them in the "
                              "agent config instead")
        lines.append(f'{key}="{value}"')
    return "\n".join(lines) + ("\n" if lines else "")


def render_unit(spec: ServiceSpec, template: str | None = None) -> str:
    """The systemd unit for `spec`, from the packaged template (or `template` text).

    Raises:
        ConfigError: the template names a field that `spec` does not provide.
    """
    text = template if template is not None else \
        resources.files("edgefleet.flows").joinpath("templates", UNIT_TEMPLATE).read_text()
    if not _UNIX_USER.fullmatch(spec.user):
        raise ConfigError(f"user {spec.user!r} is not a valid user name for the systemd unit",
                          "use a plain login name (lowercase letters, digits, '_' or '-') in fleet.yaml")
    if not spec.name.strip("."):
        raise ConfigError(f"service name {spec.name!r} cannot name the agent's runtime directory (/run/<name>)",
                          "use a name with a letter or digit, e.g. edgefleet-agent")
    environment_file = _unit_value("environment file path", spec.env_file)
    if any(char.isspace() for char in environment_file):
        raise ConfigError(f"environment file path {spec.env_file!r} contains white space",
                          "use an agent root without spaces")
    values = {
        "description": _unit_value("description", spec.description), "user": spec.user,
        "exec_start": " ".join(_systemd_quote(_unit_value("command argument", arg).replace("$", "$$"))
                               for arg in spec.command),
        "environment_file": environment_file, "restart_sec": f"{spec.restart_sec:g}",
        "stop_timeout_s": f"{spec.stop_timeout_s:g}", "name": spec.name,
        "start_timeout_s": f"{spec.start_timeout_s:g}", "watchdog_s": f"{spec.watchdog_s:g}",
        "device_allow": _device_allow(spec.device_classes),
        "read_write_paths": _unit_value("agent root", spec.state_dir), "protect_home": protect_home(spec.state_dir),
    }
    try:
        return string.Template(text).substitute(values)
    except (KeyError, ValueError) as error:
        raise ConfigError(f"systemd unit template names an unknown field: {error}",
                          f"use only ${', $'.join(sorted(values))}") from None


def _device_allow(device_classes: tuple[str, ...]) -> str:
    try:
        return device_allow_lines(device_classes)
    except ValueError as error:
        raise ConfigError(str(error), "use class names from /proc/devices (e.g. video4linux)") from None


def protect_home(writable: str) -> str:
    """`ProtectHome=` for an agent that writes `writable`: `yes` (homes hidden) unless it lives in a home,
    then `read-only` (its ReadWritePaths= stays writable)."""
    homes = ("/home", "/root", "/run/user")
    return "read-only" if any(writable == home or writable.startswith(home + "/") for home in homes) else "yes"


_UNIX_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _unit_value(what: str, value: str) -> str:
    """A value made safe for a unit file: no control characters (a newline would add directives), and `%`
    doubled (systemd expands %-specifiers)."""
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ConfigError(f"{what} {value!r} contains a control character (a newline would add directives "
                          "to the systemd unit)", "remove it from fleet.yaml / the deploy-agent parameters")
    return value.replace("%", "%%")


def _systemd_quote(arg: str) -> str:
    if arg and all(char.isalnum() or char in "/._-=:@," for char in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class ServiceCommands:
    """Shell commands that manage one service on a device."""

    restart: str
    stop: str
    is_running: str
    """exits 0 when the service runs."""
    pid: str
    """prints the main pid."""


def process_commands(spec: ServiceSpec) -> ServiceCommands:
    """Commands of the `process` manager (setsid + pid file), see the module docstring."""
    pid_file, log_file, env_file = (shlex.quote(p) for p in (spec.pid_file, spec.log_file, spec.env_file))
    command = shlex.join(spec.command)
    stop_ticks = max(1, round(spec.stop_timeout_s * 10))
    stop = (f'if [ -f {pid_file} ]; then pid=$(cat {pid_file}); '
            f'if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; i=0; '
            f'while kill -0 "$pid" 2>/dev/null && [ $i -lt {stop_ticks} ]; do sleep 0.1; i=$((i+1)); done; '
            f'kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"; fi; rm -f {pid_file}; fi')
    # As spec.user when the manager runs as someone else (root through sudo): setpriv execs, so $! stays the
    # agent's own pid.
    user = shlex.quote(spec.user)
    as_user = (f'$([ "$(id -un)" = {user} ] || echo setpriv --reuid={user} --regid="$(id -g {user})" '
               f'--init-groups --)')
    start = (f'mkdir -p {shlex.quote(spec.files_dir)} && '
             f'( if [ -f {env_file} ]; then set -a; . {env_file}; set +a; fi; '
             f'setsid nohup {as_user} {command} >>{log_file} 2>&1 </dev/null & echo $! > {pid_file} )')
    is_running = f'[ -f {pid_file} ] && kill -0 "$(cat {pid_file})" 2>/dev/null'
    return ServiceCommands(restart=f"{stop}; {start}", stop=stop, is_running=is_running, pid=f"cat {pid_file}")


def systemd_commands(spec: ServiceSpec) -> ServiceCommands:
    """Commands of the `systemd` manager (the unit must be installed first)."""
    name = shlex.quote(f"{spec.name}.service")
    return ServiceCommands(
        restart=f"systemctl daemon-reload && systemctl enable {name} && systemctl restart {name}",
        stop=f"systemctl stop {name}",
        is_running=f"systemctl is-active --quiet {name}",
        pid=f"systemctl show --property MainPID --value {name}",
    )


def service_commands(manager: ServiceManagerName, spec: ServiceSpec) -> ServiceCommands:
    """The commands of `manager` for `spec`."""
    return systemd_commands(spec) if manager == "systemd" else process_commands(spec)


def unit_path(spec: ServiceSpec) -> str:
    """Where the systemd unit is installed."""
    return f"{SYSTEMD_UNIT_DIR}/{spec.name}.service"
