"""Fixtures of the runtime tests: tiny real TFLite models converted with TensorFlow, once per session.

- a colour classifier (mean of each RGB channel -> 3 classes: red, green, blue) as float32-input and as
  full-int8 (int8 input and output) models, to check the pixel -> tensor conversion of each dtype;
- an SSD-style detector ending in the real `TFLite_Detection_PostProcess` op (fused by the converter from
  a function annotated `experimental_implements`, as the TF2 object detection API exports it): each image
  quadrant is one anchor, its class is the quadrant's dominant colour.

Where TensorFlow cannot be installed (the device's Pythons, 3.9 and 3.13, in .ci/device-pythons), the same
models are built beforehand by `python tests/device/runtime/conftest.py DIR` under the project's Python and
read from `EDGEFLEET_TINY_MODELS=DIR`; without either, the tests that need them skip.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, also when run as a script
from tiny_tflite import (  # noqa: E402
    COLOURS,
    LOGIT_GAIN,
    detector_converter,
    detector_labels_text,
    representative_dataset,
)

CLASSIFIER_SIZE = 16
DETECTOR_SIZE = 16


class TinyModels(NamedTuple):
    classifier_float: Path
    classifier_int8: Path
    detector: Path
    colour_labels: Path
    detector_labels: Path


def _paths(directory: Path) -> TinyModels:
    return TinyModels(directory / "colour_float.tflite", directory / "colour_int8.tflite",
                      directory / "detector.tflite", directory / "colours.txt", directory / "detector_labels.txt")


def _build(directory: Path) -> TinyModels:
    import tensorflow as tf  # only the tests build models; the device runtime never imports TensorFlow

    inputs = tf.keras.Input((CLASSIFIER_SIZE, CLASSIFIER_SIZE, 3), batch_size=1)
    pooled = tf.keras.layers.GlobalAveragePooling2D()(inputs)
    dense = tf.keras.layers.Dense(len(COLOURS))
    outputs = tf.keras.layers.Softmax()(dense(pooled))
    dense.set_weights([np.eye(3, dtype=np.float32) * LOGIT_GAIN, np.zeros(3, np.float32)])
    model = tf.keras.Model(inputs, outputs)

    classifier_float = directory / "colour_float.tflite"
    classifier_float.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(CLASSIFIER_SIZE, seed=7)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    classifier_int8 = directory / "colour_int8.tflite"
    with warnings.catch_warnings():  # "Statistics for quantized inputs were expected": not for int8 I/O
        warnings.simplefilter("ignore", UserWarning)
        classifier_int8.write_bytes(converter.convert())

    converter = detector_converter(tf, DETECTOR_SIZE)
    detector = directory / "detector.tflite"
    detector.write_bytes(converter.convert())

    colour_labels = directory / "colours.txt"
    colour_labels.write_text("\n".join(COLOURS) + "\n")
    detector_labels = directory / "detector_labels.txt"
    detector_labels.write_text(detector_labels_text())
    return TinyModels(classifier_float, classifier_int8, detector, colour_labels, detector_labels)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """Tiny real models converted with TFLiteConverter (see the module docstring)."""
    prebuilt = os.environ.get("EDGEFLEET_TINY_MODELS")
    if prebuilt:
        models = _paths(Path(prebuilt))
        missing = [str(path) for path in models if not path.is_file()]
        if missing:
            pytest.fail(f"EDGEFLEET_TINY_MODELS={prebuilt} lacks {missing}: build them with "
                        "`python tests/device/runtime/conftest.py DIR` where TensorFlow is installed")
        return models
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow (not a device dependency) is needed to build the tiny test models: set "
                    "EDGEFLEET_TINY_MODELS to models built beforehand")
    return _build(tmp_path_factory.mktemp("tiny-models"))


if __name__ == "__main__":  # prebuild the models for a Python without TensorFlow (see the module docstring)
    built = _build(Path(sys.argv[1]))
    assert built == _paths(Path(sys.argv[1]))

