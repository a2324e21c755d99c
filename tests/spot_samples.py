"""Spot-check samples as enrolled devices make them (issue 25): a registry with devices enrolled (key records
signed by a fleet enrolment key, whose public half is saved for the operator), the model version they run
published, and their signed samples."""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from edgefleet.cli.app import app
from edgefleet.device.registry.local import LocalRegistryReader
from edgefleet.device.spotcheck.upload import upload_sample
from edgefleet.device.trust.device_identity import sign_spot_sample
from edgefleet.flows.registry import open_registry_writer
from edgefleet.flows.release.bundle import create_version_dir
from edgefleet.flows.trust.device_key_records import register_device_key
from edgefleet.kernel.contracts.spotcheck import SpotSample, sample_keys
from edgefleet.kernel.trust.signatures import generate_keypair, key_id, save_public_key
from edgefleet.monitor.device_key_reader import KeyRecordPolicy
from edgefleet.monitor.spotcheck_samples import SampleReader
from tests.device.store_fixtures import INPUT_SPEC, OUTPUT_SPEC, model_bytes

CAPTURED = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)
ENROLMENT_PUBLIC_KEY = ".edgefleet/keys/fleet-enrolment.key.pub"
"""Under `home`: where the CLI looks for it by default."""
FIXTURE_SHARE = 1.0
"""The share of the fixture fleet's samples and the operator's `--share`: every frame is picked, so a test may use
any frame id (the sampler's choice: tests/security/test_spot_sample_frames_chosen_by_a_compromised_device.py)."""
MODEL, VERSION = "birds", "1.0.0"
"""The version the samples are of, published in every `EnrolledFleet`'s registry."""


def spot_sample(device: str, frame: str, image: bytes, answer: str = "robin") -> SpotSample:
    return SpotSample(device_id=device, frame_id=frame, captured_at=CAPTURED, model=MODEL, model_version=VERSION,
                      answer_id=3, answer_label=answer, answer_score=0.9, share=FIXTURE_SHARE,
                      image_sha256=hashlib.sha256(image).hexdigest())


def offered(result: Result) -> list[tuple[str, str]]:
    """(device, frame) of each row `edgefleet spotcheck pending` wrote to standard output."""
    return [(row["device_id"], row["frame_id"]) for row in csv.DictReader(io.StringIO(result.stdout))]


class EnrolledFleet:
    """`root`: the registry; `home`: the operator's home, holding the enrolment public key; `share`: the `--share`
    `cli` passes (None: none, the command's default)."""

    def __init__(self, tmp_path: Path, devices: tuple[str, ...], share: float | None = FIXTURE_SHARE) -> None:
        self.tmp_path, self.share = tmp_path, share
        self.root, self.home = tmp_path / "registry", tmp_path / "home"
        self.root.mkdir(parents=True, exist_ok=True)
        self.enrolment, public = generate_keypair()
        self.enrolment_public_key = self.home / ENROLMENT_PUBLIC_KEY
        save_public_key(public, self.enrolment_public_key, encoding="pem")
        self.writer = open_registry_writer(str(self.root))
        self.device_keys: dict[str, Ed25519PrivateKey] = {}
        for device in devices:
            private, device_public = generate_keypair()
            register_device_key(self.writer, device, device_public, enrolment_key=self.enrolment)
            self.device_keys[device] = private
        self.publish(MODEL, VERSION)

    def publish(self, model: str, version: str) -> None:
        """Publishes a signed version of `model` (as `edgefleet release` does)."""
        directory = self.tmp_path / "build" / f"{model}-{version}"
        create_version_dir(directory, {"model_cpu.tflite": model_bytes(model, version), "labels.txt": b"robin\n"},
                           private_key=generate_keypair()[0], model=model, version=version, input=INPUT_SPEC,
                           outputs=(OUTPUT_SPEC,), source_commit="0123abc")
        self.writer.publish_version(model, version, directory)

    def key_id(self, device: str) -> str:
        return key_id(self.device_keys[device].public_key())

    def signed(self, signer: str, sample: SpotSample) -> SpotSample:
        return sign_spot_sample(self.device_keys[signer], sample)

    def upload(self, device: str, frame: str, image: bytes, answer: str = "robin") -> None:
        """The device's own signed sample, uploaded as its agent does."""
        record = self.signed(device, spot_sample(device, frame, image, answer))
        upload_sample(LocalRegistryReader(self.root), device, frame, image,
                      record.model_dump_json(by_alias=True).encode())

    def plant(self, folder: str, frame: str, sample: SpotSample, image: bytes) -> None:
        """Creates the two objects under `spotcheck/<folder>/`, as anyone with the devices' shared account can."""
        image_key, record_key = sample_keys(folder, frame)
        self.plant_object(image_key, image)
        self.plant_object(record_key, sample.model_dump_json(by_alias=True).encode())

    def plant_object(self, key: str, data: bytes) -> None:
        """Creates any object in the bucket, as anyone with the devices' shared account can under spotcheck/."""
        (self.root / key).parent.mkdir(parents=True, exist_ok=True)
        (self.root / key).write_bytes(data)

    def cli(self, *args: str) -> Result:
        """`edgefleet spotcheck ARGS -r REGISTRY [--share SHARE]`, run by the operator (the enrolment public key in
        its home; a `--share` in ARGS comes after the fixture's, so it wins)."""
        share = ["--share", str(self.share)] if self.share is not None else []
        return CliRunner().invoke(app, ["spotcheck", args[0], *share, *args[1:], "-r", str(self.root)],
                                  env={"HOME": str(self.home)})

    def labels_file(self, rows: list[tuple[str, str]], label: str = "robin") -> str:
        """A labeller's CSV labelling each (device, frame) of `rows`."""
        path = self.tmp_path / "labels.csv"
        path.write_text("device_id,frame_id,label\n" + "".join(f"{d},{f},{label}\n" for d, f in rows))
        return str(path)

    def monitor_config(self, **identity: object) -> str:
        """A monitor YAML whose identity section holds `identity` (and the registry)."""
        path = self.tmp_path / "monitor.yaml"
        path.write_text(yaml.safe_dump({"identity": {"registry": str(self.root), **identity}}))
        return str(path)

    def reader(self) -> SampleReader:
        """Reads samples as the operator's commands do."""
        public = self.enrolment.public_key()
        return SampleReader(LocalRegistryReader(self.root), KeyRecordPolicy({key_id(public): public}),
                            self.share or FIXTURE_SHARE)


RUN = "20261207T210000Z"
"""The run part of the frame ids `sampled_frames` and `unsampled_frame` give."""


def sampled_frames(device: str, share: float, count: int, run: str = RUN) -> list[str]:
    """The first `count` frame ids of `run` the device's sampler picks at `share` (as the agent numbers them)."""
    from edgefleet.device.spotcheck.sampler import in_sample, share_threshold

    threshold = share_threshold(share)
    picked = (sequence for sequence in range(1 << 30) if in_sample(device, run, sequence, threshold))
    return [f"{run}-{next(picked):012d}" for _ in range(count)]


def unsampled_frame(device: str, share: float, run: str = RUN) -> str:
    """The first frame id of `run` the device's sampler does NOT pick at `share`."""
    from edgefleet.device.spotcheck.sampler import in_sample, share_threshold

    threshold = share_threshold(share)
    return f"{run}-{next(s for s in range(1 << 30) if not in_sample(device, run, s, threshold)):012d}"


SIGNING_KEY_ID = "0123456789abcdef"
"""The device key id recorded with hand-made labelled frames (`LabelledSample.key_id`): not revoked anywhere."""
NO_REVOCATIONS = KeyRecordPolicy({})
"""A revocation policy revoking nothing (and verifying no registry revocation): for reports of hand-made labels."""


def enrolment_public_key_file(directory: Path) -> str:
    """A fleet enrolment public key saved under `directory`, for a monitor config's `identity.enrolment_keys` (the
    spot check report needs one to tell the registry's revocations)."""
    path = directory / "fleet-enrolment.key.pub"
    save_public_key(generate_keypair()[1], path, encoding="pem")
    return str(path)
