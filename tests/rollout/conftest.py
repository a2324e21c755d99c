"""Fixtures of the rollout tests: a real Prefect API, signed versions of a real Coral model in a local
registry, and a fleet of simulated devices (real sshd + real agent each) whose telemetry goes through the
Pub/Sub emulator to a running fleet monitor.

Versions: every version is Coral's mobilenet_v1_0.25_128_quant with a distinct build tag appended after
the flatbuffer (TFLite ignores trailing bytes), so each release has its own model bytes as a retrained
model would, while inference and golden outputs stay those of the real model. The "bad" version carries
golden outputs computed from another model, so it fails the device's smoke test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import pytest
import yaml

from edgefleet.device.runtime.engine import Engine
from edgefleet.device.runtime.golden import compute_golden
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import development_enrolment_key, open_registry_writer
from edgefleet.flows.release.bundle import create_version_dir
from edgefleet.kernel.signing import generate_keypair, save_private_key, save_public_key
from edgefleet.local.fleet import SimulatedFleet

MODEL = "imagenet"
MODEL_FILE = "mobilenet_v1_0.25_128_quant.tflite"
OTHER_MODEL_FILE = "mobilenet_v2_1.0_224_quant.tflite"
GOLDEN_SEEDS = (1, 2)
DEVICES = 5


class Releases:
    """Builds signed versions (as the release pipeline would) and publishes them to a local registry."""

    def __init__(self, coral: Path, base: Path) -> None:
        self.coral = coral
        self.base = base
        self.private_key, self.public_key = generate_keypair()
        self.public_key_path = save_public_key(self.public_key, base / "release.pub")
        self.private_key_path = save_private_key(self.private_key, base / "release.key")
        self.registry_dir = base / "registry"
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        self.registry = open_registry_writer(self.registry_dir)
        with Engine.open(coral / MODEL_FILE) as engine:
            self.golden = compute_golden(engine, GOLDEN_SEEDS)
        with Engine.open(coral / OTHER_MODEL_FILE) as engine:
            self.bad_golden = compute_golden(engine, GOLDEN_SEEDS)

    def build(self, version: str, *, bad: bool = False) -> Path:
        dest = self.base / "builds" / version
        if dest.exists():
            return dest
        model_bytes = (self.coral / MODEL_FILE).read_bytes() + b"\0" * 16 + f"edgefleet-build:{version}".encode()
        create_version_dir(dest, {"model_cpu.tflite": model_bytes, "labels.txt": self.coral / "imagenet_labels.txt"},
                           private_key=self.private_key, model=MODEL, version=version,
                           golden=self.bad_golden if bad else self.golden)
        return dest

    def publish(self, version: str, *, bad: bool = False) -> str:
        self.registry.publish_version(MODEL, version, self.build(version, bad=bad))
        return version


@dataclass
class World:
    """Everything a rollout test needs."""

    releases: Releases
    fleet: SimulatedFleet
    monitor_config: Path
    work_dir: Path
    base: Path

    def params(self, **overrides: object):  # -> RolloutParams
        from edgefleet.flows.rollout.params import RolloutParams

        document: dict[str, object] = {
            "inventory": str(self.fleet.inventory_path), "registry": str(self.releases.registry_dir),
            "model": MODEL, "waves": [1, "100%"], "max_parallel": 8, "monitor_config": str(self.monitor_config),
            "work_dir": str(self.work_dir), "public_key": str(self.releases.public_key_path),
            "signing": {"key_file": str(self.releases.private_key_path)},
            "health": {"timeout_s": 60, "poll_interval_s": 0.5},
            "canary": {"min_live_inferences": 5, "min_samples": 20, "min_error_samples": 40, "timeout_s": 60},
            # the tests follow named devices through the waves: inventory order, one canary first
            "wave_selection": {"order": "inventory", "first_wave_min": 1},
        }
        document.update(overrides)
        return RolloutParams.model_validate(document)

    def running_versions(self) -> dict[str, str | None]:
        return {device_id: status.version if (status := self.fleet.status(device_id)) else None
                for device_id in self.fleet.devices}

    def current(self, device_id: str) -> str | None:
        return ModelStore(self.fleet.devices[device_id].root).pointer(MODEL, "current")

    def currents(self) -> set[str | None]:
        """The version every device's `current` pointer names (one element when the fleet agrees)."""
        return {self.current(device_id) for device_id in self.fleet.devices}

    def record(self, rollout_id: str) -> dict:
        """The rollout record the flow keeps in the registry."""
        from edgefleet.flows.registry import rollout_key

        return self.releases.registry.get_json(rollout_key(rollout_id))


def _agent_settings(frames: Path, project: str, topic: str, max_fps: float) -> dict:
    return {
        "model": MODEL,
        "source": {"kind": "images", "path": str(frames), "max_fps": max_fps},
        "telemetry": {"mode": "summary", "summary_interval_s": 0.5, "pubsub_project": project,
                      "pubsub_topic": topic, "publish_timeout_s": 5},
        "status": {"interval_s": 0.5},
        "swap": {"watch_interval_s": 0.3},
        # a shadow candidate, when a rollout's shadow wave names one, runs on half the frames (idle otherwise)
        "shadow": {"share": 0.5, "report_interval_s": 0.5},
        "drain_timeout_s": 3,
    }


START_VERSION = "1.0.0"
# The agents' frame rate. The judge's sample counts (World.params) are frames, so the rate sets how long every
# wave waits for its evidence: at 5 fps a rollout test spent most of its time waiting for frames (CI time:
# test_rollout_flow_full took 259 s at 5 fps against 131 s at 20, run side by side on the same loaded machine,
# and less CPU in all: the tiny model's frames cost less than the servers idling meanwhile). 20 is the demo's
# rate too.
AGENT_MAX_FPS = 20.0
# Every device has run its version this many frames when a world is handed over: enough history for the
# canary judge's `min_samples` (World.params) before anything activates.
READY_FRAMES = 20
READY_TIMEOUT_S = 120
MONITOR_STOP_TIMEOUT_S = 30
EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"


@pytest.fixture(autouse=True)
def _emulator_env_restored() -> Iterator[None]:
    """No rollout test leaves PUBSUB_EMULATOR_HOST changed for the tests after it (the session-wide world set
    it for good, so later tests' clients went to the emulator whatever they meant)."""
    before = os.environ.get(EMULATOR_ENV)
    yield
    assert os.environ.get(EMULATOR_ENV) == before, f"{EMULATOR_ENV} leaked: set it with monkeypatch"


class StartWorld(Protocol):
    def __call__(self, *, running: str = START_VERSION, published: tuple[str, ...] = (),
                 max_fps: float = AGENT_MAX_FPS) -> World: ...


@pytest.fixture
def start_world(coral_data: Path, pubsub_emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                unique_name: str) -> Iterator[StartWorld]:
    """`start_world(running=..., published=..., max_fps=...)`: a world of the test's own (nothing shared with another
    test, so the tests run in any order and on any worker): 5 simulated devices running `running` (published,
    and named by the signed `canary` channel), the versions in `published` published too, and a running fleet
    monitor on a Pub/Sub topic of its own."""
    with ExitStack() as stack:
        def start(*, running: str = START_VERSION, published: tuple[str, ...] = (),
                  max_fps: float = AGENT_MAX_FPS) -> World:
            return _start_world(stack, coral_data, pubsub_emulator, tmp_path / "world", monkeypatch,
                                unique_name, running, published, max_fps)

        yield start


@pytest.fixture
def world(start_world: StartWorld) -> World:
    """A world of the test's own with every device running 1.0.0 (see `start_world`)."""
    return start_world()


def _start_world(stack: ExitStack, coral_data: Path, pubsub_emulator, base: Path, monkeypatch: pytest.MonkeyPatch,
                 unique_name: str, running: str, published: tuple[str, ...], max_fps: float) -> World:
    from edgefleet.monitor import MonitorConfig

    base.mkdir()
    # This process's Pub/Sub clients (the monitor's) use the emulator; restored after the test.
    monkeypatch.setenv(EMULATOR_ENV, pubsub_emulator.host)
    project, topic_id = pubsub_emulator.project, f"rollout-telemetry-{unique_name}"
    subscription_id = f"rollout-monitor-{unique_name}"
    _create_topic(project, topic_id, subscription_id)
    releases = Releases(coral_data, base)
    # Strict (the default): the fleet registers each device's own key in the registry as its agent starts, in a
    # record signed by the fleet's enrolment key (the monitor lists its public half).
    enrolment_key = base / "fleet-enrolment.key"
    enrolment_public = development_enrolment_key(enrolment_key, registry_uri=str(releases.registry_dir))
    monitor_config = MonitorConfig(project=project, subscription=subscription_id, store_path=base / "fleet.sqlite",
                                   count_bucket_s=1.0, ingest={"batch_max_wait_s": 0.2},
                                   identity={"registry": str(releases.registry_dir),
                                             "enrolment_keys": [str(enrolment_public)]})
    monitor_path = base / "monitor.yaml"
    monitor_path.write_text(yaml.safe_dump(monitor_config.model_dump(mode="json")))
    stack.enter_context(_running_monitor(monitor_config))

    for version in sorted({*published, running}):
        releases.publish(version)
    releases.registry.promote(MODEL, running, "canary", by="test", signing_key=releases.private_key)
    frames = base / "frames"
    frames.mkdir()
    for name in ("cat.bmp", "parrot.jpg", "grace_hopper.bmp"):
        shutil.copy(coral_data / name, frames / name)
    fleet = SimulatedFleet(base / "fleet", DEVICES, agent=_agent_settings(frames, project, topic_id, max_fps),
                           agent_env={EMULATOR_ENV: pubsub_emulator.host},
                           tags={"sim-1": ("canary",), "sim-2": ("canary",)},
                           key_registry=str(releases.registry_dir), enrolment_key=enrolment_key)
    # Every device starts on `running`, installed the way `edgefleet-agent install --activate` would.
    for device in fleet.devices.values():
        save_public_key(releases.public_key, device.root / "keys" / "release.pub")
        store = ModelStore(device.root, public_key=releases.public_key)
        store.install(releases.build(running))
        store.activate(MODEL, running)
    stack.enter_context(fleet)
    stack.callback(_stop_agents_together, fleet)  # before the fleet's own stop, which goes one device at a time
    fleet.wait_agents(lambda s: s.state == "running" and s.version == running and s.frames >= READY_FRAMES,
                      timeout_s=READY_TIMEOUT_S)
    return World(releases, fleet, monitor_path, base / "work", base)


def _stop_agents_together(fleet: SimulatedFleet) -> None:
    """Every agent stopped at once (each drains its telemetry for up to drain_timeout_s)."""
    with ThreadPoolExecutor(max_workers=len(fleet.devices)) as pool:
        list(pool.map(fleet.stop_agent, fleet.devices))


def _create_topic(project: str, topic_id: str, subscription_id: str) -> None:
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    with subscriber:
        topic = publisher.create_topic(name=publisher.topic_path(project, topic_id)).name
        subscriber.create_subscription(name=subscriber.subscription_path(project, subscription_id), topic=topic)
    if hasattr(publisher, "transport"):
        publisher.transport.close()


@contextmanager
def _running_monitor(config) -> Iterator[None]:  # noqa: ANN001 - a MonitorConfig
    from edgefleet.monitor.service import run_monitor

    stop = threading.Event()
    thread = threading.Thread(target=run_monitor, args=(config, stop), name="fleet-monitor", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(MONITOR_STOP_TIMEOUT_S)


class DeployInputs(NamedTuple):
    """What a deploy-agent run takes from the pipeline: the release key, a frames folder, the built wheel."""

    public_key: Path
    frames: Path
    wheel: Path


def deploy_inputs(tmp_path: Path, frames_parent: Path, coral_data: Path) -> DeployInputs:
    """A fresh release public key, a frames folder (one Coral test image) under `frames_parent`, a wheel."""
    import edgefleet.device
    from edgefleet.flows.deploy_agent.flow import build_wheel

    _, public_key = generate_keypair()
    key_path = save_public_key(public_key, tmp_path / "release.pub")
    frames = frames_parent / "frames"
    frames.mkdir()
    shutil.copy(coral_data / "cat.bmp", frames / "cat.bmp")
    (tmp_path / "dist").mkdir()
    wheel = build_wheel.fn(Path(edgefleet.device.__file__).resolve().parents[3], tmp_path / "dist")
    return DeployInputs(key_path, frames, wheel)


@pytest.fixture
def agent_user() -> Iterator[str]:
    """A fresh name for deploy-agent's agent_user (it creates the system user); removed afterwards. Creating
    users needs root (CI runs as root): skipped otherwise."""
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("deploy-agent creates the agent's user: needs root, useradd and setpriv (CI runs as root)")
    name = f"efa{uuid.uuid4().hex[:6]}"
    yield name
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp dirs are 0700): what the agent's user must read."""
    path = Path(tempfile.mkdtemp(prefix="edgefleet-deploy-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


SYSTEM_PYTHON = "/usr/bin/python3"  # the agent's own user runs the venv: the project's Python may be in root's home


def deploy_params_as_agent_user(fleet: SimulatedFleet, inputs: DeployInputs, readable_dir: Path,
                                agent_user: str) -> dict:
    """deploy-agent parameters for `fleet` (root login) with the agent as `agent_user`, offline, `process`."""
    import sysconfig

    return dict(inventory=str(fleet.inventory_path), public_key=str(inputs.public_key),
                install_dir=str(readable_dir / "opt"), python=SYSTEM_PYTHON, no_deps=True, wheel=str(inputs.wheel),
                extra_site_dirs=(sysconfig.get_path("purelib"),), service_manager="process", agent_user=agent_user,
                agent={"model": "imagenet", "source": {"kind": "images", "path": str(inputs.frames), "max_fps": 2},
                       "status": {"interval_s": 0.5}})


def running_agent_config(pid: int) -> Path:
    """The agent.yaml the agent with `pid` was started with (`run --config FILE`)."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return Path(argv[argv.index("--config") + 1])


def as_uid(user: str, command: str) -> subprocess.CompletedProcess[str]:
    """`command` run by `sh` as `user` (setpriv), the way a compromised agent would."""
    return subprocess.run(["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "sh", "-c", command],
                          capture_output=True, text=True, timeout=60)
