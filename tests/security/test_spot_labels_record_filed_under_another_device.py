"""The labelled records live under `fleet/spotcheck-labels/<device_id>.json`, out of the devices' reach, but any
registry writer (or a record copied by hand) could file cam-2's record under cam-1's name: cam-1 would be shown
with cam-2's labelled accuracy. A record speaks only for the device its file is named after (as device key
records do): one naming another device is refused, named, never shown nor merged into."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgefleet.device.registry.local import LocalRegistryReader
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.kernel.contracts.spotcheck import LabelledSample, SpotLabels, labels_key
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.monitor.query import DeviceStatus
from edgefleet.monitor.spotcheck_labels import read_labels
from edgefleet.monitor.spotcheck_report import spot_check_report
from tests.spot_samples import NO_REVOCATIONS, EnrolledFleet

NOW = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)


def _file_cam2s_record_as_cam1(root: Path) -> None:
    sample = LabelledSample(frame_id="20261207T210000Z-000000000001", model="birds", model_version="1.0.0",
                            answer_id=1, answer_label="robin", answer_score=0.9, label="robin", correct=True)
    LocalRegistryWriter(root, create=True).put_json(labels_key("cam-1"), SpotLabels(
        device_id="cam-2", updated_at=NOW, samples=(sample,)))


def test_a_labels_record_naming_another_device_is_refused(tmp_path: Path) -> None:
    _file_cam2s_record_as_cam1(tmp_path)
    with pytest.raises(EdgefleetError, match="names device cam-2"):
        read_labels(LocalRegistryReader(tmp_path), "cam-1")
    device = DeviceStatus.model_construct(device_id="cam-1", model_name="birds", model_version="1.0.0", drift=None)
    report = spot_check_report(LocalRegistryReader(tmp_path), [device], NO_REVOCATIONS)
    assert report.devices == () and report.error is not None and "names device cam-2" in report.error


def test_import_never_merges_into_a_record_naming_another_device(tmp_path: Path) -> None:
    fleet = EnrolledFleet(tmp_path, ("cam-1",))
    frame = "20261207T210000Z-000000000002"
    fleet.upload("cam-1", frame, b"a frame")
    _file_cam2s_record_as_cam1(fleet.root)
    before = (fleet.root / labels_key("cam-1")).read_bytes()
    result = fleet.cli("import", fleet.labels_file([("cam-1", frame)]))
    assert result.exit_code != 0 and "names device cam-2" in result.output
    assert (fleet.root / labels_key("cam-1")).read_bytes() == before
