"""Spot-check samples as enrolled devices make them (issue 25): a registry with devices enrolled (key records
signed by a fleet enrolment key, whose public half is saved for the operator) and their signed samples."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.device.registry.local import LocalRegistryReader
from edgefleet.device.spotcheck.upload import upload_sample
from edgefleet.device.trust.device_identity import sign_spot_sample
from edgefleet.flows.registry import open_registry_writer
from edgefleet.flows.trust.device_key_records import register_device_key
from edgefleet.kernel.contracts.spotcheck import SpotSample, sample_keys
from edgefleet.kernel.trust.signatures import generate_keypair, key_id, save_public_key
from edgefleet.monitor.device_key_reader import KeyRecordPolicy
from edgefleet.monitor.spotcheck_samples import SampleReader

CAPTURED = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)
ENROLMENT_PUBLIC_KEY = ".edgefleet/keys/fleet-enrolment.key.pub"
"""Under `home`: where the CLI looks for it by default."""


def spot_sample(device: str, frame: str, image: bytes, answer: str = "robin") -> SpotSample:
    return SpotSample(device_id=device, frame_id=frame, captured_at=CAPTURED, model="birds", model_version="1.0.0",
                      answer_id=3, answer_label=answer, answer_score=0.9, share=0.01,
                      image_sha256=hashlib.sha256(image).hexdigest())


class EnrolledFleet:
    """`root`: the registry; `home`: the operator's home, holding the enrolment public key."""

    def __init__(self, tmp_path: Path, devices: tuple[str, ...]) -> None:
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
        (self.root / image_key).parent.mkdir(parents=True, exist_ok=True)
        (self.root / image_key).write_bytes(image)
        (self.root / record_key).write_bytes(sample.model_dump_json(by_alias=True).encode())

    def reader(self) -> SampleReader:
        """Reads samples as the operator's commands do."""
        public = self.enrolment.public_key()
        return SampleReader(LocalRegistryReader(self.root), KeyRecordPolicy({key_id(public): public}))
