"""Issue 25: every device shares one service account, so IAM confines a device's writes to `spotcheck/` but not
to its own folder: a compromised device (or anyone holding the account) can create a sample under another
device's folder. `edgefleet spotcheck pending` and `import` must offer and import only samples signed by the
key the fleet registered for the device whose folder they are in (`fleet/devices/<id>.json`), with the JPEG the
record hashes; a forged, copied, replayed or revoked-key sample is listed by name with the reason, never offered
for labelling, never imported."""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cli.app import app
from edgefleet.device.registry.local import LocalRegistryReader
from edgefleet.device.spotcheck.upload import upload_sample
from edgefleet.flows.registry import open_registry_writer
from edgefleet.flows.trust.device_key_records import register_device_key, revoke_device
from edgefleet.kernel.contracts.spotcheck import SpotSample, labels_key, sample_keys
from edgefleet.kernel.trust.signatures import generate_keypair, save_public_key

NOW = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)
OLD = "20261207T210000Z-000000000001"
NEW = "20261207T210000Z-000000000002"


class Fleet:
    """A registry with devices enrolled (signed key records) and the operator's home holding the enrolment
    public key where the CLI looks for it."""

    def __init__(self, tmp_path: Path) -> None:
        self.root, self.home = tmp_path / "registry", tmp_path / "home"
        self.root.mkdir()
        self.enrolment, public = generate_keypair()
        save_public_key(public, self.home / ".edgefleet/keys/fleet-enrolment.key.pub", encoding="pem")
        self.writer = open_registry_writer(str(self.root))
        self.devices = {}
        for device in ("victim", "attacker"):
            private, device_public = generate_keypair()
            register_device_key(self.writer, device, device_public, enrolment_key=self.enrolment)
            self.devices[device] = private

    def upload(self, folder: str, frame: str, sample: SpotSample, image: bytes) -> None:
        """Creates the two objects under `spotcheck/<folder>/` as anyone with the shared account can."""
        registry = LocalRegistryReader(self.root)
        image_key, record_key = sample_keys(folder, frame)
        (self.root / image_key).parent.mkdir(parents=True, exist_ok=True)
        (self.root / image_key).write_bytes(image)
        (self.root / record_key).write_bytes(sample.model_dump_json(by_alias=True).encode())
        assert registry.read_object(record_key, 1 << 16) is not None

    def cli(self, *args: str):
        return CliRunner().invoke(app, ["spotcheck", *args, "-r", str(self.root)], env={"HOME": str(self.home)})

    def pending(self) -> list[tuple[str, str]]:
        result = self.cli("pending")
        assert result.exit_code == 0, result.output
        return [(row["device_id"], row["frame_id"]) for row in csv.DictReader(io.StringIO(result.stdout))]

    def import_(self, tmp_path: Path, rows: list[tuple[str, str]]):
        labels = tmp_path / "labels.csv"
        labels.write_text("device_id,frame_id,label\n" + "".join(f"{d},{f},robin\n" for d, f in rows))
        return self.cli("import", str(labels))


def _sample(device: str, frame: str, image: bytes) -> SpotSample:
    return SpotSample(device_id=device, frame_id=frame, captured_at=NOW, model="birds", model_version="1.0.0",
                      answer_id=3, answer_label="robin", answer_score=0.9, share=0.01,
                      image_sha256=hashlib.sha256(image).hexdigest())


def _signed(fleet: Fleet, signer: str, sample: SpotSample) -> SpotSample:
    from edgefleet.device.trust.device_identity import sign_spot_sample

    return sign_spot_sample(fleet.devices[signer], sample)


def test_an_unsigned_sample_created_in_another_devices_folder_is_never_offered_nor_imported(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    image = b"a frame the victim never took"
    fleet.upload("victim", NEW, _sample("victim", NEW, image), image)  # the attacker, with the shared account

    assert fleet.pending() == []
    result = fleet.import_(tmp_path, [("victim", NEW)])
    assert not (fleet.root / labels_key("victim")).exists()
    assert f"spotcheck/victim/{NEW}.json" in result.output and "not signed" in result.output


def test_a_sample_signed_by_another_device_key_is_refused(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    image = b"forged"
    fleet.upload("victim", NEW, _signed(fleet, "attacker", _sample("victim", NEW, image)), image)

    assert fleet.pending() == []
    result = fleet.import_(tmp_path, [("victim", NEW)])
    assert not (fleet.root / labels_key("victim")).exists()
    assert "not signed by the key of device victim" in result.output


def test_a_signed_sample_of_device_a_copied_into_bs_folder_is_refused(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    image = b"the attacker's own frame"
    fleet.upload("victim", NEW, _signed(fleet, "attacker", _sample("attacker", NEW, image)), image)

    assert fleet.pending() == []
    result = fleet.import_(tmp_path, [("victim", NEW)])
    assert not (fleet.root / labels_key("victim")).exists()
    assert "names attacker" in result.output


def test_an_old_signed_sample_replayed_under_a_new_frame_id_is_refused(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    image = b"the victim's real frame"
    old = _signed(fleet, "victim", _sample("victim", OLD, image))
    fleet.upload("victim", OLD, old, image)
    replayed = old.model_copy(update={"frame_id": NEW})  # the victim's signature, a frame id it never signed
    fleet.upload("victim", NEW, replayed, image)

    assert fleet.pending() == [("victim", OLD)]
    result = fleet.import_(tmp_path, [("victim", OLD), ("victim", NEW)])
    assert "not signed by the key of device victim" in result.output and f"{NEW}.json" in result.output
    imported = fleet.root / labels_key("victim")
    assert imported.exists() and NEW not in imported.read_text() and OLD in imported.read_text()


def test_a_sample_whose_jpeg_was_swapped_is_refused(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.upload("victim", NEW, _signed(fleet, "victim", _sample("victim", NEW, b"the real frame")), b"another")

    assert fleet.pending() == []
    result = fleet.import_(tmp_path, [("victim", NEW)])
    assert "does not match" in result.output and not (fleet.root / labels_key("victim")).exists()


def test_a_sample_signed_by_a_revoked_key_is_refused(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    image = b"signed before the revocation"
    fleet.upload("victim", NEW, _signed(fleet, "victim", _sample("victim", NEW, image)), image)
    assert fleet.pending() == [("victim", NEW)]
    revoke_device(fleet.writer, "victim", enrolment_key=fleet.enrolment, reason="stolen")

    assert fleet.pending() == []
    result = fleet.import_(tmp_path, [("victim", NEW)])
    assert "revoked" in result.output and not (fleet.root / labels_key("victim")).exists()


def test_a_device_without_a_key_record_has_its_samples_refused(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    image = b"from an unknown device"
    fleet.upload("stranger", NEW, _signed(fleet, "attacker", _sample("stranger", NEW, image)), image)

    assert fleet.pending() == []
    result = fleet.import_(tmp_path, [("stranger", NEW)])
    assert "no key record" in result.output and not (fleet.root / labels_key("stranger")).exists()


@pytest.mark.parametrize("missing", ["enrolment key"])
def test_without_the_enrolment_public_key_nothing_is_offered(tmp_path: Path, missing: str) -> None:
    fleet = Fleet(tmp_path)
    (fleet.home / ".edgefleet/keys/fleet-enrolment.key.pub").unlink()
    result = fleet.cli("pending")
    assert result.exit_code != 0 and "fleet-enrolment.key.pub" in result.output
