"""`class_id_count`: the class ids a label map spans, gaps included (COCO's 80 labels have ids 0..89)."""

from __future__ import annotations

from edgefleet.device.runtime.adapters.labels import class_id_count, parse_labels

COCO_GAPS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82)
"""The ids pycoral's coco_labels.txt leaves out (COCO 2017's 80 categories numbered 0..89)."""


def coco_like_labels() -> str:
    return "\n".join(f"{i}  class {i}" for i in range(90) if i not in COCO_GAPS) + "\n"


def test_a_gapped_label_map_spans_its_highest_id_not_its_label_count() -> None:
    labels = parse_labels(coco_like_labels())
    assert len(labels) == 80 and class_id_count(labels) == 90


def test_a_line_per_label_file_spans_its_lines_and_blank_trailing_lines_name_nothing() -> None:
    assert class_id_count(parse_labels("background\ncat\ndog\n\n")) == 3
    assert class_id_count({}) == 0
