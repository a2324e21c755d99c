"""The local stack, assembled once: what `make demo`, `make sandbox` and the rollout tests start.

A `StackSpec` (frozen) says what to start; `local_stack(spec)` starts it, in order, on one ExitStack and yields
a `LocalStack` (frozen): what was started. Leaving the block stops everything in reverse order, also on
Ctrl-C or failure half-way:

    with local_stack(StackSpec(workdir=work, fleet=FleetSpec(devices=3, agent=fields))) as stack:
        stack.fleet.inventory_path, stack.registry_dir, stack.monitor_config_path ...

1. this process's environment points at the emulators (PUBSUB_EMULATOR_HOST; STORAGE_EMULATOR_HOST unset: the
   registry is a local directory); restored on leaving;
2. the Pub/Sub emulator (started, or the running one `pubsub.host` names) and the local twin of the cloud
   resources in the spec's project (`edgefleet.local.twin`), the registry directory among them;
3. the release signing key (a development key made on first use, unless the file exists) and the fleet
   enrolment key (development, made on first use);
4. the fleet monitor's configuration (written to `monitor.yaml`), and the monitor itself in a thread of this
   process unless the spec leaves it to a deployment;
5. the simulated fleet (`edgefleet.local.fleet`): an sshd per device, and agents when the spec has agent settings
   (each device given the release public key and, optionally, an activated version first, as deploy-agent and
   `edgefleet-agent install --activate` would); every agent waited for until it runs;
6. a Prefect server of its own (`edgefleet.local.ui`), with the deployments and a worker when the spec names a
   prefect.yaml.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from edgefleet.kernel.errors import EdgefleetError
from edgefleet.local.emulators import PubSubEmulator
from edgefleet.local.fleet import FleetSettings, SimulatedFleet
from edgefleet.local.twin import PUBSUB_EMULATOR_ENV, STORAGE_EMULATOR_ENV, TwinSettings, TwinState
from edgefleet.local.ui import LocalPrefectUi
from edgefleet.local.workdir import WorkdirFiles
from edgefleet.monitor.config import DriftWatchConfig, IdentityConfig, IngestConfig, MonitorConfig

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]  # src/edgefleet/local/stack.py
MONITOR_STOP_TIMEOUT_S = 30.0
DEMO_FRAME_SIZE = 64  # pixels: the demo dataset's images, what the simulated cameras show
DEMO_FRAME_SEED = 99


class PubSubSpec(BaseModel):
    """The Pub/Sub emulator: one of the stack's own, or a running one (the tests' session emulator)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str | None = Field(default=None, description="host:port of a running emulator; None: start one")
    port: int = Field(default=0, ge=0, le=65535, description="the started emulator's port; 0: any free one")


class MonitorSpec(BaseModel):
    """The fleet monitor of the stack."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count_bucket_s: float = Field(default=5.0, gt=0, description="its time buckets (short-lived versions still "
                                                                 "get their own)")
    drift_interval_s: float | None = Field(default=None, gt=0, description="the drift watch's tick and settle "
                                                                           "time; None: the monitor's defaults")
    ingest_batch_max_wait_s: float | None = Field(default=None, gt=0, description="None: the monitor's default")
    in_process: bool = Field(default=True, description="run it in a thread of this process; off: only its "
                                                       "config is written (the sandbox runs the deployment)")


class FleetSpec(BaseModel):
    """The simulated devices."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    devices: int = Field(ge=1, le=20)
    device_prefix: str = Field(default="sim", min_length=1, description="device ids: <prefix>-1, <prefix>-2 ...")
    tags: dict[str, tuple[str, ...]] = Field(default_factory=dict, description="device id -> tags")
    agent: dict[str, Any] | None = Field(
        default=None, description="agent.yaml fields every device's agent shares (device_id and root filled in); "
                                  "None: no agents (deploy-agent installs them)")
    activated: Path | None = Field(default=None, description="a version directory installed and activated on "
                                                             "every device before its agent starts")
    ready_timeout_s: float = Field(default=120.0, gt=0, description="wait for every agent to run")


class PrefectSpec(BaseModel):
    """A Prefect server of the stack's own, in its own session (Ctrl-C reaches the caller only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefect_file: Path | None = Field(default=None, description="its deployments and a worker; None: the server "
                                                                "alone, for flows run in this process")
    port: int = Field(default=0, ge=0, le=65535, description="0: any free port")
    run_schedules: bool = False


class StackSpec(WorkdirFiles, BaseModel):
    """What the local stack starts, and where its files go (every path below `workdir`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workdir: Path
    project: str = Field(default="edgefleet-local", min_length=6, description="the emulator project")
    pubsub: PubSubSpec = PubSubSpec()
    monitor: MonitorSpec = MonitorSpec()
    fleet: FleetSpec | None = None
    prefect: PrefectSpec | None = None


@dataclass(frozen=True)
class StackKeys:
    """The stack's key files."""

    release_key: Path
    release_public_key: Path
    enrolment_key: Path
    enrolment_public_key: Path


@dataclass(frozen=True)
class LocalStack:
    """What `local_stack` started (None: a part the spec did not ask for, or that runs elsewhere)."""

    spec: StackSpec
    pubsub_host: str
    emulator: PubSubEmulator | None
    twin: TwinState
    keys: StackKeys
    monitor: MonitorConfig
    fleet: SimulatedFleet | None
    prefect: LocalPrefectUi | None

    @property
    def registry_dir(self) -> Path:
        return self.spec.registry_dir

    @property
    def monitor_config_path(self) -> Path:
        return self.spec.monitor_config_path

    def check_alive(self) -> None:
        """Raises EdgefleetError naming the first part that stopped (emulator, a device's sshd, Prefect)."""
        check_alive(self.emulator, self.fleet, self.prefect)


def check_alive(emulator: PubSubEmulator | None, fleet: SimulatedFleet | None, prefect: LocalPrefectUi | None) -> None:
    """Raises EdgefleetError naming the first of these parts that stopped (a device: its sshd)."""
    if emulator is not None and emulator.process is not None:
        emulator.process.check_alive()
    for device in (fleet.devices.values() if fleet is not None else ()):
        if device.sshd is None or not device.sshd.running:
            raise EdgefleetError(f"the sshd of simulated device {device.device_id} stopped",
                                 f"see {device.home / 'sshd.log'}")
    if prefect is not None:
        prefect.check_alive()


@contextmanager
def local_stack(spec: StackSpec) -> Iterator[LocalStack]:
    """Starts what `spec` asks for (see the module's docstring); stops it all on leaving."""
    with ExitStack() as stack:
        spec.workdir.mkdir(parents=True, exist_ok=True)
        emulator, host = _pubsub(stack, spec)
        _environment(stack, {PUBSUB_EMULATOR_ENV: host, STORAGE_EMULATOR_ENV: None})
        twin = _twin(spec)
        keys = _keys(spec)
        monitor = _monitor(stack, spec, twin, keys)
        fleet = _fleet(stack, spec, host, keys) if spec.fleet is not None else None
        prefect = _prefect(stack, spec) if spec.prefect is not None else None
        yield LocalStack(spec, host, emulator, twin, keys, monitor, fleet, prefect)


def _environment(stack: ExitStack, values: Mapping[str, str | None]) -> None:
    """Sets (None: unsets) these variables of this process now, restores them when the stack stops."""
    before = {name: os.environ.get(name) for name in values}

    def restore() -> None:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    stack.callback(restore)
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _pubsub(stack: ExitStack, spec: StackSpec) -> tuple[PubSubEmulator | None, str]:
    if spec.pubsub.host is not None:
        return None, spec.pubsub.host
    log.info("starting the Pub/Sub emulator")
    emulator = stack.enter_context(PubSubEmulator(port=spec.pubsub.port, project=spec.project,
                                                  log_path=spec.workdir / "pubsub-emulator.log"))
    return emulator, emulator.host


def _twin(spec: StackSpec) -> TwinState:
    from edgefleet.local.twin import emulator_clients, twin_up

    return twin_up(emulator_clients(spec.project), TwinSettings(project=spec.project, registry_dir=spec.registry_dir))


def _keys(spec: StackSpec) -> StackKeys:
    from edgefleet.flows.trust.device_key_records import development_enrolment_key
    from edgefleet.flows.trust.release_key import public_key_path, resolve_signing_key
    from edgefleet.flows.trust.signing_params import SigningParams

    registry = str(spec.registry_dir)
    if not spec.release_key.exists():  # a key of the caller's own is kept as it is
        resolve_signing_key(SigningParams(dev_key_file=str(spec.release_key)), registry_uri=registry)
    enrolment_public = development_enrolment_key(spec.enrolment_key, registry_uri=registry)
    return StackKeys(spec.release_key, public_key_path(spec.release_key), spec.enrolment_key, enrolment_public)


def monitor_config(spec: StackSpec, twin: TwinState, keys: StackKeys) -> MonitorConfig:
    """The stack's monitor: its subscription on the twin; strict identity (only telemetry signed by a device
    whose key record, signed by the enrolment key, the registry holds); a release's calibration table taken
    only from a manifest the release key verifies."""
    settings = spec.monitor
    drift = DriftWatchConfig(public_key=keys.release_public_key)
    if settings.drift_interval_s is not None:  # the default tick (300 s) outlasts a demo
        drift = drift.model_copy(update={"interval_s": settings.drift_interval_s,
                                         "settle_s": settings.drift_interval_s})
    ingest = IngestConfig() if settings.ingest_batch_max_wait_s is None else \
        IngestConfig(batch_max_wait_s=settings.ingest_batch_max_wait_s)
    return MonitorConfig(project=spec.project, subscription=twin.monitor_subscription.rsplit("/", 1)[-1],
                         store_path=spec.store_path, count_bucket_s=settings.count_bucket_s, ingest=ingest,
                         identity=IdentityConfig(registry=str(spec.registry_dir),
                                                 enrolment_keys=(str(keys.enrolment_public_key),)),
                         drift=drift)


def _monitor(stack: ExitStack, spec: StackSpec, twin: TwinState, keys: StackKeys) -> MonitorConfig:
    config = monitor_config(spec, twin, keys)
    spec.monitor_config_path.write_text(yaml.safe_dump({"monitor": config.model_dump(mode="json")}))
    if spec.monitor.in_process:
        from edgefleet.monitor.service import run_monitor

        stop = threading.Event()
        thread = threading.Thread(target=run_monitor, args=(config, stop), name="fleet-monitor", daemon=True)
        thread.start()
        stack.callback(thread.join, MONITOR_STOP_TIMEOUT_S)
        stack.callback(stop.set)
    return config


def _fleet(stack: ExitStack, spec: StackSpec, host: str, keys: StackKeys) -> SimulatedFleet:
    fleet_spec = spec.fleet
    assert fleet_spec is not None
    with_agents = fleet_spec.agent is not None
    log.info("starting %d simulated devices (sshd%s each)", fleet_spec.devices, " + agent" if with_agents else "")
    # The fleet gets its own copy of the agent fields (a test may change them and restart agents; the spec stays).
    agent = copy.deepcopy(fleet_spec.agent)
    fleet = SimulatedFleet(spec.fleet_dir, fleet_spec.devices, agent=agent, tags=fleet_spec.tags,
                           agent_env={PUBSUB_EMULATOR_ENV: host},
                           settings=FleetSettings(device_prefix=fleet_spec.device_prefix),
                           # the agents' keys are registered as deploy-agent would; without agents it does
                           key_registry=str(spec.registry_dir) if with_agents else None,
                           enrolment_key=spec.enrolment_key)
    if with_agents:
        for device in fleet.devices.values():
            _install(device.root, keys.release_public_key, fleet_spec.activated)
    stack.enter_context(fleet)
    if with_agents:
        stack.callback(stop_agents_together, fleet)  # before the fleet's own stop, one device at a time
        fleet.wait_agents(lambda status: status.state == "running", fleet_spec.ready_timeout_s)
    return fleet


def _install(root: Path, release_public_key: Path, activated: Path | None) -> None:
    """What deploy-agent (the release public key) and `edgefleet-agent install --activate` leave on a device."""
    from edgefleet.device.store import ModelStore

    (root / "keys").mkdir(parents=True, exist_ok=True)
    shutil.copy(release_public_key, root / "keys" / "release.pub")
    if activated is not None:
        store = ModelStore(root)
        manifest = store.install(activated)
        store.activate(manifest.model, manifest.version)


def stop_agents_together(fleet: SimulatedFleet) -> None:
    """Every agent stopped at once (each drains its telemetry for up to its drain timeout)."""
    with ThreadPoolExecutor(max_workers=len(fleet.devices)) as pool:
        list(pool.map(fleet.stop_agent, fleet.devices))


def _prefect(stack: ExitStack, spec: StackSpec) -> LocalPrefectUi:
    from edgefleet.local.ui_settings import UiSettings

    prefect_spec = spec.prefect
    assert prefect_spec is not None
    log.info("starting a Prefect server%s", " with the deployments and a worker" if prefect_spec.prefect_file else "")
    settings = UiSettings(project_dir=REPO, prefect_home=spec.prefect_home, port=prefect_spec.port,
                          run_schedules=prefect_spec.run_schedules)
    if prefect_spec.prefect_file is not None:
        settings = settings.model_copy(update={"prefect_file": str(prefect_spec.prefect_file)})
    server = LocalPrefectUi(settings)
    stack.callback(server.stop)
    if prefect_spec.prefect_file:
        server.start()
    else:
        server.start_server()
    _environment(stack, {"PREFECT_API_URL": server.api_url, "PREFECT_UI_URL": server.ui_url,
                         "PREFECT_API_AUTH_STRING": server.auth_string or ""})
    return server


def sample_frames(dest: Path, frames_per_class: int) -> Path:
    """`dest` filled with the demo dataset's images (each class's few), what the simulated cameras show; kept
    when already there."""
    from edgefleet.flows.release.demo_dataset import generate_demo_dataset

    if dest.is_dir() and any(dest.iterdir()):
        return dest
    source = generate_demo_dataset(dest.with_name(f"{dest.name}-source"), frames_per_class, DEMO_FRAME_SIZE,
                                   seed=DEMO_FRAME_SEED)
    dest.mkdir(parents=True, exist_ok=True)
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        for image in sorted(class_dir.iterdir()):
            shutil.copy(image, dest / f"{class_dir.name}-{image.name}")
    return dest
