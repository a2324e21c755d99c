"""Simulated devices: a real OpenSSH `sshd` per device on a loopback port, each with its own host key,
authorized key and agent root, and (optionally) a real `edgefleet-agent run` process.

Used by the rollout tests, the demo and the rollout benchmark:

    with SimulatedFleet(tmp_dir, count=5, agent=AgentSettings(...)) as fleet:
        inventory = fleet.inventory_path          # fleet.yaml + known_hosts, ready for the rollout flow
        fleet.kill("sim-3")                       # the device vanishes: sshd and agent are killed

The agents are started with the deploy-agent flow's `process` service manager commands (setsid + pid file
under the agent root), so the deploy-agent flow can restart them exactly as it would on a real device.
Devices log in as the current user (root in CI containers: sshd is then run with `PermitRootLogin
prohibit-password`, keys only).
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from edgefleet.device.agent.runtime_files import RUNTIME_DIRECTORY_ENV, reader_path
from edgefleet.kernel.contracts.layout import STATUS_FILE
from edgefleet.kernel.contracts.status import AgentStatus, parse_status
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.local.processes import (
    LOOPBACK,
    ManagedProcess,
    accepts_connections,
    free_port,
    stop_process_group,
    wait_until,
)

log = logging.getLogger(__name__)

AGENT_POLL_S = 0.2  # how often wait_agents reads the status files
SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")  # sshd started as root needs it (Debian's init script creates it too)
AGENT_SERVICE = "edgefleet-agent"


class FleetSettings(BaseModel):
    """Tunables of the simulated fleet."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ready_timeout_s: float = Field(default=20.0, gt=0, description="wait for an sshd to listen")
    stop_timeout_s: float = Field(default=15.0, gt=0, description="SIGTERM, then SIGKILL after this long")
    max_startups: str = Field(default="100:30:200", description="sshd MaxStartups: many parallel connections")
    device_prefix: str = "sim"
    runtime_dirs: bool = Field(
        default=True, description="give each agent a runtime directory outside its root ($RUNTIME_DIRECTORY, "
        "<device>/run), as deploy-agent's systemd unit does: status.json is written there, read through the root")


@dataclass
class SimulatedDevice:
    """One simulated device: its sshd, its directories and its agent."""

    device_id: str
    port: int
    home: Path
    tags: tuple[str, ...] = ()
    sshd: ManagedProcess | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    service_dir: Path | None = None
    """where the agent's pid/env/log files are: deploy-agent's root-owned config directory once it installed
    the agent (`adopt_deployed`), else the agent root (the fleet's own agents run as the fleet's user)."""

    @property
    def root(self) -> Path:
        """The agent root."""
        return self.home / "agent-root"

    @property
    def runtime_dir(self) -> Path:
        """The agent's runtime directory when the fleet gives it one (systemd's RuntimeDirectory= stand-in)."""
        return self.home / "run"

    @property
    def host_key(self) -> Path:
        return self.home / "ssh_host_ed25519_key"

    @property
    def agent_config(self) -> Path:
        return self.home / "agent.yaml"

    @property
    def pid_file(self) -> Path:
        return (self.service_dir or self.root) / f"{AGENT_SERVICE}.pid"

    def agent_pid(self) -> int | None:
        """The agent's pid when it runs, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid


def find_sshd() -> Path:
    """The OpenSSH server binary.

    Raises:
        EdgefleetError: when openssh-server is not installed.
    """
    for candidate in SSHD_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    raise EdgefleetError("OpenSSH server (sshd) was not found", "install it: apt-get install -y openssh-server")


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc), children first listed before their own children."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


class SimulatedFleet:
    """A fleet of simulated devices on this machine.

    Args:
        base_dir: everything (keys, configs, agent roots, logs) goes under here.
        count: number of devices.
        agent: agent.yaml fields shared by every device (device_id and root are filled in), or None to
            start no agents.
        agent_env: environment of the agents (e.g. PUBSUB_EMULATOR_HOST).
        tags: device id -> tags (e.g. {"sim-1": ("canary",)}).
        settings: timeouts.
        key_registry: publish each device's own public key (made on the device at its first agent start)
            to this registry, as `deploy-agent` does, so a monitor checking signatures accepts its telemetry.
        enrolment_key: the fleet enrolment key file that signs those records (default: one made for this fleet,
            `<base_dir>/fleet-enrolment.key`; its public half, `enrolment_public_key()`, goes to the monitor's
            `identity.enrolment_keys`).
    """

    def __init__(self, base_dir: str | os.PathLike[str], count: int, *, agent: dict[str, Any] | None = None,
                 agent_env: dict[str, str] | None = None, tags: dict[str, tuple[str, ...]] | None = None,
                 settings: FleetSettings | None = None, key_registry: str | None = None,
                 enrolment_key: str | os.PathLike[str] | None = None) -> None:
        self.base_dir = Path(base_dir)
        self.key_registry = key_registry
        self.enrolment_key = Path(enrolment_key) if enrolment_key is not None else self.base_dir / "fleet-enrolment.key"
        self.settings = settings or FleetSettings()
        self.agent = agent
        self.agent_env = dict(agent_env or {})
        self.sshd = find_sshd()
        self.user = getpass.getuser()
        self.client_key = self.base_dir / "client_ed25519"
        self.known_hosts = self.base_dir / "known_hosts"
        self.inventory_path = self.base_dir / "fleet.yaml"
        self.agent_command = str(Path(sys.executable).with_name("edgefleet-agent"))
        tags = tags or {}
        self.devices: dict[str, SimulatedDevice] = {}
        for index in range(1, count + 1):
            device_id = f"{self.settings.device_prefix}-{index}"
            self.devices[device_id] = SimulatedDevice(device_id, 0, self.base_dir / device_id,
                                                      tuple(tags.get(device_id, ())))

    def __enter__(self) -> SimulatedFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Creates keys and configs, starts every sshd and agent, writes known_hosts and fleet.yaml."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        if not self.client_key.exists():
            _keygen(self.client_key, "edgefleet-rollout")
        try:
            for device in self.devices.values():
                self._prepare(device)
                self.start_sshd(device.device_id)
            self.write_known_hosts()
            self.write_inventory()
            if self.agent is not None:
                for device in self.devices.values():
                    self.start_agent(device.device_id)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops every agent and sshd (each waited for)."""
        for device in self.devices.values():
            self.stop_agent(device.device_id)
            if device.sshd is not None:
                device.sshd.stop()
            device.sshd = None

    def _prepare(self, device: SimulatedDevice) -> None:
        device.home.mkdir(parents=True, exist_ok=True)
        device.root.mkdir(parents=True, exist_ok=True)
        if self.settings.runtime_dirs:
            device.runtime_dir.mkdir(mode=0o755, exist_ok=True)  # systemd makes it before the agent starts
        if not device.host_key.exists():
            _keygen(device.host_key, f"host-{device.device_id}")
        shutil.copyfile(f"{self.client_key}.pub", device.home / "authorized_keys")

    def start_sshd(self, device_id: str) -> None:
        """Starts (or restarts) the device's sshd on its port (a new free port the first time)."""
        device = self.devices[device_id]
        if device.sshd is not None:
            device.sshd.stop()
        if not device.port:
            device.port = free_port()
        config = device.home / "sshd_config"
        config.write_text("\n".join([
            f"Port {device.port}", "ListenAddress 127.0.0.1", f"HostKey {device.host_key}",
            f"AuthorizedKeysFile {device.home / 'authorized_keys'}", f"PidFile {device.home / 'sshd.pid'}",
            "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "Subsystem sftp internal-sftp",
            f"MaxStartups {self.settings.max_startups}", "MaxSessions 64", "UseDNS no", "LogLevel INFO",
            "PrintMotd no", "AcceptEnv LANG LC_*", "",
        ]))
        port = device.port
        device.sshd = ManagedProcess(f"sshd of {device_id}", [str(self.sshd), "-D", "-e", "-f", str(config)],
                                     log_path=device.home / "sshd.log", stop_timeout_s=self.settings.stop_timeout_s)
        device.sshd.start().wait_ready(lambda: accepts_connections(LOOPBACK, port), self.settings.ready_timeout_s,
                                       waiting_for=f"listening on {LOOPBACK}:{port}")

    def write_known_hosts(self) -> None:
        """known_hosts with every device's host key under `[127.0.0.1]:port`."""
        lines = []
        for device in self.devices.values():
            key_type, key = Path(f"{device.host_key}.pub").read_text().split()[:2]
            lines.append(f"[127.0.0.1]:{device.port} {key_type} {key}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def write_inventory(self, path: Path | None = None, **defaults: Any) -> Path:
        """Writes fleet.yaml for this fleet (defaults override the generated ones)."""
        from edgefleet.flows.fleet.inventory import dump_inventory

        path = path or self.inventory_path
        base = {"user": self.user, "key_file": str(self.client_key), "agent_command": self.agent_command,
                "connect_timeout_s": 5, "connect_attempts": 2}
        base.update(defaults)
        devices = [{"id": d.device_id, "host": "127.0.0.1", "port": d.port, "tags": list(d.tags),
                    "agent_root": str(d.root)} for d in self.devices.values()]
        path.write_text(dump_inventory(devices, self.known_hosts, base))
        return path

    # --- agents ------------------------------------------------------------------------------------

    def service_spec(self, device_id: str) -> Any:
        """The `process` service spec of a device's agent."""
        from edgefleet.flows.deploy_agent.service import ServiceSpec

        device = self.devices[device_id]
        environment = dict(self.agent_env)
        if self.settings.runtime_dirs:  # as systemd does for a unit with RuntimeDirectory=
            environment[RUNTIME_DIRECTORY_ENV] = str(device.runtime_dir)
        return ServiceSpec(name=AGENT_SERVICE,
                           command=(self.agent_command, "run", "--config", str(device.agent_config)),
                           user=self.user, state_dir=str(device.root), environment=environment,
                           service_dir=str(device.service_dir) if device.service_dir else None,
                           stop_timeout_s=self.settings.stop_timeout_s)

    def adopt_deployed(self, config_dir: str | os.PathLike[str]) -> None:
        """The agents are now deploy-agent's (its `config_dir`): their pid files are read (and the agents
        stopped) there, in `<config_dir>/<device id>/`."""
        for device in self.devices.values():
            device.service_dir = Path(config_dir) / device.device_id

    def start_agent(self, device_id: str) -> int:
        """Writes the device's agent.yaml and (re)starts its agent; returns the agent's pid."""
        from edgefleet.flows.deploy_agent.service import env_file_text, process_commands

        if self.agent is None:
            raise EdgefleetError("this simulated fleet was created without agent settings",
                                 "pass agent={...} (agent.yaml fields) to SimulatedFleet")
        device = self.devices[device_id]
        document = {**self.agent, "device_id": device.device_id, "root": str(device.root)}
        device.agent_config.write_text(yaml.safe_dump(document, sort_keys=False))
        if self.key_registry is not None:
            self.publish_device_key(device_id)
        spec = self.service_spec(device_id)
        Path(spec.env_file).write_text(env_file_text(spec.environment))
        subprocess.run(["sh", "-c", process_commands(spec).restart], check=True, capture_output=True,
                       timeout=self.settings.stop_timeout_s * 2)
        pid = device.agent_pid()
        if pid is None:
            raise EdgefleetError(f"the agent of {device_id} did not start", f"see {spec.log_file}")
        return pid

    def enrolment_public_key(self) -> Path:
        """The public key file of the fleet's enrolment key (made now if missing): the monitor's
        `identity.enrolment_keys` for this fleet."""
        from edgefleet.flows.trust.device_key_records import development_enrolment_key

        if self.key_registry is None:
            raise EdgefleetError("this simulated fleet has no key registry", "pass key_registry= to SimulatedFleet")
        return development_enrolment_key(self.enrolment_key, registry_uri=self.key_registry)

    def publish_device_key(self, device_id: str) -> str:
        """Makes the device's key as its agent would (`edgefleet-agent device-key`) and publishes the public
        key to `key_registry`; returns the key id."""
        from edgefleet.device.trust.device_identity import load_or_create_device_key
        from edgefleet.flows.registry import open_registry_writer
        from edgefleet.flows.trust.device_key_records import register_device_key
        from edgefleet.kernel.trust.signatures import key_id, load_private_key

        self.enrolment_public_key()  # the enrolment key, made once (an error without a key registry)
        public_key = load_or_create_device_key(self.devices[device_id].root).public_key()
        register_device_key(open_registry_writer(str(self.key_registry)), device_id, public_key,
                            enrolment_key=load_private_key(self.enrolment_key), by="local fleet")
        return key_id(public_key)

    def stop_agent(self, device_id: str) -> None:
        """Stops the device's agent (SIGTERM, SIGKILL after the stop timeout) if it runs."""
        from edgefleet.flows.deploy_agent.service import process_commands

        device = self.devices[device_id]
        if device.agent_pid() is None:
            return
        subprocess.run(["sh", "-c", process_commands(self.service_spec(device_id)).stop], check=False,
                       capture_output=True, timeout=self.settings.stop_timeout_s * 2)

    def kill(self, device_id: str) -> None:
        """The device vanishes: its agent, its sshd and every SSH session it serves are killed (SIGKILL)."""
        device = self.devices[device_id]
        pid = device.agent_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        sshd = device.sshd.popen if device.sshd is not None else None
        if sshd is not None and sshd.poll() is None:
            for child in _descendants(sshd.pid):  # SSH sessions run in sessions of their own
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            stop_process_group(sshd, self.settings.stop_timeout_s, signal.SIGKILL)
        device.sshd = None

    def status(self, device_id: str) -> AgentStatus | None:
        """The device's agent status now; None when its agent has written none (or it cannot be read)."""
        try:
            return parse_status(reader_path(self.devices[device_id].root, STATUS_FILE).read_bytes())
        except FileNotFoundError:
            return None

    def wait_agents(self, predicate: Callable[[AgentStatus], bool], timeout_s: float,
                    device_ids: list[str] | None = None) -> dict[str, AgentStatus]:
        """Waits until `predicate(status)` holds for every device's agent status; returns the statuses.

        Raises:
            EdgefleetError: on timeout (naming the devices still waiting and their last status).
        """
        ids = device_ids or list(self.devices)

        def ready(status: AgentStatus | None) -> bool:
            return status is not None and predicate(status)

        statuses = wait_until(lambda: {device_id: self.status(device_id) for device_id in ids},
                              lambda found: all(ready(status) for status in found.values()),
                              timeout_s=timeout_s, interval_s=AGENT_POLL_S)
        waiting = [d for d in ids if not ready(statuses[d])]
        if waiting:
            raise EdgefleetError(f"agents {waiting} not ready within {timeout_s} s: "
                                 f"{ {d: statuses[d] for d in waiting} }", "see the agent logs")
        return {device_id: status for device_id, status in statuses.items() if status is not None}
