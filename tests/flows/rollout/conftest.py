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
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple, Protocol

import pytest

from edgefleet.device.runtime.engine import Engine
from edgefleet.device.runtime.golden import compute_golden
from edgefleet.device.store import ModelStore
from edgefleet.flows.registry import open_registry_writer
from edgefleet.flows.release.bundle import create_version_dir
from edgefleet.flows.trust.release_key import public_key_path
from edgefleet.kernel.trust.signatures import generate_keypair, save_private_key, save_public_key
from edgefleet.local.emulators import PubSubEmulator
from edgefleet.local.fleet import SimulatedFleet
from edgefleet.local.stack import FleetSpec, LocalStack, MonitorSpec, PubSubSpec, StackSpec, local_stack

MODEL = "imagenet"
MODEL_FILE = "mobilenet_v1_0.25_128_quant.tflite"
OTHER_MODEL_FILE = "mobilenet_v2_1.0_224_quant.tflite"
GOLDEN_SEEDS = (1, 2)
DEVICES = 5
MONITOR_WAIT_S = 120  # for the monitor to have a status of every device (a loaded machine delays Pub/Sub)


class Releases:
    """Builds signed versions (as the release pipeline would) and publishes them to the stack's local registry,
    with a release key of its own (in the stack's key file: the stack then makes no development key)."""

    def __init__(self, coral: Path, spec: StackSpec) -> None:
        self.coral = coral
        self.base = spec.workdir
        self.private_key, self.public_key = generate_keypair()
        self.private_key_path = save_private_key(self.private_key, spec.release_key)
        self.public_key_path = save_public_key(self.public_key, public_key_path(spec.release_key))
        self.registry_dir = spec.registry_dir
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
    stack: LocalStack
    work_dir: Path

    @property
    def fleet(self) -> SimulatedFleet:
        assert self.stack.fleet is not None, "a world's stack has a fleet"
        return self.stack.fleet

    @property
    def monitor_config(self) -> Path:
        return self.stack.monitor_config_path

    @property
    def base(self) -> Path:
        return self.stack.spec.workdir

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

    def wait_monitored(self, device_ids: tuple[str, ...], version: str, *, timeout_s: float = MONITOR_WAIT_S) -> None:
        """Wait until the fleet monitor has a status for each device on `version`: the agents report over the
        Pub/Sub emulator, which a loaded machine delays well past the agents' own readiness."""
        from edgefleet.monitor import FleetStateError, device_history, load_monitor_config, open_fleet_store

        config = load_monitor_config(self.monitor_config)
        deadline = time.monotonic() + timeout_s
        seen: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            try:
                with open_fleet_store(config, create=False) as store:
                    for device_id in device_ids:
                        try:
                            history = device_history(store, device_id, 3600.0, datetime.now(timezone.utc),
                                                     event_limit=1)
                            seen[device_id] = history.status.model_version
                        except FleetStateError:
                            seen[device_id] = None
            except FleetStateError:
                pass
            if all(seen.get(device_id) == version for device_id in device_ids):
                return
            time.sleep(0.5)
        raise AssertionError(f"the fleet monitor did not see {device_ids} on {version} in {timeout_s:.0f} s: {seen}")

    def record(self, rollout_id: str) -> dict:
        """The rollout record the flow keeps in the registry."""
        from edgefleet.flows.registry import rollout_key

        return self.releases.registry.get_json(rollout_key(rollout_id))


def _agent_settings(frames: Path, project: str, max_fps: float) -> dict:
    return {
        "model": MODEL,
        "source": {"kind": "images", "path": str(frames), "max_fps": max_fps},
        "telemetry": {"mode": "summary", "summary_interval_s": 0.5, "pubsub_project": project,
                      "publish_timeout_s": 5},
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
def start_world(coral_data: Path, pubsub_emulator: PubSubEmulator, tmp_path: Path,
                unique_name: str) -> Iterator[StartWorld]:
    """`start_world(running=..., published=..., max_fps=...)`: a world of the test's own (nothing shared with another
    test, so the tests run in any order and on any worker): 5 simulated devices running `running` (published,
    and named by the signed `canary` channel), the versions in `published` published too, and a running fleet
    monitor: the local stack (`edgefleet.local.stack`) on the session's Pub/Sub emulator, in a project of its
    own (the twin's topic and subscriptions there)."""
    with ExitStack() as stack:
        def start(*, running: str = START_VERSION, published: tuple[str, ...] = (),
                  max_fps: float = AGENT_MAX_FPS) -> World:
            return _start_world(stack, coral_data, pubsub_emulator.host, tmp_path / "world", unique_name,
                                running, published, max_fps)

        yield start


@pytest.fixture
def world(start_world: StartWorld) -> World:
    """A world of the test's own with every device running 1.0.0 (see `start_world`)."""
    return start_world()


def _start_world(stack: ExitStack, coral_data: Path, pubsub_host: str, base: Path, unique_name: str, running: str,
                 published: tuple[str, ...], max_fps: float) -> World:
    frames = base / "frames"
    frames.mkdir(parents=True)
    for name in ("cat.bmp", "parrot.jpg", "grace_hopper.bmp"):
        shutil.copy(coral_data / name, frames / name)
    project = f"rollout-{unique_name}"
    spec = StackSpec(workdir=base, project=project, pubsub=PubSubSpec(host=pubsub_host),
                     monitor=MonitorSpec(count_bucket_s=1.0, ingest_batch_max_wait_s=0.2))
    releases = Releases(coral_data, spec)
    for version in sorted({*published, running}):
        releases.publish(version)
    releases.registry.promote(MODEL, running, "canary", by="test", signing_key=releases.private_key)
    # Every device starts on `running`, installed the way `edgefleet-agent install --activate` would.
    fleet = FleetSpec(devices=DEVICES, tags={"sim-1": ("canary",), "sim-2": ("canary",)},
                      agent=_agent_settings(frames, project, max_fps), activated=releases.build(running),
                      ready_timeout_s=READY_TIMEOUT_S)
    spec = spec.model_copy(update={"fleet": fleet})
    local = stack.enter_context(local_stack(spec))
    world = World(releases, local, base / "work")
    world.fleet.wait_agents(lambda s: s.state == "running" and s.version == running and s.frames >= READY_FRAMES,
                            timeout_s=READY_TIMEOUT_S)
    return world


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
