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

import pytest
from tiny_tflite import detector_converter, detector_labels_text, representative_dataset

DETECTOR_SIZE = 32


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


@pytest.fixture(scope="session")
def brought_detector(tmp_path_factory: pytest.TempPathFactory) -> BroughtDetector:
    import tensorflow as tf

    converter = detector_converter(tf, DETECTOR_SIZE)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(DETECTOR_SIZE, seed=3)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    directory = tmp_path_factory.mktemp("brought-detector")
    model = directory / "ssd_colours_quant_postprocess.tflite"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.write_bytes(converter.convert())
    labels = directory / "colours_labels.txt"
    labels.write_text(detector_labels_text())
    return BroughtDetector(model, labels)
