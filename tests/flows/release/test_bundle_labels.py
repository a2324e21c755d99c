"""The manifest's `label_count` of a labels file with gaps in its ids (COCO: 80 labels, ids 0..89) spans every
id, so the canary judge's class list over it (`range(label_count)`) keeps each class apart instead of lumping the
ids beyond the count together into "other"."""

from __future__ import annotations

from pathlib import Path

from edgefleet.flows.release.bundle import build_manifest
from edgefleet.flows.rollout.classmix import comparable, release_classes
from edgefleet.kernel.contracts.manifest import Quantization, TensorSpec

from ...device.runtime.adapters.test_labels import coco_like_labels

INPUT = TensorSpec(name="input", shape=(1, 300, 300, 3), dtype="uint8",
                   quantization=Quantization(scale=0.0078125, zero_point=128))
OUTPUT = TensorSpec(name="boxes", shape=(1, 10, 4), dtype="float32")


def test_a_gapped_label_map_keeps_its_high_ids_apart_in_the_judges_class_list(tmp_path: Path) -> None:
    version = tmp_path / "coco"
    version.mkdir()
    (version / "model_cpu.tflite").write_bytes(b"detector")
    (version / "labels.txt").write_text(coco_like_labels(), encoding="utf-8")

    manifest = build_manifest(version, model="coco", version="1.0.0", task="detection", input=INPUT,
                              outputs=(OUTPUT,))

    assert manifest.label_count == 90
    cells = release_classes(manifest.label_count, None)
    assert {85, 88, 89} <= set(cells)  # vase, hair drier, toothbrush: each its own cell
    before, after = {85: 40.0, 89: 10.0}, {85: 10.0, 89: 40.0}  # vases became toothbrushes
    used, _ = comparable(cells, before, after)
    assert 85 in used and 89 in used
