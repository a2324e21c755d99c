"""Finding 10, verify-then-reopen (TOCTOU): the agent hashed a model file, then the interpreter opened the
file again by path, so a file swapped in between was loaded unverified. The runtime now reads the bytes
once, loads those bytes, and checks their hash against the verified manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.device.runtime.engine import open_for_manifest
from edgefleet.device.trust.version_bundle import verify_version_dir
from edgefleet.flows.release.bundle import create_version_dir
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.signatures import generate_keypair

MODEL_FILE = "mobilenet_v1_0.25_128_quant.tflite"


def test_a_model_swapped_between_verification_and_loading_is_refused(tmp_path: Path, coral_data: Path) -> None:
    private, public = generate_keypair()
    version_dir = tmp_path / "1.0.0"
    create_version_dir(version_dir, {"model_cpu.tflite": coral_data / MODEL_FILE,
                                     "labels.txt": coral_data / "imagenet_labels.txt"},
                       private_key=private, model="imagenet", version="1.0.0")
    manifest = verify_version_dir(version_dir, public)
    # the attack: once verified, the file is replaced by another (valid, unsigned) model of the same input
    (version_dir / "model_cpu.tflite").write_bytes((coral_data / MODEL_FILE).read_bytes() + b"\0evil")
    with pytest.raises(VerificationError, match="changed after it was verified"):
        open_for_manifest(version_dir, manifest, device="cpu")

    (version_dir / "model_cpu.tflite").write_bytes((coral_data / MODEL_FILE).read_bytes())
    engine = open_for_manifest(version_dir, manifest, device="cpu")  # the verified bytes load
    engine.close()
