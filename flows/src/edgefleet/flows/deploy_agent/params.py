"""The deploy-agent flow's parameters: every value that reaches a device is typed as what it is.

A Prefect parameter becomes root's files and commands on the device (a `.pth` line, a sudoers rule, a unit,
a shell command), so paths are absolute normalised paths of safe characters, users are user names,
environment variables are names and values without newlines (`edgefleet.flows.fleet.device_values`).
"""

from __future__ import annotations

import re
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgefleet.flows.deploy_agent.selfupdate import SelfUpdateParams
from edgefleet.flows.deploy_agent.service import ServiceManager, ServiceManagerName, SystemdService
from edgefleet.flows.fleet.device_values import (
    CommandName,
    DevicePath,
    EnvName,
    EnvValue,
    PipExtras,
    UnixName,
    check_device_path,
)
from edgefleet.flows.rollout.params import Target
from edgefleet.flows.trust.device_key_records import EnrolmentKeyParams
from edgefleet.kernel.errors import ConfigError

DEFAULT_AGENT_USER = "edgefleet"
CONFIG_SUBDIR = "etc"
RELEASE_KEY_FILE = "keys/release.pub"  # under the device's config directory: the single anchor of older installs
RELEASE_KEYRING_DIR = "keys/release.d"  # under the device's config directory: the keyring (one <key id>.pub each)
CREDENTIALS_FILE = "google-credentials.json"  # under the device's config directory, 0640 root:<agent group>
DEVICE_ID_FIELD = "{device_id}"  # in credentials_file: one file per device
_WHEEL_NAME = re.compile(r"[A-Za-z0-9_.+-]+\.whl")


def check_wheel_name(name: str) -> str:
    """The wheel's file name if it is a plain wheel name (it becomes a path on the device)."""
    if not _WHEEL_NAME.fullmatch(name) or name.startswith("."):
        raise ConfigError(f"wheel file name {name!r} is not a plain wheel name",
                          "give the wheel as pip built it (name-version-tags.whl)")
    return name


def pth_text(directories: tuple[str, ...]) -> str:
    """The `.pth` file adding `directories` to the venv's path: absolute paths only, one per line (a line
    starting with `import` would be run by every interpreter start, as root for root's commands)."""
    for directory in directories:
        try:
            check_device_path(directory, "extra_site_dirs entry")
        except ValueError as error:
            raise ConfigError(str(error), "give the site-packages directories as absolute paths") from None
    return "".join(f"{directory}\n" for directory in directories)


def _flat_service_keys_in_schema(schema: dict[str, Any]) -> None:
    # Parameters written before `service:` (a deployment's defaults in prefect.yaml) pass Prefect's schema check.
    schema["properties"].update({
        "service_manager": {"title": "Service Manager (old form of service.manager)", "deprecated": True,
                            "enum": list(get_args(ServiceManagerName)), "type": "string"},
        "service_name": {"title": "Service Name (old form of service.name)", "deprecated": True, "type": "string"},
    })


class DeployAgentParams(BaseModel):
    """What to install where, and how to run it."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_flat_service_keys_in_schema)

    inventory: str
    target: Target = Target()
    agent: dict[str, Any] = Field(description="agent.yaml fields for every device; device_id and root are filled in")
    public_key: str = Field(
        description="the release public key file, or a keyring directory (<key id>.pub files, `edgefleet keys add`):"
        " installed root-owned as the keyring <config_dir>/<device id>/keys/release.d/, exactly (a key no longer in "
        "it is removed from the device: how a retired release key leaves the fleet)")
    registry: str | None = Field(
        default=None, description="publish each device's own public key here (fleet/devices/<id>.json), so the "
        "fleet monitor accepts its signed telemetry")
    replace_device_keys: bool = Field(
        default=False, description="accept a device key that differs from the one the fleet knows (re-imaged); "
        "the replaced key is revoked")
    enrolment: EnrolmentKeyParams = Field(
        default=EnrolmentKeyParams(), description="the fleet enrolment key that signs device key records (the "
        "monitor's identity.enrolment_keys holds its public half)")
    install_dir: DevicePath = Field(default="/opt/edgefleet", description="absolute; the venv is <install_dir>/venv")
    config_dir: DevicePath | None = Field(
        default=None, description="root-owned: each device's agent.yaml, keys/release.pub and service files go "
        "to <config_dir>/<device id>/; default <install_dir>/etc. Every parent must be root's and not writable "
        "by others (the agent's user must not reach its trust anchor, not even by renaming a directory)")
    python: CommandName = Field(default="python3", description="the device's Python that creates the venv")
    extras: PipExtras = "device"
    system_site_packages: bool = False
    no_deps: bool = Field(default=False, description="install only the wheel (offline; see module docstring)")
    extra_site_dirs: tuple[DevicePath, ...] = Field(default=(),
                                                    description="offline: added to the venv's path (.pth)")
    locked: bool = Field(default=True, description="install the device extra from the hashed lock of the device's "
                         "Python and CPU (pip --require-hashes; flows/src/edgefleet/flows/locks/); false lets pip "
                         "resolve unpinned")
    wheelhouse: DevicePath | None = Field(
        default=None, description="offline devices: a directory on the device holding the wheels of its lock (pip "
        "--no-index --find-links)")
    libedgetpu_debs: str | None = Field(
        default=None, description="a directory on this machine with the .deb files of the libedgetpu build paired "
        "with the runtime (flows/src/edgefleet/flows/locks/edgetpu-pairs.toml); each device gets the one for its "
        "CPU (and its "
        "distribution, by the file's suffix, when there are builds for several)")
    service: ServiceManager = Field(default=SystemdService(),
                                    description="how the agent runs: systemd, or process (no systemd as init)")
    environment: dict[EnvName, EnvValue] = Field(default_factory=dict, description="agent environment (e.g. PUBSUB_*)")
    credentials_file: str | None = Field(
        default=None, description="the devices' Google credentials on this machine (a service-account key or a "
        "workload identity federation configuration); '{device_id}' in it names one file per device. Installed "
        f"0640 root:<agent group> as <config_dir>/<device id>/{CREDENTIALS_FILE} and named in agent.yaml "
        "(credentials_file), read by the agent and doctor alike; a re-run replaces it atomically (rotation)")
    wheel: str | None = Field(default=None, description="a built wheel; default: build the project's")
    project_dir: str | None = Field(default=None, description="default: the source tree of this edgefleet")
    max_parallel: int = Field(default=8, ge=1)
    install_timeout_s: float = Field(default=600.0, gt=0, description="venv + pip install on one device")
    start_timeout_s: float = Field(default=60.0, gt=0, description="wait for the agent to report running")
    agent_user: UnixName | None = Field(
        default=DEFAULT_AGENT_USER, description="the system user created to run the agent (unprivileged: it cannot "
        "write its config or trust anchor). null runs the agent as the SSH login user, an explicit choice. Put the "
        "same in fleet.yaml's agent_user")
    self_update: SelfUpdateParams | None = Field(
        default=None, description="opt-in: install the root updater (edgefleet-agent self-update) and its systemd "
        "timer, pulling signed agent releases of this channel from `registry`, e.g. {channel: stable, interval: 1h}")
    sudo_password_secret: str | None = Field(
        default=None, description="Prefect Secret block with the sudo password of non-root logins; None: "
                                  "passwordless sudo")

    @model_validator(mode="before")
    @classmethod
    def _flat_service_keys(cls, data: Any) -> Any:
        """`service_manager:` / `service_name:` (parameters written before `service:`) read as `service:`."""
        if not isinstance(data, dict) or not {"service_manager", "service_name"} & data.keys():
            return data
        if "service" in data:
            raise ValueError("service_manager / service_name and service are both set: keep service alone, "
                             "e.g. service: {manager: process, name: edgefleet-agent}")
        data = dict(data)
        flat = {"manager": data.pop("service_manager", "systemd"), "name": data.pop("service_name", None)}
        return {**data, "service": {key: value for key, value in flat.items() if value is not None}}

    @model_validator(mode="after")
    def _one_credentials_path(self) -> DeployAgentParams:
        if "GOOGLE_APPLICATION_CREDENTIALS" in self.environment:
            raise ValueError("environment.GOOGLE_APPLICATION_CREDENTIALS reaches the service only (the rollout's "
                             "preflight doctor, run over SSH, never sees it): give the file as credentials_file, "
                             "which deploy-agent installs and names in agent.yaml for the agent and doctor alike")
        if self.credentials_file is not None and "credentials_file" in self.agent:
            raise ValueError("credentials_file is set both as a deploy-agent parameter and in agent: keep the "
                             "parameter (deploy-agent installs the file and names it in agent.yaml)")
        return self

    @property
    def service_manager(self) -> ServiceManagerName:
        return self.service.manager

    def device_config_dir(self, device_id: str) -> str:
        """The root-owned directory of one device's agent.yaml, release key and service files."""
        return f"{self.config_dir or f'{self.install_dir}/{CONFIG_SUBDIR}'}/{device_id}"

    @property
    def restart_settings(self) -> dict[str, float]:
        """The ServiceSpec fields only systemd uses."""
        if not isinstance(self.service, SystemdService):
            return {}
        return {"restart_sec": self.service.restart_sec, "watchdog_s": self.service.watchdog_s,
                "start_timeout_s": self.service.start_timeout_s}


