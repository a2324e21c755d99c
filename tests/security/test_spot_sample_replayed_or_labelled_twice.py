"""A sample offered twice, a labels file imported twice, a frame labelled twice in one file, a row naming a
frame of another device's folder: each labelled frame counts once, for the device that signed it."""

from __future__ import annotations

from pathlib import Path

from edgefleet.kernel.contracts.spotcheck import SpotLabels, labels_key
from tests.spot_samples import EnrolledFleet, spot_sample

FRAME, OTHER = "20261207T210000Z-000000000001", "20261207T210000Z-000000000002"


def _record(fleet: EnrolledFleet, device: str) -> SpotLabels:
    return SpotLabels.model_validate_json((fleet.root / labels_key(device)).read_text())


def test_a_labels_file_imported_twice_counts_each_frame_once(tmp_path: Path) -> None:
    fleet = EnrolledFleet(tmp_path, ("cam-1",))
    fleet.upload("cam-1", FRAME, b"a frame")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"device_id,frame_id,label\ncam-1,{FRAME},robin\ncam-1,{FRAME},robin\n")
    for _ in range(2):
        result = fleet.cli("import", str(labels))
        assert result.exit_code == 0, result.output
        assert "cam-1: 1 labelled frame(s); 1.0.0: 1/1 right" in result.output
    assert [s.frame_id for s in _record(fleet, "cam-1").samples] == [FRAME]


def test_a_row_naming_a_frame_only_another_device_uploaded_imports_nothing(tmp_path: Path) -> None:
    fleet = EnrolledFleet(tmp_path, ("cam-1", "cam-2"))
    fleet.upload("cam-2", OTHER, b"cam-2's frame")
    result = fleet.cli("import", fleet.labels_file([("cam-1", OTHER)]))
    assert result.exit_code != 0 and f"no sample {OTHER} of cam-1" in result.output
    assert not (fleet.root / labels_key("cam-1")).exists() and not (fleet.root / labels_key("cam-2")).exists()


def test_a_device_signing_a_sample_that_names_another_device_in_its_own_folder_is_refused(tmp_path: Path) -> None:
    fleet = EnrolledFleet(tmp_path, ("victim", "attacker"))
    image = b"a frame"
    fleet.plant("attacker", FRAME, fleet.signed("attacker", spot_sample("victim", FRAME, image)), image)
    result = fleet.cli("import", fleet.labels_file([("attacker", FRAME)]))
    assert result.exit_code == 1 and "names victim" in result.output
    assert not (fleet.root / labels_key("victim")).exists() and not (fleet.root / labels_key("attacker")).exists()
