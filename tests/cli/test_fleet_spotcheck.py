"""`fleet status` shows each labelled device's spot check beside its estimated accuracy, and the estimate's bias."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import yaml
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.cli.fleet_spotcheck import spot_check_text
from edgefleet.device.registry.local import LocalRegistryReader
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.kernel.contracts.spotcheck import LabelledSample, SpotLabels, labels_key
from edgefleet.monitor.drift import AccuracyEstimate
from edgefleet.monitor.drift_view import DeviceDrift
from edgefleet.monitor.query import DeviceStatus
from edgefleet.monitor.spotcheck_report import device_spot_checks
from tests.cli.test_fleet import fleet_db, text  # noqa: F401 - the fleet state fixture of the status tests

NOW = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)


def _labels(root: Path, device: str, version: str, marks: list[bool]) -> None:
    samples = tuple(LabelledSample(frame_id=f"20261207T210000Z-{i:012d}", model="mobilenet", model_version=version,
                                   answer_id=1,
                                   answer_label="robin", answer_score=0.9, label="robin" if right else "crow",
                                   correct=right) for i, right in enumerate(marks))
    LocalRegistryWriter(root, create=True).put_json(labels_key(device), SpotLabels(device_id=device, updated_at=NOW,
                                                                                   samples=samples))


def test_fleet_status_shows_the_labelled_accuracy_of_a_labelled_device(fleet_db: Path, tmp_path: Path) -> None:  # noqa: F811
    registry = tmp_path / "registry"
    _labels(registry, "cam-1", "1.0.0", [True, True, True, False])
    _labels(registry, "cam-2", "1.0.0", [False] * 5)  # cam-2 runs 1.1.0 now: its 1.0.0 labels are not shown
    config = tmp_path / "edgefleet.yaml"
    config.write_text(yaml.safe_dump({"monitor": {"store_path": str(fleet_db), "identity": {
        "registry": str(registry)}, "status": {"stale_after_s": 1e6}}}))
    result = CliRunner().invoke(app, ["fleet", "status", "--config", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    shown = text(result)
    assert "spot check cam-1 1.0.0: labelled accuracy 0.75 (0.30-0.95) on 4 frame(s)" in shown
    assert "spot check cam-2" not in shown and "blind to the model's answers" in shown


def test_the_bias_of_the_estimate_is_shown_beside_it(tmp_path: Path) -> None:
    _labels(tmp_path, "cam-1", "1.0.0", [True] * 30 + [False] * 10)
    estimate = AccuracyEstimate(accuracy=0.9, low=0.88, high=0.92, frames=5000, unseen_share=0.0)
    device = DeviceStatus.model_construct(device_id="cam-1", model_name="mobilenet", model_version="1.0.0",
                                          drift=DeviceDrift(status="watching", blocks=50, accuracy=estimate))
    [result] = device_spot_checks(LocalRegistryReader(tmp_path), [device])
    assert result.bias is not None and result.bias.value == 0.9 - 0.75 and result.bias.low > 0  # too high
    assert spot_check_text(result).startswith("cam-1 1.0.0: labelled accuracy 0.75 (0.60-0.86) on 40 frame(s); "
                                              "estimate off by +0.15 (")
