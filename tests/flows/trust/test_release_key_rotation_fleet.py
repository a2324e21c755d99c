"""Issue 22 item 2, done when: the release key is rotated on a running simulated fleet, 0 devices stop inferring,
old versions keep running, new ones verify.

Three simulated devices (sshd + a real `edgefleet-agent run` process each, pull mode on a local registry): two
follow `stable`, one follows `lts`, pinned to the old version for the whole rotation. The rotation is the
documented one: `edgefleet keys add` / `resign` / `retire` (the CLI), the keyring installed on each device over
SSH by deploy-agent's own `install_keyring`, each agent restarted as deploy-agent restarts it. After each step
every device is still inferring on the version its channel names, and no device recorded a refusal.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cli.app import app
from edgefleet.device.runtime.engine import Engine
from edgefleet.device.runtime.golden import compute_golden
from edgefleet.device.store_reader import StoreReader
from edgefleet.flows.deploy_agent.keyring import install_keyring, release_keyring_files
from edgefleet.flows.fleet.connection import DeviceConnection
from edgefleet.flows.fleet.inventory import load_inventory
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.release.bundle import build_manifest, write_signed_version
from edgefleet.kernel.contracts.manifest import SigningInfo
from edgefleet.kernel.contracts.status import read_status
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.kernel.trust.signatures import key_id
from edgefleet.local.fleet import SimulatedFleet
from tests.device.store_fixtures import Keys

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="deploy-agent's keyring install chowns to root (CI)")]

MODEL = "imagenet"
MODEL_FILE = "mobilenet_v1_0.25_128_quant.tflite"
WAIT_S = 120.0
CHANNELS = {"sim-1": "stable", "sim-2": "stable", "sim-3": "lts"}


class Rotation:
    """The registry, the operator's keyring, and the fleet, with the steps the operator runs."""

    def __init__(self, base: Path, coral: Path, fleet: SimulatedFleet) -> None:
        self.base, self.coral, self.fleet = base, coral, fleet
        self.registry = LocalRegistryWriter(base / "registry", create=True)
        self.ring = base / "operator-ring"
        self.old, self.new = Keys(base / "old-key"), Keys(base / "new-key")
        self.frames = base / "frames"
        self.frames.mkdir()
        shutil.copy(coral / "grace_hopper.bmp", self.frames)

    def publish(self, version: str, keys: Keys) -> None:
        """A version as the release flow signs it (its manifest names the signing key)."""
        dest = self.base / "build" / version
        dest.mkdir(parents=True)
        shutil.copyfile(self.coral / MODEL_FILE, dest / "model_cpu.tflite")
        shutil.copyfile(self.coral / "imagenet_labels.txt", dest / "labels.txt")
        with Engine.open(dest / "model_cpu.tflite") as engine:
            golden = compute_golden(engine, (1, 2))
        manifest = build_manifest(dest, model=MODEL, version=version, golden=golden)
        signing = SigningInfo(key_id=key_id(keys.public))
        write_signed_version(dest, manifest.model_copy(update={"signing": signing}), keys.private)
        self.registry.publish_version(MODEL, version, dest)

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(app, ["keys", *args])
        assert result.exit_code == 0, result.output
        return result.output

    def config_dir(self, device_id: str) -> Path:
        return self.base / "etc" / device_id

    def install_keyring(self) -> None:
        """deploy-agent's keyring step on every device, over SSH (then each agent restarted, one by one)."""
        files = release_keyring_files(str(self.ring))
        for device in load_inventory(self.fleet.inventory_path).devices:
            with DeviceConnection(device, self.fleet.known_hosts) as connection:
                install_keyring(connection, str(self.config_dir(device.id)), files)
            self.start(device.id)

    def start(self, device_id: str) -> None:
        self.fleet.agent = {
            "model": MODEL, "public_key": str(self.config_dir(device_id) / "keys" / "release.d"),
            "source": {"kind": "images", "path": str(self.frames), "max_fps": 20},
            "registry": {"uri": str(self.registry.root), "channel": CHANNELS[device_id], "poll_interval_s": 0.5},
            "swap": {"watch_interval_s": 0.2}, "status": {"interval_s": 0.3},
        }
        self.fleet.start_agent(device_id)

    def assert_every_device_infers(self, versions: dict[str, str]) -> None:
        """Each device runs the version given and its frame count keeps going up; nothing recorded as refused."""
        for device_id, version in versions.items():
            device = self.fleet.devices[device_id]
            deadline = time.monotonic() + WAIT_S
            start = -1
            while (frames := _frames(device.root, version, device.agent_pid())) < 0 or start < 0 or frames < start + 5:
                if start < 0 <= frames:
                    start = frames  # the agent now running, on this version: from here its count must go up
                assert time.monotonic() < deadline, f"{device_id} is not inferring on {version}: {_status(device.root)}"
                time.sleep(0.2)
            assert StoreReader(device.root).refusals(MODEL) == [], device_id


def _status(root: Path) -> object:
    try:
        return read_status(root / "status.json")
    except EdgefleetError as error:
        return error.message


def _frames(root: Path, version: str, pid: int | None) -> int:
    """Frames of the agent process `pid` when it is running `version`, else -1."""
    status = _status(root)
    if isinstance(status, str) or (status.pid, status.version, status.state) != (pid, version, "running"):
        return -1
    return status.frames


def test_rotating_the_release_key_on_a_running_fleet_stops_no_device(tmp_path, coral_data):
    tmp_path.chmod(0o755)
    with SimulatedFleet(tmp_path / "fleet", len(CHANNELS)) as fleet:
        try:
            rotation = Rotation(tmp_path, coral_data, fleet)
            rotation.publish("1.0.0", rotation.old)
            for channel in ("stable", "lts"):
                rotation.registry.promote(MODEL, "1.0.0", channel, signing_key=rotation.old.private)
            rotation.cli("add", str(rotation.ring), str(rotation.old.public_file))
            rotation.install_keyring()
            rotation.assert_every_device_infers({device: "1.0.0" for device in CHANNELS})

            # 1. add the new key everywhere (each agent restarted: the old version keeps running)
            rotation.cli("add", str(rotation.ring), str(rotation.new.public_file))
            rotation.install_keyring()
            rotation.assert_every_device_infers({device: "1.0.0" for device in CHANNELS})

            # 2. re-sign what is in use with the new key; a new version signed by it verifies and swaps in hot
            registry = f"--registry={rotation.registry.root}"
            out = rotation.cli("resign", "--ring", str(rotation.ring), "--signing-key",
                               str(rotation.new.private_file), registry)
            assert out.count(": resigned") == 2, out
            rotation.publish("2.0.0", rotation.new)
            rotation.registry.promote(MODEL, "2.0.0", "stable", signing_key=rotation.new.private)
            rotation.assert_every_device_infers({"sim-1": "2.0.0", "sim-2": "2.0.0", "sim-3": "1.0.0"})

            # 3. retire the old key (the keyring installed again: its file leaves every device; agents restarted)
            rotation.cli("retire", str(rotation.ring), key_id(rotation.old.public), registry)
            rotation.install_keyring()
            rotation.assert_every_device_infers({"sim-1": "2.0.0", "sim-2": "2.0.0", "sim-3": "1.0.0"})
            for device_id in CHANNELS:
                ring = rotation.config_dir(device_id) / "keys" / "release.d"
                assert [p.name for p in ring.iterdir()] == [f"{key_id(rotation.new.public)}.pub"]
        finally:
            for device_id in CHANNELS:
                fleet.stop_agent(device_id)

from tests.flows.rollout.conftest import _emulator_env_restored  # noqa: E402,F401 - fixtures its old conftest gave it
