"""Tiny real TFLite models for tests: the colour scheme and the SSD-style detector both conftests build.

A detector whose image quadrants are its anchors (a quadrant's class is its dominant colour), ending in the
real `TFLite_Detection_PostProcess` op, fused by the converter from a function annotated
`experimental_implements`, as the TF2 object detection API exports it. TensorFlow is imported by the caller
and passed in (the device's Pythons have none; see tests/device/runtime/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

COLOURS = ("red", "green", "blue")
# Anchors (ycenter, xcenter, height, width), one per quadrant: top-left, top-right, bottom-left, bottom-right.
DETECTOR_ANCHORS = np.array([[0.25, 0.25, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5],
                             [0.75, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]], np.float32)
LOGIT_GAIN = 4.0
REPRESENTATIVE_SAMPLES = 32


def postprocess_signature() -> str:
    ints = {"max_detections": 4, "max_classes_per_detection": 1, "detections_per_class": 4,
            "num_classes": len(COLOURS)}
    floats = {"nms_score_threshold": 0.1, "nms_iou_threshold": 0.5, "y_scale": 10.0, "x_scale": 10.0,
              "h_scale": 5.0, "w_scale": 5.0}
    parts = ['name: "TFLite_Detection_PostProcess"']
    parts += [f'attr {{ key: "{k}" value {{ i: {v} }} }}' for k, v in ints.items()]
    parts.append('attr { key: "use_regular_nms" value { b: false } }')
    parts += [f'attr {{ key: "{k}" value {{ f: {v} }} }}' for k, v in floats.items()]
    return " ".join(parts)


def representative_dataset(size: int, seed: int) -> Callable[[], Iterator[list[np.ndarray]]]:
    """Random images in [-1, 1] plus the two extremes, so the int8 ranges cover the whole input range."""
    rng = np.random.default_rng(seed)

    def representative() -> Iterator[list[np.ndarray]]:
        for _ in range(REPRESENTATIVE_SAMPLES):
            yield [rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)]
        for value in (-1.0, 1.0):
            yield [np.full((1, size, size, 3), value, np.float32)]

    return representative


def detector_converter(tf: Any, size: int) -> Any:
    """A TFLiteConverter for the quadrant detector on `size` x `size` images (float, no optimizations yet)."""

    @tf.function(experimental_implements=postprocess_signature())
    def postprocess(box_encodings, class_predictions, anchors):
        # Placeholder body: the converter replaces the whole function with the TFLite op.
        del box_encodings, class_predictions, anchors
        zero = tf.constant(0.0, dtype=tf.float32)
        return zero, zero, zero, zero

    class Detector(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
        def serve(self, images):
            half = size // 2
            quadrants = tf.nn.avg_pool2d(images, half, half, "VALID")  # [1, 2, 2, 3] in anchor order
            logits = tf.reshape(quadrants, [1, len(DETECTOR_ANCHORS), len(COLOURS)]) * LOGIT_GAIN
            background = tf.zeros([1, len(DETECTOR_ANCHORS), 1])
            scores = tf.concat([background, tf.sigmoid(logits)], axis=-1)
            encodings = tf.zeros([1, len(DETECTOR_ANCHORS), 4])  # boxes = anchors
            return postprocess(encodings, scores, tf.constant(DETECTOR_ANCHORS))

    module = Detector()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    converter.allow_custom_ops = True
    return converter


def detector_labels_text() -> str:
    """pycoral's "id label" form, as Coral's detector labels are."""
    return "".join(f"{i}  {name}\n" for i, name in enumerate(COLOURS))
