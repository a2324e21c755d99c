"""Fixtures for the model store, registry and pull-mode tests: real keys, real files, the real GCS emulator.

The GCS emulator ignores generation preconditions; `gcs_registry` switches on
`edgefleet.local.gcs_preconditions`, which reproduces the documented GCS behaviour (HTTP 412), so the
compare-and-swap tests cannot pass falsely.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gcs_buckets import temporary_bucket
from google.cloud import storage

from edgefleet.device.store import ModelStore
from edgefleet.device.store_reader import PUBLIC_KEY_FILE
from edgefleet.device.trust.version_bundle import SignedManifest
from edgefleet.flows.registry import GcsRegistryWriter, LocalRegistryWriter, RegistryWriter
from edgefleet.flows.release.bundle import create_version_dir
from edgefleet.kernel.contracts.manifest import Quantization, TensorSpec
from edgefleet.kernel.trust.signatures import generate_keypair, save_private_key, save_public_key
from edgefleet.local.emulators import GcsEmulator
from edgefleet.local.gcs_preconditions import enforce_generation_preconditions

# The input/output of mobilenet_v1_0.25_128_quant.tflite (Coral test data), written out so these tests do
# not depend on the runtime helper; the store only carries the specs.
INPUT_SPEC = TensorSpec(
    name="input",
    shape=(1, 128, 128, 3),
    dtype="uint8",
    quantization=Quantization(scale=0.0078125, zero_point=128),
)
OUTPUT_SPEC = TensorSpec(
    name="MobilenetV1/Predictions/Reshape_1",
    shape=(1, 1001),
    dtype="uint8",
    quantization=Quantization(scale=0.00390625, zero_point=0),
)

VersionFactory = Callable[..., Path]


class Keys:
    """A release key pair with both keys saved to files."""

    def __init__(self, directory: Path) -> None:
        self.private, self.public = generate_keypair()
        self.private_file = save_private_key(self.private, directory / "release.key")
        self.public_file = save_public_key(self.public, directory / "release.pub")


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """The release key pair of the test."""
    directory = tmp_path / "keys"
    return Keys(directory)


@pytest.fixture
def other_keys(tmp_path: Path) -> Keys:
    """A second, unrelated key pair (the 'wrong public key')."""
    return Keys(tmp_path / "other-keys")


def model_bytes(model: str, version: str, variant: str = "cpu") -> bytes:
    """Distinct content per model/version/variant (the store does not look inside models)."""
    return f"TFL3 {model} {version} {variant} ".encode() * 64


@pytest.fixture
def make_version(tmp_path: Path, keys: Keys) -> VersionFactory:
    """Builds a signed version directory under tmp_path/build and returns it.

    make_version("birds", "1.0.0", files={...}, private_key=...) ; files default to a CPU model, an Edge TPU
    model and labels with content unique to the version.
    """

    def factory(
        model: str = "birds",
        version: str = "1.0.0",
        *,
        files: dict[str, bytes | Path] | None = None,
        private_key: Ed25519PrivateKey | None = None,
        dest: Path | None = None,
    ) -> Path:
        if files is None:
            files = {
                "model_cpu.tflite": model_bytes(model, version),
                "model_edgetpu.tflite": model_bytes(model, version, "edgetpu"),
                "labels.txt": b"background\nrobin\nsparrow\n",
            }
        directory = dest or tmp_path / "build" / f"{model}-{version}-{uuid.uuid4().hex[:6]}"
        signed: SignedManifest = create_version_dir(
            directory,
            files,
            private_key=private_key or keys.private,
            model=model,
            version=version,
            input=INPUT_SPEC,
            outputs=(OUTPUT_SPEC,),
            source_commit="0123abc",
        )
        assert signed.manifest.version == version
        return directory

    return factory


def publish_versions(registry: RegistryWriter, make_version: VersionFactory, *versions: str,
                     model: str = "birds") -> None:
    """Publishes `versions` of `model` in order, each built by `make_version` (its default files, signed by the
    test's release key)."""
    for version in versions:
        registry.publish_version(model, version, make_version(model, version))


def activate_versions(store: ModelStore, make_version: VersionFactory, *versions: str, model: str = "birds") -> None:
    """Installs and activates `versions` of `model` in turn, as a device that ran each of them."""
    for version in versions:
        store.install(make_version(model, version))
        store.activate(model, version)


@pytest.fixture
def store(tmp_path: Path, keys: Keys) -> ModelStore:
    """An empty store whose default public key file is the test's release key."""
    root = tmp_path / "agent-root"
    (root / PUBLIC_KEY_FILE).parent.mkdir(parents=True)
    shutil.copyfile(keys.public_file, root / PUBLIC_KEY_FILE)
    return ModelStore(root)


@pytest.fixture
def local_registry(tmp_path: Path) -> LocalRegistryWriter:
    return LocalRegistryWriter(tmp_path / "registry", create=True)


@pytest.fixture
def gcs_preconditions(gcs_emulator: GcsEmulator) -> GcsEmulator:
    """The session's GCS emulator answering generation preconditions like GCS (412)."""
    enforce_generation_preconditions(gcs_emulator)
    return gcs_emulator


@pytest.fixture
def gcs_client(gcs_env: GcsEmulator, gcs_preconditions: GcsEmulator) -> storage.Client:
    """A storage client on the emulator (anonymous credentials via STORAGE_EMULATOR_HOST)."""
    assert os.environ["STORAGE_EMULATOR_HOST"] == gcs_env.endpoint
    return storage.Client()


@pytest.fixture
def gcs_bucket(gcs_client: storage.Client, unique_name: str) -> Iterator[str]:
    """A fresh bucket on the emulator, deleted with its objects afterwards."""
    with temporary_bucket(gcs_client, f"edgefleet-test-{unique_name}") as name:
        yield name


@pytest.fixture
def gcs_registry(gcs_client: storage.Client, gcs_bucket: str) -> GcsRegistryWriter:
    return GcsRegistryWriter(gcs_bucket, "registry", client=gcs_client)


@pytest.fixture(params=["local", "gcs"])
def registry(request: pytest.FixtureRequest) -> LocalRegistryWriter | GcsRegistryWriter:
    """Each registry test runs on both backends."""
    return request.getfixturevalue(f"{request.param}_registry")
