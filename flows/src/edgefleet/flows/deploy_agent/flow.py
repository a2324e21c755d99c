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

Each step is recorded (`edgefleet.flows.fleet.steps.StepRecord`: name, result, time, detail) in the device's
`DeployResult.steps`, and all devices' steps are shown as one Prefect table artifact (key `deploy-agent-steps`).

Not as root (issue 12, `edgefleet.flows.deploy_agent.privileged`): a login that is not root runs these steps
through sudo (passwordless, or `sudo_password_secret`); `agent_user` (default `edgefleet`) creates that system
user in the TPU groups and runs the agent as it, the public key and config staying root's. `agent_user: null`
runs the agent as the SSH login user: an explicit choice, never the default.

Offline installs (tests, air-gapped devices): `no_deps=True` installs only the wheel; the dependencies come
from `system_site_packages=True` (the device's Python packages) or from `extra_site_dirs` (directories
added to the venv's path with a .pth file).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from edgefleet.flows.deploy_agent.credentials import credentials_text, install_credentials
from edgefleet.flows.deploy_agent.device_access import device_access, source_kind
from edgefleet.flows.deploy_agent.device_steps import (
    FLOW_NAME,
    Deployed,
    agent_document,
    agent_root,
    agent_service_spec,
    check_unit,
    config_dir,
    enrolment_key,
    install_packages,
    publish_device_key,
    restart,
    send_wheel,
    wait_running,
)
from edgefleet.flows.deploy_agent.keyring import install_keyring, release_keyring_files, release_public_key_text
from edgefleet.flows.deploy_agent.params import CREDENTIALS_FILE, DEVICE_ID_FIELD, DeployAgentParams
from edgefleet.flows.deploy_agent.privileged import (
    SudoConnection,
    as_agent_user,
    create_user_command,
    ownership_command,
    sudo_password,
    sudoers_rule,
)
from edgefleet.flows.deploy_agent.selfupdate import current_link_command, install_updater
from edgefleet.flows.deploy_agent.service import env_file_text
from edgefleet.flows.fleet.connection import DeviceConnection, DeviceShell
from edgefleet.flows.fleet.inventory import DeviceSpec, load_inventory
from edgefleet.flows.fleet.parallel import run_each
from edgefleet.flows.fleet.steps import StepFailed, StepRecord, record_step, step_rows
from edgefleet.kernel.errors import ConfigError, EdgefleetError

q = shlex.quote
ARTIFACT_KEY = "deploy-agent-steps"  # stable: the latest run's table is found under it
# DeployAgentParams, release_public_key_text: where callers import them
__all__ = ["DeployAgentParams", "DeployResult", "deploy_agent", "release_public_key_text"]


class DeployResult(BaseModel):
    """How the deploy went on one device: its agent's pid and key, and every step it took there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str
    ok: bool
    pid: int | None = None
    device_key_id: str | None = None
    wheel_uploaded: bool = False
    detail: str = ""
    steps: tuple[StepRecord, ...] = ()

    @property
    def failed_step(self) -> str | None:
        """The step the deploy stopped at (None: none failed)."""
        return next((step.name for step in self.steps if not step.ok), None)


class DeployFailed(EdgefleetError):
    """The agent could not be installed or started on some devices."""


@dataclass(frozen=True)
class DeviceDeploy:
    """One device's deploy job (the `deploy-device` task's one argument)."""

    device: DeviceSpec
    known_hosts: Path
    params: DeployAgentParams
    wheel: Path
    release_key: dict[str, str]
    """The keyring to install: `<key id>.pub` -> text (read and checked once, before any device)."""


BUILD_LEFTOVERS = frozenset({"build", "dist", ".venv"})
"""What a build (or a developer) leaves at a source tree's top, not copied for a build of its own; `*.egg-info` and
`__pycache__` anywhere. Only at the top: a package folder named `build` or `dist` deeper down is source."""


def build_leftovers(root: Path) -> Callable[[str, list[str]], set[str]]:
    """A `shutil.copytree` ignore for the tree at `root`: `BUILD_LEFTOVERS` at its top, egg-info and caches anywhere."""
    def ignore(directory: str, names: list[str]) -> set[str]:
        top = Path(directory) == root
        return {name for name in names if (top and name in BUILD_LEFTOVERS) or name == "__pycache__"
                or name.endswith(".egg-info")}
    return ignore


@task(name="build-wheel", cache_policy=NO_CACHE)
def build_wheel(project_dir: Path, out_dir: Path) -> Path:
    """`pip wheel --no-deps` of the project (no network: the build backend is already installed), built from a
    private copy of the source tree: setuptools builds in the tree's `build/`, so two builds of one tree at once
    (two deploy runs, or a run beside a test) overwrite each other's files and fail."""
    if not (project_dir / "pyproject.toml").is_file():
        raise ConfigError(f"{project_dir} has no pyproject.toml", "pass project_dir (the edgefleet source tree) "
                          "or a built wheel")
    with tempfile.TemporaryDirectory(prefix="edgefleet-wheel-") as scratch:
        source = Path(scratch) / project_dir.name
        shutil.copytree(project_dir, source, ignore=build_leftovers(project_dir))
        completed = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                                    "-w", str(out_dir), str(source)], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise EdgefleetError(f"building the wheel of {project_dir} failed: {completed.stderr.strip()[-2000:]}",
                             "run `pip wheel --no-deps .` there to see the error")
    wheels = sorted(out_dir.glob("edgefleet-*.whl"))
    if not wheels:
        raise EdgefleetError(f"no edgefleet wheel was built in {out_dir}", "check the project's packaging")
    return wheels[-1]


@task(name="deploy-device", cache_policy=NO_CACHE, task_run_name="deploy-agent {job.device.id}")
def deploy_device(job: DeviceDeploy) -> DeployResult:
    """Installs and (re)starts the agent on one device; failures are returned (with the step that failed), not
    raised."""
    device = job.device
    steps: list[StepRecord] = []
    connection = DeviceConnection(device, job.known_hosts)
    try:
        with record_step(steps, "connect") as note:
            connection.open()
            note.detail = f"{device.address} (host key checked)"
        if device.user == "root":
            deployed = deploy_steps(connection, job, steps)
        else:
            with record_step(steps, "sudo") as note:
                privileged = SudoConnection(connection, sudo_password(job.params.sudo_password_secret))
                note.detail = f"{device.user} runs the steps as root through sudo"
            try:
                deployed = deploy_steps(privileged, job, steps)
            finally:
                privileged.close()
    except StepFailed as failure:
        error = failure.cause
        if not isinstance(error, EdgefleetError):
            raise error from failure
        return DeployResult(device_id=device.id, ok=False, detail=f"{error.message} (fix: {error.fix})",
                            steps=tuple(steps))
    except EdgefleetError as error:  # between steps (none expected): still a result, never a crashed task
        return DeployResult(device_id=device.id, ok=False, detail=f"{error.message} (fix: {error.fix})",
                            steps=tuple(steps))
    finally:
        connection.close()
    return DeployResult(device_id=device.id, ok=True, pid=deployed.pid, wheel_uploaded=deployed.wheel_uploaded,
                        device_key_id=deployed.device_key_id, detail=deployed.detail, steps=tuple(steps))


def deploy_steps(connection: DeviceShell, job: DeviceDeploy, steps: list[StepRecord]) -> Deployed:
    """The deploy's steps on one device, in order, each recorded in `steps`.

    Raises:
        StepFailed: naming the step, its cause the step's error.
    """
    params, device = job.params, connection.device
    credentials = None
    if params.credentials_file:  # read (and checked) before the device is changed
        with record_step(steps, "read credentials") as note:
            credentials = credentials_text(params.credentials_file, device.id)
            note.detail = params.credentials_file.replace(DEVICE_ID_FIELD, device.id)
    with record_step(steps, "agent root") as note:
        root = note.detail = agent_root(connection)
    with record_step(steps, "config dir") as note:
        config = note.detail = config_dir(connection, params, root)
    with record_step(steps, "install") as note:
        remote_wheel, uploaded = send_wheel(connection, params, job.wheel)
        venv, install_note = install_packages(connection, params, remote_wheel)
        connection.run(current_link_command(params.install_dir))  # the services start current/bin/edgefleet-agent
        note.detail = f"{job.wheel.name} {'uploaded' if uploaded else 'already there'}, venv {venv}{install_note}"
    config_path = f"{config}/agent.yaml"
    credentials_path = f"{config}/{CREDENTIALS_FILE}" if credentials is not None else None
    with record_step(steps, "keyring and config") as note:
        ring = install_keyring(connection, config, job.release_key)  # before the config naming it: never a gap
        connection.write_text(config_path, agent_document(params, device, root, ring, credentials_path))
        note.detail = f"{config_path}; release keys {', '.join(sorted(job.release_key))}"
    if params.agent_user:
        with record_step(steps, "agent user") as note:
            connection.run(create_user_command(params.agent_user, root,
                                               device_access(source_kind(params.agent)).groups))
            connection.run(ownership_command(params.agent_user, root, device.user))
            note.detail = f"{params.agent_user} owns {root}"
    if credentials is not None and credentials_path is not None:  # after the agent's user (and group) exists
        with record_step(steps, "credentials") as note:
            install_credentials(connection, credentials_path, credentials, params.agent_user or device.user)
            note.detail = credentials_path
    with record_step(steps, "device key") as note:
        # The agent makes its own key on the device (as its own user); only the public key comes back.
        device_public = connection.run(as_agent_user(params.agent_user, f"{q(venv)}/bin/edgefleet-agent device-key "
                                                                        f"--root {q(root)}")).stdout.strip()
        device_key_id = note.detail = publish_device_key(params, device, device_public)
    spec = agent_service_spec(params, device, root, config)
    with record_step(steps, "service") as note:
        connection.write_text(spec.env_file, env_file_text(spec.environment), mode=0o600)
        if params.agent_user and device.user != "root":
            rule_path, rule = sudoers_rule(device.user, params.agent_user, spec.command[0])
            connection.write_text(rule_path, rule, mode=0o440)
            connection.run(f"visudo -cqf {q(rule_path)} || {{ rm -f {q(rule_path)}; exit 1; }}")
        pid, service_note = restart(connection, params, spec)
        note.detail = f"{params.service_manager} {spec.name} restarted (pid {pid}{service_note})"
    with record_step(steps, "running") as note:
        wait_running(connection, params, spec, pid)
        note.detail = f"the agent reports running (pid {pid})"
    with record_step(steps, "updater") as note:
        service_note += install_updater(connection, params, spec, config_dir=config, public_key=ring,
                                        check_unit=check_unit, credentials_file=credentials_path)
        note.detail = "installed" if params.self_update else "none"
    return Deployed(pid=pid, device_key_id=device_key_id, wheel_uploaded=uploaded,
                    detail=f"running (pid {pid}, {params.service_manager}{service_note}, config {config_path})"
                    f"{install_note}")


def check_before_devices(params: DeployAgentParams) -> dict[str, str]:
    """Reads what every device gets (the release keyring, the enrolment key, the credentials) before touching any;
    returns the keyring.

    Raises:
        ConfigError: one of them is unusable.
    """
    release_key = release_keyring_files(params.public_key)
    enrolment_key(params)
    if params.credentials_file and DEVICE_ID_FIELD not in params.credentials_file:
        credentials_text(params.credentials_file, "any")  # per-device files: at each device
    return release_key


def the_wheel(params: DeployAgentParams, temp: Path) -> Path:
    """The given wheel, or the device distribution's, built now (`build-wheel`)."""
    if params.wheel is not None:
        return Path(params.wheel)
    import edgefleet.device

    # the checkout (device/src/edgefleet/device/__init__.py: parents[4]); agents get its device/
    source = Path(edgefleet.device.__file__).resolve().parents[4]
    project = Path(params.project_dir) if params.project_dir else source
    return build_wheel(project / "device", temp)


@flow(name=FLOW_NAME)
def deploy_agent(params: DeployAgentParams) -> list[DeployResult]:
    """Installs the device agent as a service on the target devices (see the module docstring)."""
    release_key = check_before_devices(params)
    logger = get_run_logger()
    inventory = load_inventory(params.inventory)
    devices = inventory.select(params.target.ids, params.target.tags)
    with tempfile.TemporaryDirectory(prefix="edgefleet-wheel-") as temp:
        wheel = the_wheel(params, Path(temp))
        logger.info("deploying %s to %d devices (%s)", wheel.name, len(devices), params.service_manager)
        jobs = [DeviceDeploy(device, inventory.known_hosts, params, wheel, release_key) for device in devices]
        results = run_each(deploy_device, jobs, max_workers=params.max_parallel)
    create_table_artifact(table=step_rows((result.device_id, result.steps) for result in results),
                          key=ARTIFACT_KEY, description=f"deploy-agent: {wheel.name} on {len(results)} devices")
    failed = [result for result in results if not result.ok]
    for result in results:
        (logger.info if result.ok else logger.error)("%s: %s", result.device_id, result.detail)
    if failed:
        raise DeployFailed(f"the agent could not be deployed on {', '.join(r.device_id for r in failed)}: "
                           f"{failed[0].device_id} at step {failed[0].failed_step!r}: {failed[0].detail}",
                           f"fix the cause and re-run (the flow is safe to repeat); every device's steps are in "
                           f"the run's artifact {ARTIFACT_KEY}")
    return results
