"""Fixtures of the brought-model tests: Coral's published models, and a small int8 SSD detector.

The detector is the runtime tests' `TFLite_Detection_PostProcess` model (tests/device/runtime/conftest.py),
converted here with full-integer quantization (uint8 input), as a brought model would be: each image
quadrant is one anchor, its class the quadrant's dominant colour.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

COLOURS = ("red", "green", "blue")
DETECTOR_SIZE = 32
DETECTOR_ANCHORS = np.array(
    [[0.25, 0.25, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]], np.float32
)
LOGIT_GAIN = 4.0


class CoralModels(NamedTuple):
    """Coral's published classifiers (../shared/coral-test-data)."""

    directory: Path
    v2_224: Path
    v1_128: Path
    v1_128_edgetpu: Path
    imagenet_labels: Path


class BroughtDetector(NamedTuple):
    model: Path
    labels: Path


@pytest.fixture(scope="session")
def coral_models(request: pytest.FixtureRequest) -> CoralModels:
    """The Coral test data beside the repo (`coral_data`), or where EDGEFLEET_CORAL_TEST_DATA points."""
    override = os.environ.get("EDGEFLEET_CORAL_TEST_DATA")
    directory = Path(override) if override else request.getfixturevalue("coral_data")
    if not directory.is_dir():
        pytest.skip(f"Coral test data not found at {directory}")
    return CoralModels(
        directory,
        directory / "mobilenet_v2_1.0_224_quant.tflite",
        directory / "mobilenet_v1_0.25_128_quant.tflite",
        directory / "mobilenet_v1_0.25_128_quant_edgetpu.tflite",
        directory / "imagenet_labels.txt",
    )


def _postprocess_signature() -> str:
    ints = {"max_detections": 4, "max_classes_per_detection": 1, "detections_per_class": 4,
            "num_classes": len(COLOURS)}
    floats = {"nms_score_threshold": 0.1, "nms_iou_threshold": 0.5, "y_scale": 10.0, "x_scale": 10.0,
              "h_scale": 5.0, "w_scale": 5.0}
    parts = ['name: "TFLite_Detection_PostProcess"']
    parts += [f'attr {{ key: "{k}" value {{ i: {v} }} }}' for k, v in ints.items()]
    parts.append('attr { key: "use_regular_nms" value { b: false } }')
    parts += [f'attr {{ key: "{k}" value {{ f: {v} }} }}' for k, v in floats.items()]
    return " ".join(parts)


@pytest.fixture(scope="session")
def brought_detector(tmp_path_factory: pytest.TempPathFactory) -> BroughtDetector:
    import tensorflow as tf

    @tf.function(experimental_implements=_postprocess_signature())
    def postprocess(box_encodings, class_predictions, anchors):
        # Placeholder body: the converter replaces the whole function with the TFLite op.
        del box_encodings, class_predictions, anchors
        zero = tf.constant(0.0, dtype=tf.float32)
        return zero, zero, zero, zero

    class Detector(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, DETECTOR_SIZE, DETECTOR_SIZE, 3], tf.float32)])
        def serve(self, images):
            half = DETECTOR_SIZE // 2
            quadrants = tf.nn.avg_pool2d(images, half, half, "VALID")  # [1, 2, 2, 3] in anchor order
            logits = tf.reshape(quadrants, [1, len(DETECTOR_ANCHORS), len(COLOURS)]) * LOGIT_GAIN
            background = tf.zeros([1, len(DETECTOR_ANCHORS), 1])
            scores = tf.concat([background, tf.sigmoid(logits)], axis=-1)
            encodings = tf.zeros([1, len(DETECTOR_ANCHORS), 4])  # boxes = anchors
            return postprocess(encodings, scores, tf.constant(DETECTOR_ANCHORS))

    module = Detector()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    converter.allow_custom_ops = True
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(3)

    def representative():
        for _ in range(32):
            yield [rng.uniform(-1, 1, (1, DETECTOR_SIZE, DETECTOR_SIZE, 3)).astype(np.float32)]
        for value in (-1.0, 1.0):
            yield [np.full((1, DETECTOR_SIZE, DETECTOR_SIZE, 3), value, np.float32)]

    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    directory = tmp_path_factory.mktemp("brought-detector")
    model = directory / "ssd_colours_quant_postprocess.tflite"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.write_bytes(converter.convert())
    labels = directory / "colours_labels.txt"  # pycoral's "id label" form, as Coral's detector labels are
    labels.write_text("".join(f"{i}  {name}\n" for i, name in enumerate(COLOURS)))
    return BroughtDetector(model, labels)
