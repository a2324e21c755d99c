"""SSD-style detection on a real `TFLite_Detection_PostProcess` graph (see conftest), and the box maths."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.device.runtime.adapters.common import input_size, set_input
from edgefleet.device.runtime.adapters.detect import BBox, DetectionOutputs, get_objects, objects_from_outputs
from edgefleet.device.runtime.engine import Engine
from edgefleet.device.runtime.interpreter import inspect_model, make_interpreter
from edgefleet.device.runtime.preprocess import Preprocessor, image_scale
from edgefleet.kernel.errors import ModelError

RED, GREEN, BLUE = (240, 10, 10), (10, 240, 10), (10, 10, 240)


def _split_image(width: int, height: int) -> np.ndarray:
    """Left half red, right half green."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = RED
    image[:, width // 2 :] = GREEN
    return image


def test_detector_exposes_the_postprocess_outputs(tiny_models):
    info = inspect_model(tiny_models.detector)
    assert info.postprocess_outputs is not None and len(info.postprocess_outputs) == 4
    assert info.custom_ops == ("TFLite_Detection_PostProcess",)


def test_engine_maps_boxes_back_to_the_original_image(tiny_models):
    """A 64x32 frame letterboxes into the top half of the 16x16 input: the two top anchors see red and
    green; their boxes (the anchors) map back to the two halves of the original frame."""
    image = _split_image(64, 32)
    with Engine.open(tiny_models.detector, labels_path=tiny_models.detector_labels, task="detection",
                     score_threshold=0.5) as engine:
        result = engine.infer(engine.prepare(image), image_size=(64, 32))

    found = sorted((r.id, r.label, tuple(r.box)) for r in result.results)
    assert found == [(0, "red", (0, 0, 32, 32)), (1, "green", (32, 0, 64, 32))]
    assert all(r.score > 0.9 for r in result.results)


def test_without_image_size_boxes_are_in_input_pixels(tiny_models):
    with Engine.open(tiny_models.detector, task="detection", score_threshold=0.5) as engine:
        result = engine.infer(engine.prepare(_split_image(64, 32)))
    assert sorted(tuple(r.box) for r in result.results) == [(0, 0, 8, 8), (8, 0, 16, 8)]


def test_threshold_filters_detections(tiny_models):
    image = np.zeros((16, 16, 3), np.uint8)
    image[8:, 8:] = BLUE  # bottom-right anchor only
    with Engine.open(tiny_models.detector, task="detection", score_threshold=0.5) as engine:
        result = engine.infer(engine.prepare(image), image_size=(16, 16))
    assert [(r.id, tuple(r.box)) for r in result.results] == [(2, (8, 8, 16, 16))]


def test_pycoral_get_objects_with_stretched_input(tiny_models):
    """pycoral's flow: resize (stretched) into the input, then get_objects with the image scale."""
    interpreter = make_interpreter(tiny_models.detector)
    info = inspect_model(tiny_models.detector)
    width, height = 200, 100
    tensor = Preprocessor(info.input)(_split_image(width, height))
    set_input(interpreter, tensor)
    interpreter.invoke()

    scale = image_scale((width, height), input_size(interpreter), keep_aspect=False)
    objects = get_objects(interpreter, 0.5, scale, info.postprocess_outputs)
    assert sorted((o.id, tuple(o.bbox)) for o in objects) == [
        (0, (0, 0, 100, 50)), (0, (0, 50, 100, 100)), (1, (100, 0, 200, 50)), (1, (100, 50, 200, 100))]


def test_objects_from_outputs_maths():
    outputs = DetectionOutputs(
        boxes=np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.4, 0.4]], np.float32),
        class_ids=np.array([3, 1, 7], np.float32), scores=np.array([0.9, 0.2, 0.8], np.float32), count=2)
    objects = objects_from_outputs(outputs, input_size=(300, 300), score_threshold=0.1,
                                   image_scale=(0.5, 0.25))
    # x: 300 / 0.5 = 600 px per unit, y: 300 / 0.25 = 1200 px per unit; the third row is beyond count.
    assert [(o.id, tuple(o.bbox)) for o in objects] == [(3, (120, 120, 360, 600)), (1, (0, 0, 600, 1200))]
    assert [o.id for o in objects_from_outputs(outputs, (300, 300), score_threshold=0.5)] == [3]


def test_bbox_geometry():
    a, b = BBox(0, 0, 10, 10), BBox(5, 5, 15, 15)
    assert BBox.intersect(a, b) == BBox(5, 5, 10, 10)
    assert BBox.union(a, b) == BBox(0, 0, 15, 15)
    assert BBox.iou(a, b) == pytest.approx(25 / 175)
    assert BBox.iou(a, BBox(20, 20, 30, 30)) == 0.0
    assert a.scale(2, 3).translate(1, 1) == BBox(1, 1, 21, 31)


def test_classifier_is_not_a_detector(coral_data):
    with pytest.raises(ModelError, match="not the 4 of an SSD"):
        Engine.open(coral_data / "mobilenet_v2_1.0_224_quant.tflite", task="detection")
