"""The labeller's file: CSV or JSON Lines, every problem named by file and line, nothing imported with one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgefleet.kernel.contracts.spotcheck import LabelledSample, SpotLabels
from edgefleet.monitor.spotcheck_labels import LabelsError, label_samples, merged, parse_labels
from tests.spot_samples import EnrolledFleet, spot_sample

NOW = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)
F1, F2 = "20261207T210000Z-000000000001", "20261207T210000Z-000000000002"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_csv_and_a_jsonl_file_give_the_same_rows_and_empty_labels_are_skipped(tmp_path: Path) -> None:
    csv_file = _write(tmp_path, "labels.csv", f"device_id,frame_id,image,label\ncam-1,{F1},x.jpg,robin\n"
                                              f"cam-1,{F2},y.jpg,\ncam-2,{F1},z.jpg, crow \n")
    jsonl = _write(tmp_path, "labels.jsonl", "\n".join(json.dumps(row) for row in (
        {"device_id": "cam-1", "frame_id": F1, "label": "robin"}, {"device_id": "cam-1", "frame_id": F2, "label": ""},
        {"device_id": "cam-2", "frame_id": F1, "label": "crow"})) + "\n\n")
    from_csv, from_jsonl = parse_labels(csv_file), parse_labels(jsonl)
    assert [(r.device_id, r.frame_id, r.label) for r in from_csv.rows] == [("cam-1", F1, "robin"),
                                                                             ("cam-2", F1, "crow")]
    assert [r[1:] for r in from_jsonl.rows] == [r[1:] for r in from_csv.rows]
    assert from_csv.unlabelled == from_jsonl.unlabelled == 1
    assert from_csv.rows[1].where == f"{csv_file}:4"


def test_every_bad_row_is_named_by_file_and_line_with_the_fix(tmp_path: Path) -> None:
    path = _write(tmp_path, "labels.csv", f"device_id,frame_id,label\ncam-1,{F1},robin\nCam 1,{F1},robin\n"
                                          f"cam-1,frame-7,robin\ncam-1,{F1},crow\ncam-1,{F2},{'x' * 300}\n")
    with pytest.raises(LabelsError) as caught:
        parse_labels(path)
    message = caught.value.message
    assert "4 problem(s), nothing imported" in message
    for line, what in ((3, "device id 'Cam 1'"), (4, "frame id 'frame-7'"),
                       (5, f"cam-1 {F1} labelled 'crow' here and 'robin'"), (6, "the label is 300 characters")):
        assert f"{path}:{line}: {what}" in message
    assert "device_id,frame_id,label" in (caught.value.fix or "")


@pytest.mark.parametrize(("name", "text", "named"), [
    ("labels.csv", "frame,label\nx,y\n", ":1: the header lacks device_id, frame_id"),
    ("labels.jsonl", '{"device_id": "cam-1"\n', ":1: not JSON"),
    ("labels.jsonl", '["cam-1"]\n', ":1: not a JSON object"),
    ("labels.jsonl", '{"device_id": "cam-1", "frame_id": 7, "label": "x"}\n', ":1: needs the text fields"),
])
def test_a_file_of_the_wrong_shape_is_named(tmp_path: Path, name: str, text: str, named: str) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(LabelsError, match="nothing imported") as caught:
        parse_labels(path)
    assert f"{path}{named}" in caught.value.message


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(LabelsError, match="cannot read the labels file"):
        parse_labels(tmp_path / "missing.csv")


def test_labels_join_the_uploaded_samples_and_a_missing_sample_names_its_row(tmp_path: Path) -> None:
    fleet = EnrolledFleet(tmp_path, ("cam-1",))
    fleet.upload("cam-1", F1, f"jpeg of {F1}".encode())
    fleet.upload("cam-1", F2, f"jpeg of {F2}".encode())
    path = _write(tmp_path, "labels.csv", f"device_id,frame_id,label\ncam-1,{F1},robin\ncam-1,{F2},3\n"
                                          f"cam-1,20261207T210000Z-000000000009,crow\n")
    rows = parse_labels(path).rows
    with pytest.raises(LabelsError) as caught:
        label_samples(fleet.reader(), path, rows)
    assert f"{path}:4: no sample 20261207T210000Z-000000000009 of cam-1" in caught.value.message
    joined = label_samples(fleet.reader(), path, rows[:2])
    assert [(s.frame_id, s.label, s.correct) for s in joined.labelled["cam-1"]] == [(F1, "robin", True),
                                                                                     (F2, "3", True)]
    assert joined.refused == ()


def test_a_sample_its_device_did_not_sign_is_left_out_and_named(tmp_path: Path) -> None:
    fleet = EnrolledFleet(tmp_path, ("cam-1",))
    fleet.upload("cam-1", F1, b"signed")
    fleet.plant("cam-1", F2, spot_sample("cam-1", F2, b"unsigned"), b"unsigned")
    path = _write(tmp_path, "labels.csv", f"device_id,frame_id,label\ncam-1,{F1},robin\ncam-1,{F2},robin\n")
    joined = label_samples(fleet.reader(), path, parse_labels(path).rows)
    assert [s.frame_id for s in joined.labelled["cam-1"]] == [F1]
    assert [(where.endswith(f"spotcheck/cam-1/{F2}.json"), reason) for where, reason in joined.refused] == [
        (True, f"sample {F2} of cam-1 is not signed")]


def test_a_frame_labelled_again_takes_the_new_label() -> None:
    def sample(frame: str, label: str) -> LabelledSample:
        return LabelledSample(frame_id=frame, model="birds", model_version="1.0.0", answer_label="robin",
                              answer_score=0.9,
                              label=label, correct=label == "robin")

    first = merged(None, "cam-1", [sample(F2, "crow"), sample(F1, "robin")], NOW)
    again = merged(first, "cam-1", [sample(F2, "robin")], NOW)
    assert isinstance(again, SpotLabels)
    assert [(s.frame_id, s.label) for s in again.samples] == [(F1, "robin"), (F2, "robin")]
