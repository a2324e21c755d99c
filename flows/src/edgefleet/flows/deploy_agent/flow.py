"""The `deploy-agent` flow: install the edgefleet device agent on devices over SSH and (re)start it.

Per device (in parallel, at most `max_parallel`):
1. upload the project's wheel (built once by the flow, or given) unless the same file is already there;
2. create a virtualenv (`<install_dir>/venv`) unless a working one exists (a clear error naming
   `python3-venv` when the device's Python cannot), install the hashed lock of the device's Python and CPU
   (`pip --require-hashes`, `flows/locks/`; offline from `wheelhouse`) and the libedgetpu paired with its
   runtime (`libedgetpu_debs`), then the wheel with the `device` extra (never TensorFlow, Prefect or Pulumi):
   `edgefleet.flows.deploy_agent.install`;
3. write the agent config (`<config_dir>/<device id>/agent.yaml`, validated here first) and the release
   keyring (`<config_dir>/<device id>/keys/release.d/<key id>.pub`, exactly the keys of `public_key`, a key file
   or a keyring directory; the single `keys/release.pub` of older installs is removed): a root-owned directory (default
   `<install_dir>/etc`) outside the agent root, so the agent's user can neither rewrite nor rename its trust
   anchor; the service's environment file (and the `process` manager's pid and log files) live there too,
   so nothing root runs reads a file the agent's user controls;
4. install the service and (re)start it:
   - `systemd`: the unit rendered from `templates/edgefleet-agent.service` for the device's systemd version
     and frame source (`unit_compat`, `device_access`) goes to
     `/etc/systemd/system/<name>.service`, is checked with `systemd-analyze verify` when the device has it,
     then `systemctl daemon-reload / enable / restart`;
   - `process` (no systemd as init: containers, the simulated test fleet): `setsid nohup` with a pid file,
     see `edgefleet.flows.deploy_agent.service`;
5. wait until the agent's status file says `running` with the new pid.

Not as root (issue 12, `edgefleet.flows.deploy_agent.privileged`): a login that is not root runs these steps
through sudo (passwordless, or `sudo_password_secret`); `agent_user` (default `edgefleet`) creates that system
user in the TPU groups and runs the agent as it, the public key and config staying root's. `agent_user: null`
runs the agent as the SSH login user: an explicit choice, never the default.

Offline installs (tests, air-gapped devices): `no_deps=True` installs only the wheel; the dependencies come
from `system_site_packages=True` (the device's Python packages) or from `extra_site_dirs` (directories
added to the venv's path with a .pth file).
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict

from edgefleet.flows.deploy_agent.credentials import credentials_text, install_credentials
from edgefleet.flows.deploy_agent.device_access import device_access, source_kind
from edgefleet.flows.deploy_agent.install import ensure_libedgetpu, ensure_venv, install_lock, pip_install
from edgefleet.flows.deploy_agent.keyring import install_keyring, release_keyring_files, release_public_key_text
from edgefleet.flows.deploy_agent.params import (
    CREDENTIALS_FILE,
    DEVICE_ID_FIELD,
    DeployAgentParams,
    check_wheel_name,
    pth_text,
)
from edgefleet.flows.deploy_agent.privileged import (
    SudoConnection,
    as_agent_user,
    create_user_command,
    ownership_command,
    sudo_password,
    sudoers_rule,
)
from edgefleet.flows.deploy_agent.selfupdate import agent_program, current_link_command, install_updater
from edgefleet.flows.deploy_agent.service import (
    ServiceSpec,
    env_file_text,
    render_unit,
    service_commands,
    unit_path,
)
from edgefleet.flows.deploy_agent.unit_compat import FittedUnit, fit_unit, parse_systemd_version
from edgefleet.flows.registry import (
    open_registry_writer,
    register_device_key,
    resolve_enrolment_key,
)
from edgefleet.flows.rollout.inventory import DeviceSpec, Inventory, load_inventory
from edgefleet.flows.rollout.ssh import DeviceConnection, remote_path
from edgefleet.kernel.configfile import validate
from edgefleet.kernel.contracts.layout import STATUS_FILE
from edgefleet.kernel.contracts.status import parse_status
from edgefleet.kernel.errors import ConfigError, EdgefleetError
from edgefleet.kernel.signing import key_id, public_key_from_bytes

FLOW_NAME = "deploy-agent"
STATUS_POLL_S = 0.5  # how often the agent's status file is read while waiting for it to run
# DeployAgentParams, release_public_key_text: where callers import them
__all__ = ["DeployAgentParams", "DeployResult", "deploy_agent", "release_public_key_text"]


class DeployResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str
    ok: bool
    pid: int | None = None
    device_key_id: str | None = None
    wheel_uploaded: bool = False
    detail: str = ""


class DeployFailed(EdgefleetError):
    """The agent could not be installed or started on some devices."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@task(name="build-wheel", cache_policy=NO_CACHE)
def build_wheel(project_dir: Path, out_dir: Path) -> Path:
    """`pip wheel --no-deps` of the project (no network: the build backend is already installed)."""
    if not (project_dir / "pyproject.toml").is_file():
        raise ConfigError(f"{project_dir} has no pyproject.toml", "pass project_dir (the edgefleet source tree) "
                          "or a built wheel")
    completed = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                                "-w", str(out_dir), str(project_dir)], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise EdgefleetError(f"building the wheel of {project_dir} failed: {completed.stderr.strip()[-2000:]}",
                             "run `pip wheel --no-deps .` there to see the error")
    wheels = sorted(out_dir.glob("edgefleet-*.whl"))
    if not wheels:
        raise EdgefleetError(f"no edgefleet wheel was built in {out_dir}", "check the project's packaging")
    return wheels[-1]


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


def check_unit(connection: DeviceConnection, path: str) -> str:
    """`systemd-analyze verify` on the device when it has it; returns what it said (empty: fine or absent).

    Raises:
        EdgefleetError: systemd-analyze complained about the unit.
    """
    result = connection.run(f"command -v systemd-analyze >/dev/null || exit 0; systemd-analyze verify "
                            f"{shlex.quote(path)} 2>&1", check=False)
    complaints = [line for line in result.stdout.splitlines() if path in line]
    if result.exit_code != 0 or complaints:
        raise EdgefleetError(f"device {connection.device.id}: systemd-analyze verify {path}: "
                             f"{'; '.join(complaints) or result.stdout.strip()}",
                             "fix the unit template or the deploy parameters (command, user, paths)")
    return result.stdout.strip()


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


@task(name="deploy-device", cache_policy=NO_CACHE, task_run_name="deploy-agent {device.id}")
def deploy_device(inventory: Inventory, device: DeviceSpec, params: DeployAgentParams, wheel: Path,
                  release_key: dict[str, str] | None = None) -> DeployResult:
    """Installs and (re)starts the agent on one device; failures are returned, not raised."""
    try:
        with DeviceConnection(device, inventory.known_hosts) as connection:
            key_text = release_key or release_keyring_files(params.public_key)
            if device.user == "root":
                return _deploy(connection, device, params, wheel, key_text)
            privileged = SudoConnection(connection, sudo_password(params.sudo_password_secret))
            try:
                return _deploy(privileged, device, params, wheel, key_text)
            finally:
                privileged.close()
    except EdgefleetError as error:
        return DeployResult(device_id=device.id, ok=False, detail=f"{error.message} (fix: {error.fix})")


def _deploy(connection: DeviceConnection, device: DeviceSpec, params: DeployAgentParams, wheel: Path,
            release_key: dict[str, str]) -> DeployResult:
    if device.user != "root" and not device.agent_root.startswith("/"):
        raise ConfigError(f"device {device.id}: agent_root {device.agent_root!r} must be absolute when the login is "
                          "not root (sudo changes $HOME)", "e.g. agent_root: /var/lib/edgefleet-agent")
    credentials = credentials_text(params.credentials_file, device.id) if params.credentials_file else None
    root = connection.run(f"mkdir -p {remote_path(device.agent_root)} && cd {remote_path(device.agent_root)} "
                          "&& pwd -P").stdout.strip()
    config_dir = _config_dir(connection, params, device, root)
    venv, uploaded, install_note = _install_venv(connection, params, wheel)
    connection.run(current_link_command(params.install_dir))  # the services start current/bin/edgefleet-agent
    q = shlex.quote
    config_path = f"{config_dir}/agent.yaml"
    ring = install_keyring(connection, config_dir, release_key)  # before the config naming it: never a gap
    credentials_path = f"{config_dir}/{CREDENTIALS_FILE}" if credentials is not None else None
    connection.write_text(config_path, agent_document(params, device, root, ring, credentials_path))
    if params.agent_user:
        connection.run(create_user_command(params.agent_user, root, device_access(source_kind(params.agent)).groups))
        connection.run(ownership_command(params.agent_user, root, device.user))
    if credentials is not None and credentials_path is not None:  # after the agent's user (and group) exists
        install_credentials(connection, credentials_path, credentials, params.agent_user or device.user)
    # The agent makes its own key on the device (as its own user); only the public key comes back, to be published.
    device_public = connection.run(as_agent_user(params.agent_user, f"{q(venv)}/bin/edgefleet-agent device-key "
                                                                    f"--root {q(root)}")).stdout.strip()
    device_key_id = publish_device_key(params, device, device_public)
    spec = agent_service_spec(params, device, root, config_dir)
    connection.write_text(spec.env_file, env_file_text(spec.environment), mode=0o600)
    if params.agent_user and device.user != "root":
        rule_path, rule = sudoers_rule(device.user, params.agent_user, spec.command[0])
        connection.write_text(rule_path, rule, mode=0o440)
        connection.run(f"visudo -cqf {q(rule_path)} || {{ rm -f {q(rule_path)}; exit 1; }}")
    pid, note = _restart(connection, params, spec)
    _wait_running(connection, params, device, spec, pid)
    note += install_updater(connection, params, spec, config_dir=config_dir, public_key=ring, check_unit=check_unit,
                            credentials_file=credentials_path)
    return DeployResult(device_id=device.id, ok=True, pid=pid, wheel_uploaded=uploaded, device_key_id=device_key_id,
                        detail=f"running (pid {pid}, {params.service_manager}{note}, config {config_path})"
                        f"{install_note}")


def agent_service_spec(params: DeployAgentParams, device: DeviceSpec, root: str, config_dir: str) -> ServiceSpec:
    """The agent's service: it writes only `root`; its env file (and the process manager's pid and log files),
    which root reads, are in the root-owned `config_dir`."""
    return ServiceSpec(name=params.service.name, **params.restart_settings,
                       command=(agent_program(params.install_dir), "run", "--config", f"{config_dir}/agent.yaml"),
                       user=params.agent_user or device.user, state_dir=root, service_dir=config_dir,
                       environment=params.environment, description=f"edgefleet device agent ({device.id})",
                       device_classes=device_access(source_kind(params.agent)).device_classes)


def _install_venv(connection: DeviceConnection, params: DeployAgentParams, wheel: Path) -> tuple[str, bool, str]:
    """Uploads the wheel (unless there), makes (or repairs) the venv and installs the pinned dependencies and the
    wheel; returns (venv, whether it was uploaded, a note on libedgetpu for the result)."""
    q = shlex.quote
    install = params.install_dir
    wheels_dir, venv = f"{install}/wheels", f"{install}/venv"
    remote_wheel = f"{wheels_dir}/{check_wheel_name(wheel.name)}"
    present = connection.run(f"mkdir -p {q(wheels_dir)} && (sha256sum {q(remote_wheel)} 2>/dev/null || true)").stdout
    uploaded = not present.startswith(_sha256(wheel))
    if uploaded:
        connection.put(wheel, remote_wheel)
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
    return venv, uploaded, note


def _config_dir(connection: DeviceConnection, params: DeployAgentParams, device: DeviceSpec, root: str) -> str:
    """Creates the device's root-owned config directory (mode 755, its keys/ too); returns its real path.

    Raises:
        ConfigError: it would lie inside the agent root (which the agent's user owns).
    """
    q = shlex.quote
    wanted = params.device_config_dir(device.id)
    config_dir = connection.run(f"mkdir -p {q(wanted)}/keys && chown root:root {q(wanted)} {q(wanted)}/keys && "
                                f"chmod 755 {q(wanted)} {q(wanted)}/keys && cd {q(wanted)} && pwd -P").stdout.strip()
    if config_dir == root or config_dir.startswith(root.rstrip("/") + "/"):
        raise ConfigError(f"device {device.id}: config_dir {config_dir} is inside the agent root {root}, which the "
                          "agent's user owns: it could replace its own trust anchor",
                          "give a config_dir outside the agent root (default <install_dir>/etc)")
    return config_dir


def fitted_unit(connection: DeviceConnection, spec: ServiceSpec) -> FittedUnit:
    """The agent's unit rendered for the device's systemd (`systemctl --version` there).

    Raises:
        ConfigError: the device has no systemctl, or a systemd older than the unit supports.
    """
    result = connection.run("systemctl --version", check=False)
    if result.exit_code != 0:
        raise ConfigError(f"device {connection.device.id}: `systemctl --version` failed ({result.stderr.strip()})",
                          "install the agent with service: {manager: process} where systemd is not the init")
    return fit_unit(render_unit(spec), parse_systemd_version(result.stdout))


def _restart(connection: DeviceConnection, params: DeployAgentParams, spec: ServiceSpec) -> tuple[int, str]:
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
        connection.run(as_agent_user(params.agent_user, legacy.stop), timeout_s=spec.stop_timeout_s * 2 + 30)
    connection.run(commands.restart, timeout_s=spec.stop_timeout_s * 2 + start_s + 30)
    return int(connection.run(commands.pid).stdout.strip() or 0), note


def _wait_running(connection: DeviceConnection, params: DeployAgentParams, device: DeviceSpec, spec: ServiceSpec,
                  pid: int) -> None:
    """Waits until the agent's status file says `running` with `pid`.

    Raises:
        EdgefleetError: not within start_timeout_s (names the log to read).
    """
    deadline = time.monotonic() + params.start_timeout_s
    status_path = shlex.quote(f"{spec.state_dir}/{STATUS_FILE}")
    while True:
        current = parse_status(connection.run(f"cat {status_path} 2>/dev/null || true").stdout)
        if current is not None and current.pid == pid and current.state == "running":
            return
        if time.monotonic() > deadline:
            log_hint = spec.log_file if params.service_manager == "process" else f"journalctl -u {spec.name}"
            raise EdgefleetError(f"device {device.id}: the agent did not report running within "
                                 f"{params.start_timeout_s:g} s (status: {current})", f"see {log_hint} on the device")
        time.sleep(STATUS_POLL_S)


@flow(name=FLOW_NAME)
def deploy_agent(params: DeployAgentParams) -> list[DeployResult]:
    """Installs the device agent as a service on the target devices (see the module docstring)."""
    release_key = release_keyring_files(params.public_key)  # before touching any device
    enrolment_key(params)  # likewise
    if params.credentials_file and DEVICE_ID_FIELD not in params.credentials_file:
        credentials_text(params.credentials_file, "any")  # likewise (per-device files: at each device)
    logger = get_run_logger()
    inventory = load_inventory(params.inventory)
    devices = inventory.select(params.target.ids, params.target.tags)
    with tempfile.TemporaryDirectory(prefix="edgefleet-wheel-") as temp:
        if params.wheel is not None:
            wheel = Path(params.wheel)
        else:
            import edgefleet.device

            # the checkout (device/src/edgefleet/device/__init__.py: parents[4]); agents get its device/
            source = Path(edgefleet.device.__file__).resolve().parents[4]
            project = Path(params.project_dir) if params.project_dir else source
            wheel = build_wheel(project / "device", Path(temp))
        logger.info("deploying %s to %d devices (%s)", wheel.name, len(devices), params.service_manager)
        with ThreadPoolTaskRunner(max_workers=params.max_parallel) as runner:
            futures = [runner.submit(deploy_device, {"inventory": inventory, "device": device, "params": params,
                                                     "wheel": wheel, "release_key": release_key})
                       for device in devices]
            results = [future.result() for future in futures]
    failed = [result for result in results if not result.ok]
    for result in results:
        (logger.info if result.ok else logger.error)("%s: %s", result.device_id, result.detail)
    if failed:
        raise DeployFailed(f"the agent could not be deployed on {', '.join(r.device_id for r in failed)}: "
                           f"{failed[0].detail}", "fix the cause and re-run (the flow is safe to repeat)")
    return results
