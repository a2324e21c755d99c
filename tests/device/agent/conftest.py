"""Fixtures for the agent: signed model versions built from Coral's real models, installed in a store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgefleet.device.runtime.engine import Engine
from edgefleet.device.runtime.golden import compute_golden
from edgefleet.device.store import ModelStore
from edgefleet.flows.release.bundle import create_version_dir
from edgefleet.kernel.trust.signatures import generate_keypair, save_public_key

GOLDEN_SEEDS = (1, 2, 3)
MODEL = "imagenet"


class Releases:
    """Builds signed versions of real models (as the release pipeline would) and installs them."""

    def __init__(self, coral: Path, tmp: Path) -> None:
        self.coral = coral
        self.tmp = tmp
        self.private_key, self.public_key = generate_keypair()
        self.root = tmp / "agent-root"
        self.public_key_path = save_public_key(self.public_key, self.root / "keys" / "release.pub")
        self.store = ModelStore(self.root, public_key=self.public_key)

    def build(self, version: str, model_file: str = "mobilenet_v1_0.25_128_quant.tflite",
              labels: str = "imagenet_labels.txt", *, golden_from: str | None = None,
              edgetpu_variant: bool = False) -> Path:
        """A signed version dir of `model_file`; golden outputs computed on `golden_from` (default: itself).

        `edgetpu_variant`: ship `model_file` as the edgetpu variant too (for the libedgetpu stand-in, which
        runs models on the CPU kernels).
        """
        with Engine.open(self.coral / (golden_from or model_file)) as engine:
            golden = compute_golden(engine, GOLDEN_SEEDS)
        dest = self.tmp / "releases" / version
        files = {"model_cpu.tflite": self.coral / model_file, "labels.txt": self.coral / labels}
        if edgetpu_variant:
            files["model_edgetpu.tflite"] = self.coral / model_file
        create_version_dir(dest, files, private_key=self.private_key, model=MODEL, version=version,
                           golden=golden)
        return dest

    def install(self, version: str, model_file: str = "mobilenet_v1_0.25_128_quant.tflite", *,
                activate: bool = True, golden_from: str | None = None, edgetpu_variant: bool = False) -> Path:
        self.store.install(self.build(version, model_file, golden_from=golden_from,
                                      edgetpu_variant=edgetpu_variant))
        if activate:
            self.store.activate(MODEL, version)
        return self.store.version_dir(MODEL, version)

    def agent_config(self, sections: str = "") -> Path:
        """Writes `agent.yaml` (in tmp): device cam-1 running MODEL from this root on the Coral test images, then
        `sections` (more of the config, YAML text); returns its path."""
        path = self.tmp / "agent.yaml"
        path.write_text(f"device_id: cam-1\nmodel: {MODEL}\nroot: {self.root}\n"
                        f"source:\n  kind: images\n  path: {self.images()}\n{sections}")
        return path

    def images(self) -> Path:
        frames = self.tmp / "frames"
        frames.mkdir(exist_ok=True)
        for name in ("cat.bmp", "parrot.jpg", "grace_hopper.bmp"):
            shutil.copy(self.coral / name, frames / name)
        return frames


@pytest.fixture
def releases(coral_data: Path, tmp_path: Path) -> Releases:
    return Releases(coral_data, tmp_path)
