"""deploy-agent's steps on one device, each recorded (`StepRecord`: what ran there and how it ended), taking the
device's shell first (`DeviceShell`: the verified connection, as root through sudo for a login that is not).

The decisions (where the agent root may be, whether the config directory is safe, whether the wheel must be sent)
are pure functions beside them, tested without a device.
"""

from __future__ import annotations

import hashlib
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.flows.deploy_agent.device_access import device_access, source_kind
from edgefleet.flows.deploy_agent.install import ensure_libedgetpu, ensure_venv, install_lock, pip_install
from edgefleet.flows.deploy_agent.params import DeployAgentParams, check_wheel_name, pth_text
from edgefleet.flows.deploy_agent.privileged import as_agent_user
from edgefleet.flows.deploy_agent.selfupdate import agent_program
from edgefleet.flows.deploy_agent.service import ServiceSpec, render_unit, service_commands, unit_path
from edgefleet.flows.deploy_agent.unit_compat import FittedUnit, fit_unit, parse_systemd_version
from edgefleet.flows.fleet.connection import DeviceShell
from edgefleet.flows.fleet.inventory import DeviceSpec
from edgefleet.flows.fleet.shell import remote_path
from edgefleet.flows.registry import open_registry_writer
from edgefleet.flows.trust.device_key_records import register_device_key, resolve_enrolment_key
from edgefleet.kernel.configfile import validate
from edgefleet.kernel.contracts.layout import STATUS_FILE
from edgefleet.kernel.contracts.status import parse_status
from edgefleet.kernel.errors import ConfigError, EdgefleetError
from edgefleet.kernel.trust.signatures import key_id, public_key_from_bytes

FLOW_NAME = "deploy-agent"
STATUS_POLL_S = 0.5  # how often the agent's status file is read while waiting for it to run
STOP_MARGIN_S = 30  # beyond the service's own stop (and start) timeouts, for the restart command itself
q = shlex.quote


@dataclass(frozen=True)
class Deployed:
    """What a deploy left on a device."""

    pid: int
    device_key_id: str
    wheel_uploaded: bool
    detail: str


# --- decisions (pure) --------------------------------------------------------------------------------------

def agent_root_refusal(device: DeviceSpec) -> ConfigError | None:
    """Why the device's agent_root cannot be used (None: it can): a login that is not root runs the steps through
    sudo, which changes $HOME, so `~` paths would land elsewhere."""
    if device.user == "root" or device.agent_root.startswith("/"):
        return None
    return ConfigError(f"device {device.id}: agent_root {device.agent_root!r} must be absolute when the login is "
                       "not root (sudo changes $HOME)", "e.g. agent_root: /var/lib/edgefleet-agent")


def config_dir_refusal(device_id: str, config_dir: str, root: str) -> ConfigError | None:
    """Why `config_dir` cannot hold the trust anchor (None: it can): inside the agent root, the agent's user (who
    owns that) could replace it."""
    if config_dir != root and not config_dir.startswith(root.rstrip("/") + "/"):
        return None
    return ConfigError(f"device {device_id}: config_dir {config_dir} is inside the agent root {root}, which the "
                       "agent's user owns: it could replace its own trust anchor",
                       "give a config_dir outside the agent root (default <install_dir>/etc)")


def wheel_is_there(sha256sum_output: str, wheel_sha256: str) -> bool:
    """Whether `sha256sum`'s line for the remote wheel names the local wheel's digest."""
    return sha256sum_output.startswith(wheel_sha256)


def agent_document(params: DeployAgentParams, device: DeviceSpec, root: str, public_key: str,
                   credentials: str | None = None) -> str:
    """The device's agent.yaml, validated with the agent's own config model (errors name device and key); its
    release key is `public_key` and its Google credentials `credentials` (in the root-owned config directory,
    never under the agent root)."""
    from edgefleet.device.agent.config import AgentConfig

    document = {**params.agent, "device_id": device.id, "root": root, "public_key": public_key}
    if credentials is not None:
        document["credentials_file"] = credentials
    validate(AgentConfig, document, origin=f"agent config for device {device.id}",
             fix="fix the `agent` parameter (fields of agent.yaml)")
    return yaml.safe_dump(document, sort_keys=False)


def agent_service_spec(params: DeployAgentParams, device: DeviceSpec, root: str, config_dir: str) -> ServiceSpec:
    """The agent's service: it writes only `root`; its env file (and the process manager's pid and log files),
    which root reads, are in the root-owned `config_dir`."""
    return ServiceSpec(name=params.service.name, **params.restart_settings,
                       command=(agent_program(params.install_dir), "run", "--config", f"{config_dir}/agent.yaml"),
                       user=params.agent_user or device.user, state_dir=root, service_dir=config_dir,
                       environment=params.environment, description=f"edgefleet device agent ({device.id})",
                       device_classes=device_access(source_kind(params.agent)).device_classes)


# --- the fleet's keys ------------------------------------------------------------------------------------------

_ENROLMENT_KEY_LOCK = threading.Lock()  # devices are deployed in parallel: the development key is made once


def enrolment_key(params: DeployAgentParams) -> Ed25519PrivateKey | None:
    """The fleet enrolment key when device keys are published (`params.registry`), else None.

    Raises:
        ConfigError: no usable enrolment key (checked before any device is touched).
    """
    if params.registry is None:
        return None
    with _ENROLMENT_KEY_LOCK:
        return resolve_enrolment_key(params.enrolment, registry_uri=params.registry)


def publish_device_key(params: DeployAgentParams, device: DeviceSpec, public_key_text: str) -> str:
    """Records the device's own public key with the fleet, signed by the enrolment key (when `params.registry`);
    returns its key id."""
    key = public_key_from_bytes(public_key_text.encode(), source=f"device key of {device.id}")
    signer = enrolment_key(params)
    if params.registry is not None and signer is not None:
        register_device_key(open_registry_writer(params.registry), device.id, key, enrolment_key=signer,
                            by=FLOW_NAME, replace=params.replace_device_keys)
    return key_id(key)


# --- steps on the device ---------------------------------------------------------------------------------------

def check_unit(connection: DeviceShell, path: str) -> str:
    """`systemd-analyze verify` on the device when it has it; returns what it said (empty: fine or absent).

    Raises:
        EdgefleetError: systemd-analyze complained about the unit.
    """
    result = connection.run(f"command -v systemd-analyze >/dev/null || exit 0; systemd-analyze verify "
                            f"{q(path)} 2>&1", check=False)
    complaints = [line for line in result.stdout.splitlines() if path in line]
    if result.exit_code != 0 or complaints:
        raise EdgefleetError(f"device {connection.device.id}: systemd-analyze verify {path}: "
                             f"{'; '.join(complaints) or result.stdout.strip()}",
                             "fix the unit template or the deploy parameters (command, user, paths)")
    return result.stdout.strip()


def fitted_unit(connection: DeviceShell, spec: ServiceSpec) -> FittedUnit:
    """The agent's unit rendered for the device's systemd (`systemctl --version` there).

    Raises:
        ConfigError: the device has no systemctl, or a systemd older than the unit supports.
    """
    result = connection.run("systemctl --version", check=False)
    if result.exit_code != 0:
        raise ConfigError(f"device {connection.device.id}: `systemctl --version` failed ({result.stderr.strip()})",
                          "install the agent with service: {manager: process} where systemd is not the init")
    return fit_unit(render_unit(spec), parse_systemd_version(result.stdout))


def agent_root(connection: DeviceShell) -> str:
    """Creates the agent root; returns its real path."""
    device = connection.device
    refusal = agent_root_refusal(device)
    if refusal is not None:
        raise refusal
    root = remote_path(device.agent_root)
    return connection.run(f"mkdir -p {root} && cd {root} && pwd -P").stdout.strip()


def config_dir(connection: DeviceShell, params: DeployAgentParams, root: str) -> str:
    """Creates the device's root-owned config directory (mode 755, its keys/ too); returns its real path.

    Raises:
        ConfigError: it would lie inside the agent root (which the agent's user owns).
    """
    wanted = q(params.device_config_dir(connection.device.id))
    made = connection.run(f"mkdir -p {wanted}/keys && chown root:root {wanted} {wanted}/keys && "
                          f"chmod 755 {wanted} {wanted}/keys && cd {wanted} && pwd -P").stdout.strip()
    refusal = config_dir_refusal(connection.device.id, made, root)
    if refusal is not None:
        raise refusal
    return made


def send_wheel(connection: DeviceShell, params: DeployAgentParams, wheel: Path) -> tuple[str, bool]:
    """Uploads the wheel unless the same file is there; returns (its path on the device, whether it was sent)."""
    wheels_dir = f"{params.install_dir}/wheels"
    remote_wheel = f"{wheels_dir}/{check_wheel_name(wheel.name)}"
    present = connection.run(f"mkdir -p {q(wheels_dir)} && (sha256sum {q(remote_wheel)} 2>/dev/null || true)").stdout
    if wheel_is_there(present, hashlib.sha256(wheel.read_bytes()).hexdigest()):
        return remote_wheel, False
    connection.put(wheel, remote_wheel)
    return remote_wheel, True


def install_packages(connection: DeviceShell, params: DeployAgentParams, remote_wheel: str) -> tuple[str, str]:
    """Makes (or repairs) the venv and installs the pinned dependencies and the wheel; returns (venv, a note on
    libedgetpu for the result)."""
    install = params.install_dir
    venv = f"{install}/venv"
    ensure_venv(connection, params.python, venv, system_site_packages=params.system_site_packages,
                timeout_s=params.install_timeout_s)
    if params.extra_site_dirs:
        site = connection.run(f"{q(venv)}/bin/python -c 'import sysconfig; print(sysconfig.get_path(\"purelib\"))'"
                              ).stdout.strip()
        connection.write_text(f"{site}/edgefleet-extra-site.pth", pth_text(params.extra_site_dirs))
    note = ""
    if params.locked and not params.no_deps:  # the pinned, hashed dependencies first; the wheel finds them there
        python_version, machine = install_lock(connection, params.python, install, venv, params.wheelhouse,
                                               params.install_timeout_s)
        debs = Path(params.libedgetpu_debs).expanduser() if params.libedgetpu_debs else None
        note = ensure_libedgetpu(connection, python_version, machine, debs, install)
    pip = pip_install(venv, params.wheelhouse)
    requirement = q(f"{remote_wheel}[{params.extras}]") if params.extras else q(remote_wheel)
    connection.run(f"{pip}{' --no-deps' if params.no_deps else ''} {requirement} && "
                   f"{pip} --no-deps --force-reinstall {q(remote_wheel)}", timeout_s=params.install_timeout_s)
    return venv, note


def restart(connection: DeviceShell, params: DeployAgentParams, spec: ServiceSpec) -> tuple[int, str]:
    """Installs the service (systemd: the unit, fitted to its systemd and checked) and restarts it; returns the
    agent's pid and a note for the result (the hardening an old systemd goes without)."""
    commands = service_commands(params.service_manager, spec)
    note = ""
    start_s = 0.0
    if params.service_manager == "systemd":
        unit = fitted_unit(connection, spec)
        connection.write_text(unit_path(spec), unit.text)
        check_unit(connection, unit_path(spec))
        start_s = spec.start_timeout_s  # Type=notify: `systemctl restart` returns at READY=1
        if unit.omitted:
            note = f", systemd {unit.systemd_version} lacks {', '.join(unit.omitted)}"
    else:
        # An agent started before the config directory (its pid file in the agent root, which its user controls):
        # stopped as that user, who can signal only its own processes, never as root.
        legacy = service_commands("process", spec.model_copy(update={"service_dir": None}))
        connection.run(as_agent_user(params.agent_user, legacy.stop), timeout_s=spec.stop_timeout_s * 2 + STOP_MARGIN_S)
    connection.run(commands.restart, timeout_s=spec.stop_timeout_s * 2 + start_s + STOP_MARGIN_S)
    return int(connection.run(commands.pid).stdout.strip() or 0), note


def wait_running(connection: DeviceShell, params: DeployAgentParams, spec: ServiceSpec, pid: int) -> None:
    """Waits until the agent's status file says `running` with `pid`.

    Raises:
        EdgefleetError: not within start_timeout_s (names the log to read).
    """
    deadline = time.monotonic() + params.start_timeout_s
    status_path = q(f"{spec.state_dir}/{STATUS_FILE}")
    while True:
        current = parse_status(connection.run(f"cat {status_path} 2>/dev/null || true").stdout)
        if current is not None and current.pid == pid and current.state == "running":
            return
        if time.monotonic() > deadline:
            log_hint = spec.log_file if params.service_manager == "process" else f"journalctl -u {spec.name}"
            raise EdgefleetError(f"device {connection.device.id}: the agent did not report running within "
                                 f"{params.start_timeout_s:g} s (status: {current})", f"see {log_hint} on the device")
        time.sleep(STATUS_POLL_S)
