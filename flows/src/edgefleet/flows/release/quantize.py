"""Convert the float Keras model to TFLite: a float32 reference and the full-integer model that ships.

The int8 model uses only `TFLITE_BUILTINS_INT8` operations with uint8 input and output, calibrated on
images from the training split: the form `edgetpu_compiler` requires.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgefleet.flows.release.train import TrainedModel, model_from_bytes, to_real
from edgefleet.kernel.errors import ModelError

log = logging.getLogger(__name__)


class ConvertedModels(NamedTuple):
    """The TFLite conversions of one float model."""

    float_tflite: bytes
    int8_tflite: bytes
    representative_samples: int


def representative_images(train_x: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Up to `count` training images, chosen with `seed` (pure), as float32 model input (`to_real`)."""
    order = np.random.default_rng(seed).permutation(len(train_x))[:count]
    return to_real(train_x[np.sort(order)])


def _saved_model(trained: TrainedModel, directory: Path) -> Path:
    model = model_from_bytes(trained.keras_bytes)
    path = directory / "saved_model"
    model.export(path, format="tf_saved_model", verbose=False)
    return path


def convert(trained: TrainedModel, calibration: np.ndarray) -> ConvertedModels:
    """Converts to float32 TFLite and to full-integer TFLite (uint8 in/out).

    Args:
        trained: The float model (static batch 1).
        calibration: Float32 images [N, H, W, 3] from the training split for the int8 ranges.

    Raises:
        ModelError: the converter refuses the model (for example an operation with no int8 kernel).
    """
    import tensorflow as tf

    def representative() -> Iterator[list[np.ndarray]]:
        for image in calibration:
            yield [image[np.newaxis]]

    with tempfile.TemporaryDirectory(prefix="edgefleet-convert-") as tmp:
        saved = str(_saved_model(trained, Path(tmp)))
        try:
            float_tflite = tf.lite.TFLiteConverter.from_saved_model(saved).convert()
            converter = tf.lite.TFLiteConverter.from_saved_model(saved)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
            int8_tflite = converter.convert()
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            raise ModelError(
                f"TFLite conversion of {trained.source} failed: {str(error).strip().splitlines()[-1]}",
                "use operations with int8 TFLite kernels (Conv2D, DepthwiseConv2D, Dense, pooling, ReLU, "
                "Add, Concatenate, Softmax...); see g.co/coral/model-reqs",
            ) from error
    log.info(
        "Converted %s: float32 %d bytes, int8 %d bytes", trained.source, len(float_tflite), len(int8_tflite)
    )
    return ConvertedModels(float_tflite, int8_tflite, len(calibration))
