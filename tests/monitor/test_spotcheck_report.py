"""The spot check of the devices shown, read from the registry: per device on the model version it runs, pooled
per version; a registry that cannot be read is the report's error, not a failed `fleet status`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from edgefleet.device.registry.local import LocalRegistryReader
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.kernel.contracts.spotcheck import LabelledSample, SpotLabels, labels_key
from edgefleet.monitor.config import load_monitor_config
from edgefleet.monitor.drift import AccuracyEstimate
from edgefleet.monitor.drift_view import DeviceDrift
from edgefleet.monitor.query import DeviceStatus
from edgefleet.monitor.spotcheck import SpotCheckReport
from edgefleet.monitor.spotcheck_report import read_spot_check_report, spot_check_report
from tests.spot_samples import NO_REVOCATIONS, SIGNING_KEY_ID, enrolment_public_key_file

NOW = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)


def _labels(root: Path, device: str, marks: list[bool], version: str = "1.0.0") -> None:
    samples = tuple(LabelledSample(frame_id=f"20261207T210000Z-{i:012d}", model="birds", model_version=version,
                                   answer_id=1, answer_label="robin", answer_score=0.9,
                                   label="robin" if right else "crow", correct=right,
                                   key_id=SIGNING_KEY_ID) for i, right in enumerate(marks))
    LocalRegistryWriter(root, create=True).put_json(labels_key(device), SpotLabels(device_id=device, updated_at=NOW,
                                                                                   samples=samples))


def _device(device_id: str, version: str = "1.0.0", estimate: float | None = None) -> DeviceStatus:
    drift = (DeviceDrift(status="watching", blocks=50, accuracy=AccuracyEstimate(
        accuracy=estimate, low=estimate - 0.02, high=estimate + 0.02, frames=5000, unseen_share=0.0))
        if estimate is not None else None)
    return DeviceStatus.model_construct(device_id=device_id, model_name="birds", model_version=version, drift=drift)


def test_the_report_holds_each_labelled_device_and_each_version_pooled(tmp_path: Path) -> None:
    _labels(tmp_path, "cam-1", [True] * 30 + [False] * 10)
    _labels(tmp_path, "cam-2", [True] * 10)
    _labels(tmp_path, "cam-3", [False] * 4)  # labelled on 1.0.0, runs 1.1.0 now: not shown
    devices = [_device("cam-1", estimate=0.9), _device("cam-2"), _device("cam-3", "1.1.0"), _device("cam-4")]
    report = spot_check_report(LocalRegistryReader(tmp_path), devices, NO_REVOCATIONS)
    assert report.error is None and report.registry == LocalRegistryReader(tmp_path).uri
    assert [(d.device_id, d.labelled, d.right, d.bias is not None) for d in report.devices] == [
        ("cam-1", 40, 30, True), ("cam-2", 10, 10, False)]
    [version] = report.versions
    assert (version.model, version.model_version, version.devices, version.labelled, version.right) == (
        "birds", "1.0.0", 2, 50, 40)
    assert version.bias is not None and version.bias.value == report.devices[0].bias.value  # pyright: ignore[reportOptionalMemberAccess]
    assert SpotCheckReport.model_validate_json(report.model_dump_json()) == report


def test_a_damaged_labels_record_is_the_reports_error(tmp_path: Path) -> None:
    (tmp_path / "fleet" / "spotcheck-labels").mkdir(parents=True)
    (tmp_path / labels_key("cam-1")).write_text('{"schema": "something else"}')
    report = spot_check_report(LocalRegistryReader(tmp_path), [_device("cam-1")], NO_REVOCATIONS)
    assert report.devices == () and report.versions == ()
    assert report.error is not None and "is not a spot check labels record" in report.error


def test_without_a_registry_configured_nothing_is_read(tmp_path: Path) -> None:
    assert read_spot_check_report(load_monitor_config(None), [_device("cam-1")]) is None
    configured = load_monitor_config(None, identity={"registry": str(tmp_path), "mode": "transition",
                                                     "enrolment_keys": [enrolment_public_key_file(tmp_path)]})
    _labels(tmp_path, "cam-1", [True])
    report = read_spot_check_report(configured, [_device("cam-1")])
    assert report is not None and [d.device_id for d in report.devices] == ["cam-1"]
    assert read_spot_check_report(configured, []) is None


def test_without_enrolment_keys_the_labels_are_not_counted_and_the_report_says_why(tmp_path: Path) -> None:
    """A revocation in fleet/revoked/ could not be told from a forged one: no label is counted (a revoked key's
    would still count), and the report names the setting."""
    _labels(tmp_path, "cam-1", [True])
    configured = load_monitor_config(None, identity={"registry": str(tmp_path), "mode": "transition"})
    report = read_spot_check_report(configured, [_device("cam-1")])
    assert report is not None and report.devices == ()
    assert report.error is not None and "identity.enrolment_keys" in report.error


def test_a_frame_recorded_without_its_signing_key_is_not_counted_and_is_said(tmp_path: Path) -> None:
    """A record imported before the labels carried the signing key id: those frames cannot be told from a revoked
    key's, so they do not count (import the labels file again to record the key)."""
    _labels(tmp_path, "cam-1", [True] * 3)
    record = SpotLabels.model_validate_json((tmp_path / labels_key("cam-1")).read_text())
    old = record.samples[0].model_copy(update={"key_id": None, "frame_id": "20261207T200000Z-000000000000"})
    LocalRegistryWriter(tmp_path).put_json(labels_key("cam-1"), record.model_copy(
        update={"samples": (old, *record.samples)}))
    [result] = spot_check_report(LocalRegistryReader(tmp_path), [_device("cam-1")], NO_REVOCATIONS).devices
    assert (result.labelled, result.not_counted) == (3, 1)
    from edgefleet.cli.fleet_spotcheck import spot_check_text

    assert "(1 labelled frame(s) not counted: signed by a revoked key" in spot_check_text(result)
