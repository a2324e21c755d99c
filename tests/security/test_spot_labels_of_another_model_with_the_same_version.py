"""Versions are per model: birds 1.0.0 and cats 1.0.0 are different releases. A device labelled on birds 1.0.0
that now runs cats 1.0.0 must not have its birds labels shown as the labelled accuracy of cats (nor a device
fed labels of another model that way): the labelled record keeps each sample's model, and the spot check takes
only the samples of the model and version the device runs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from edgefleet.device.registry.local import LocalRegistryReader
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.kernel.contracts.spotcheck import LabelledSample, SpotLabels, labels_key
from edgefleet.monitor.query import DeviceStatus
from edgefleet.monitor.spotcheck_report import device_spot_checks
from tests.spot_samples import NO_REVOCATIONS, SIGNING_KEY_ID, EnrolledFleet

NOW = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)


def test_labels_of_birds_1_0_0_are_not_the_accuracy_of_cats_1_0_0(tmp_path: Path) -> None:
    samples = tuple(LabelledSample(frame_id=f"20261207T210000Z-{i:012d}", model="birds", model_version="1.0.0",
                                   answer_id=1, answer_label="robin", answer_score=0.9, label="robin", correct=True,
                                   key_id=SIGNING_KEY_ID)
                    for i in range(5))
    LocalRegistryWriter(tmp_path, create=True).put_json(
        labels_key("cam-1"), SpotLabels(device_id="cam-1", updated_at=NOW, samples=samples))
    on_cats = DeviceStatus.model_construct(device_id="cam-1", model_name="cats", model_version="1.0.0", drift=None)
    on_birds = DeviceStatus.model_construct(device_id="cam-1", model_name="birds", model_version="1.0.0", drift=None)
    assert device_spot_checks(LocalRegistryReader(tmp_path), [on_cats], NO_REVOCATIONS) == []
    [result] = device_spot_checks(LocalRegistryReader(tmp_path), [on_birds], NO_REVOCATIONS)
    assert (result.model, result.model_version, result.labelled) == ("birds", "1.0.0", 5)


def test_an_imported_label_keeps_the_model_of_its_sample(tmp_path: Path) -> None:
    fleet = EnrolledFleet(tmp_path, ("cam-1",))
    frame = "20261207T210000Z-000000000001"
    fleet.upload("cam-1", frame, b"a frame")
    result = fleet.cli("import", fleet.labels_file([("cam-1", frame)]))
    assert result.exit_code == 0, result.output
    record = SpotLabels.model_validate_json((fleet.root / labels_key("cam-1")).read_text())
    assert [(s.model, s.model_version) for s in record.samples] == [("birds", "1.0.0")]
