"""`fleet status` shows each labelled device's spot check beside its estimated accuracy, and the estimate's bias."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html.parser import HTMLParser
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
from tests.spot_samples import NO_REVOCATIONS, SIGNING_KEY_ID, enrolment_public_key_file

NOW = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)


def _labels(root: Path, device: str, version: str, marks: list[bool]) -> None:
    samples = tuple(LabelledSample(frame_id=f"20261207T210000Z-{i:012d}", model="mobilenet", model_version=version,
                                   answer_id=1,
                                   answer_label="robin", answer_score=0.9, label="robin" if right else "crow",
                                   correct=right, key_id=SIGNING_KEY_ID) for i, right in enumerate(marks))
    LocalRegistryWriter(root, create=True).put_json(labels_key(device), SpotLabels(device_id=device, updated_at=NOW,
                                                                                   samples=samples))


def test_fleet_status_shows_the_labelled_accuracy_of_a_labelled_device(fleet_db: Path, tmp_path: Path) -> None:  # noqa: F811
    registry = tmp_path / "registry"
    _labels(registry, "cam-1", "1.0.0", [True, True, True, False])
    _labels(registry, "cam-2", "1.0.0", [False] * 5)  # cam-2 runs 1.1.0 now: its 1.0.0 labels are not shown
    config = tmp_path / "edgefleet.yaml"
    config.write_text(yaml.safe_dump({"monitor": {"store_path": str(fleet_db), "identity": {
        "registry": str(registry), "enrolment_keys": [enrolment_public_key_file(tmp_path)]},
        "status": {"stale_after_s": 1e6}}}))
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
    [result] = device_spot_checks(LocalRegistryReader(tmp_path), [device], NO_REVOCATIONS)
    assert result.bias is not None and result.bias.value == 0.9 - 0.75 and result.bias.low > 0  # too high
    assert spot_check_text(result).startswith("cam-1 1.0.0: labelled accuracy 0.75 (0.60-0.86) on 40 frame(s); "
                                              "estimate off by +0.15 (")


def _labelled_fleet(fleet_db: Path, tmp_path: Path) -> Path:  # noqa: F811 - the fixture's value
    """cam-1 (3 of 4 right) and cam-3 (5 of 5) labelled on mobilenet 1.0.0, which both run; the monitor config."""
    registry = tmp_path / "registry"
    _labels(registry, "cam-1", "1.0.0", [True, True, True, False])
    _labels(registry, "cam-3", "1.0.0", [True] * 5)
    config = tmp_path / "edgefleet.yaml"
    config.write_text(yaml.safe_dump({"monitor": {"store_path": str(fleet_db), "identity": {
        "registry": str(registry), "enrolment_keys": [enrolment_public_key_file(tmp_path)]},
        "status": {"stale_after_s": 1e6}}}))
    return config


def test_fleet_status_json_has_the_spot_check_per_version_and_per_device(fleet_db: Path, tmp_path: Path) -> None:  # noqa: F811
    config = _labelled_fleet(fleet_db, tmp_path)
    result = CliRunner().invoke(app, ["fleet", "status", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    spot = json.loads(result.stdout)["spot_check"]
    assert spot["error"] is None and spot["registry"].endswith("registry")
    [version] = spot["versions"]
    assert {key: version[key] for key in ("model", "model_version", "devices", "labelled", "right")} == {
        "model": "mobilenet", "model_version": "1.0.0", "devices": 2, "labelled": 9, "right": 8}
    assert version["accuracy"]["value"] == 8 / 9 and version["accuracy"]["low"] < 8 / 9 < version["accuracy"]["high"]
    assert version["bias"] is None and version["estimated"] is None  # no device has an estimate here
    assert [(d["device_id"], d["labelled"]) for d in spot["devices"]] == [("cam-1", 4), ("cam-3", 5)]
    shown = text(CliRunner().invoke(app, ["fleet", "status", "--config", str(config)], env={"COLUMNS": "200"}))
    assert "spot check mobilenet:1.0.0: labelled accuracy 0.89 (0.57-0.98) on 9 frame(s) of 2 device(s)" in shown


def test_fleet_status_json_without_a_registry_has_no_spot_check(fleet_db: Path) -> None:  # noqa: F811
    result = CliRunner().invoke(app, ["fleet", "status", "--json", "--db", str(fleet_db)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["spot_check"] is None


class _SpotCheckRows(HTMLParser):
    """The cells of each row of the page's spot-check section, by the row's version."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.section, self.row, self.cell = "", "", False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section":
            self.section = values.get("id") or ""
        elif tag == "tr" and self.section == "spot-check" and values.get("data-version"):
            self.row = values["data-version"] or ""
            self.rows[self.row] = []
        self.cell = tag == "td" and bool(self.row)

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self.row = ""
        self.cell = False

    def handle_data(self, data: str) -> None:
        if self.cell:
            self.rows[self.row].append(data)


def test_the_fleet_page_has_a_spot_check_row_per_version(fleet_db: Path, tmp_path: Path) -> None:  # noqa: F811
    config = _labelled_fleet(fleet_db, tmp_path)
    page = tmp_path / "fleet.html"
    result = CliRunner().invoke(app, ["fleet", "status", "--config", str(config), "--html", str(page)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    parser = _SpotCheckRows()
    parser.feed(page.read_text())
    assert parser.rows == {"1.0.0": ["1.0.0", "2", "9", "0.89 (0.57-0.98)", "-", "-"]}
    assert "blind to the model&#x27;s answers" in page.read_text()
