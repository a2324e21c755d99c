"""`edgefleet spotcheck pending|import`: the labellers' CSV out, the labels back in, recorded per device; a file
with any problem imports nothing."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from edgefleet.cli.app import app
from edgefleet.kernel.contracts.spotcheck import SpotLabels, labels_key
from tests.spot_samples import FIXTURE_SHARE, EnrolledFleet

NOW = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)
FRAMES = [f"20261207T210000Z-{seq:012d}" for seq in range(4)]


def _registry_with_samples(tmp_path: Path) -> tuple[Path, list[str]]:
    """The registry root, and the option naming the enrolment public key."""
    fleet = EnrolledFleet(tmp_path, ("cam-1", "cam-2"))
    for device in ("cam-1", "cam-2"):
        for frame in FRAMES:
            fleet.upload(device, frame, f"{device} {frame}".encode())
    return fleet.root, ["--enrolment-public-key", str(fleet.enrolment_public_key), "--share", str(FIXTURE_SHARE)]


def _labelled(root: Path, device: str) -> SpotLabels | None:
    path = root / labels_key(device)
    return SpotLabels.model_validate(json.loads(path.read_text())) if path.exists() else None


def test_pending_frames_go_out_as_csv_and_come_back_labelled(tmp_path: Path) -> None:
    root, keys = _registry_with_samples(tmp_path)
    runner = CliRunner()
    out = runner.invoke(app, ["spotcheck", "pending", "-r", str(root), *keys])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["device_id"], r["frame_id"]) for r in rows] == [(d, f) for d in ("cam-1", "cam-2") for f in FRAMES]
    assert rows[0]["image"].endswith(f"spotcheck/cam-1/{FRAMES[0]}.jpg") and "robin" not in out.stdout
    for index, row in enumerate(rows):  # the labeller: cam-1 all robins, cam-2 half crows, one left unlabelled
        row["label"] = "robin" if row["device_id"] == "cam-1" or index % 2 else "crow"
    rows[-1]["label"] = ""
    labels = tmp_path / "labelled.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = runner.invoke(app, ["spotcheck", "import", str(labels), "-r", str(root), *keys])
    assert result.exit_code == 0, result.output
    assert "cam-1: 4 labelled frame(s); 1.0.0: 4/4 right" in result.stdout
    assert "cam-2: 3 labelled frame(s); 1.0.0: 1/3 right" in result.stdout
    assert "1 row(s) without a label skipped" in result.output
    cam2 = _labelled(root, "cam-2")
    assert cam2 is not None and [s.correct for s in cam2.samples] == [False, True, False]
    left = runner.invoke(app, ["spotcheck", "pending", "-r", str(root), *keys, "--device", "cam-2"])
    assert [r["frame_id"] for r in csv.DictReader(io.StringIO(left.stdout))] == [FRAMES[3]]


def test_a_labels_file_with_one_bad_row_imports_nothing(tmp_path: Path) -> None:
    root, keys = _registry_with_samples(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text(f"device_id,frame_id,label\ncam-1,{FRAMES[0]},robin\ncam-2,{FRAMES[1]},crow\n"
                      "cam-2,20261207T210000Z-000000000099,crow\n")  # no such sample
    result = CliRunner().invoke(app, ["spotcheck", "import", str(labels), "-r", str(root), *keys])
    assert result.exit_code != 0
    assert f"{labels}:4: no sample 20261207T210000Z-000000000099 of cam-2" in result.output
    assert "nothing imported" in result.output
    assert _labelled(root, "cam-1") is None and _labelled(root, "cam-2") is None
