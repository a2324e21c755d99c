"""Issue 25: every device shares one service account, so IAM confines a device's writes to `spotcheck/` but not
to its own folder: a compromised device (or anyone holding the account) can create a sample under another
device's folder. `edgefleet spotcheck pending` and `import` must offer and import only samples signed by the
key the fleet registered for the device whose folder they are in (`fleet/devices/<id>.json`), with the JPEG the
record hashes; a forged, copied, replayed or revoked-key sample is listed by name with the reason, never offered
for labelling, never imported."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from edgefleet.flows.trust.device_key_records import revoke_device
from edgefleet.kernel.contracts.spotcheck import labels_key
from tests.spot_samples import EnrolledFleet, spot_sample

OLD = "20261207T210000Z-000000000001"
NEW = "20261207T210000Z-000000000002"


class Fleet(EnrolledFleet):
    """The victim and the attacker enrolled; the operator's commands run with the enrolment public key where
    they look for it by default."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path, ("victim", "attacker"))
        self.labels = tmp_path / "labels.csv"

    def pending(self) -> list[tuple[str, str]]:
        result = self.cli("pending")
        assert result.exit_code == 0, result.output
        return [(row["device_id"], row["frame_id"]) for row in csv.DictReader(io.StringIO(result.stdout))]

    def import_(self, rows: list[tuple[str, str]]):
        self.labels.write_text("device_id,frame_id,label\n" + "".join(f"{d},{f},robin\n" for d, f in rows))
        result = self.cli("import", str(self.labels))
        assert result.exit_code == 1, result.output  # refused samples: listed, and the exit status says so
        return result

    def refused(self, device_id: str, frame_id: str, reason: str):
        """The sample at `device_id`/`frame_id` is never offered, and importing a label for it imports nothing
        and names it with `reason`. Returns the import's result."""
        assert self.pending() == []
        result = self.import_([(device_id, frame_id)])
        assert not (self.root / labels_key(device_id)).exists()
        assert reason in result.output
        return result


def test_an_unsigned_sample_created_in_another_devices_folder_is_never_offered_nor_imported(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    image = b"a frame the victim never took"
    fleet.plant("victim", NEW, spot_sample("victim", NEW, image), image)  # the attacker, with the shared account

    result = fleet.refused("victim", NEW, "not signed")
    assert f"spotcheck/victim/{NEW}.json" in result.output


def test_a_sample_signed_by_another_device_key_is_refused(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    image = b"forged"
    fleet.plant("victim", NEW, fleet.signed("attacker", spot_sample("victim", NEW, image)), image)

    fleet.refused("victim", NEW, "not signed by the key of device victim")


def test_a_signed_sample_of_device_a_copied_into_bs_folder_is_refused(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    image = b"the attacker's own frame"
    fleet.plant("victim", NEW, fleet.signed("attacker", spot_sample("attacker", NEW, image)), image)

    fleet.refused("victim", NEW, "names attacker")


def test_an_old_signed_sample_replayed_under_a_new_frame_id_is_refused(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    image = b"the victim's real frame"
    old = fleet.signed("victim", spot_sample("victim", OLD, image))
    fleet.plant("victim", OLD, old, image)
    replayed = old.model_copy(update={"frame_id": NEW})  # the victim's signature, a frame id it never signed
    fleet.plant("victim", NEW, replayed, image)

    assert fleet.pending() == [("victim", OLD)]
    result = fleet.import_([("victim", OLD), ("victim", NEW)])
    assert "not signed by the key of device victim" in result.output and f"{NEW}.json" in result.output
    imported = fleet.root / labels_key("victim")
    assert imported.exists() and NEW not in imported.read_text() and OLD in imported.read_text()


def test_a_sample_whose_jpeg_was_swapped_is_refused(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.plant("victim", NEW, fleet.signed("victim", spot_sample("victim", NEW, b"the real frame")), b"another")

    fleet.refused("victim", NEW, "does not match")


def test_a_sample_signed_by_a_revoked_key_is_refused(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    image = b"signed before the revocation"
    fleet.plant("victim", NEW, fleet.signed("victim", spot_sample("victim", NEW, image)), image)
    assert fleet.pending() == [("victim", NEW)]
    revoke_device(fleet.writer, "victim", enrolment_key=fleet.enrolment, reason="stolen")

    fleet.refused("victim", NEW, "revoked")


def test_a_device_without_a_key_record_has_its_samples_refused(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    image = b"from an unknown device"
    fleet.plant("stranger", NEW, fleet.signed("attacker", spot_sample("stranger", NEW, image)), image)

    fleet.refused("stranger", NEW, "no key record")


def test_without_the_enrolment_public_key_nothing_is_offered(tmp_path: Path) -> None:
    """Without it no key record can be trusted: a clear error naming the file and the option, not an empty list."""
    fleet = Fleet(tmp_path)
    image = b"a real frame"
    fleet.plant("victim", NEW, fleet.signed("victim", spot_sample("victim", NEW, image)), image)
    fleet.enrolment_public_key.unlink()
    result = fleet.cli("pending")
    assert result.exit_code != 0 and "fleet-enrolment.key.pub" in result.output
    assert "--enrolment-public-key" in result.output and NEW not in result.stdout


def test_a_folder_no_device_id_names_is_refused_and_the_others_still_offered(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    image = b"a real frame"
    fleet.plant("victim", NEW, fleet.signed("victim", spot_sample("victim", NEW, image)), image)
    bad = fleet.root / "spotcheck" / "Not A Device" / f"{NEW}.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{}")
    result = fleet.cli("pending")
    assert result.exit_code == 0, result.output
    assert fleet.pending() == [("victim", NEW)] and "REFUSED" in result.output and "Not A Device" in result.output
