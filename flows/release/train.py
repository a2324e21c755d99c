"""Build and train the float classifier with Keras 3 (TensorFlow backend), or load a user's trained model.

Models take real-valued RGB input, real = (pixel - mean) / std with the device runtime's normalization
(`RuntimeConfig.input_mean/input_std`, pycoral's 128/128: [-1, 1]), so the int8 model's input quantization is
what the device's preprocessing produces from camera pixels. Training uses a dynamic batch; the model that
is exported has a static batch of 1 (the same weights), so the TFLite graph has no dynamic-shape operations,
which the Edge TPU compiler cannot map.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from edgefleet.device.errors import ModelError  # noqa: E402
from edgefleet.device.runtime.config import DEFAULT_RUNTIME_CONFIG  # noqa: E402
from edgefleet.flows.release.dataset import Dataset  # noqa: E402
from edgefleet.flows.release.params import TrainingParams  # noqa: E402

log = logging.getLogger(__name__)

KERAS_SUFFIX = ".keras"
H5_SUFFIXES = (".h5", ".hdf5")
SAVED_MODEL_FILE = "saved_model.pb"
RGB_CHANNELS = 3


class TrainedModel(NamedTuple):
    """A float model as bytes of a `.keras` file (so it can be cached and handed between tasks).

    Attributes:
        keras_bytes: The `.keras` archive; its input has a static batch of 1.
        input_size: Side of the square RGB input.
        classes: Number of output classes.
        train_accuracy: Last-epoch training accuracy (None for a user-supplied model).
        source: "trained:<architecture>" or the user model path.
    """

    keras_bytes: bytes
    input_size: int
    classes: int
    train_accuracy: float | None
    source: str


def to_real(
    pixels: np.ndarray,
    mean: float = DEFAULT_RUNTIME_CONFIG.input_mean,
    std: float = DEFAULT_RUNTIME_CONFIG.input_std,
) -> np.ndarray:
    """uint8 pixels -> float32 model input, real = (p - mean) / std: the device's normalization."""
    return ((pixels.astype(np.float32) - mean) / std).astype(np.float32)


def small_cnn(inputs: keras.KerasTensor, classes: int, filters: tuple[int, ...]) -> keras.KerasTensor:
    """Conv-ReLU-MaxPool blocks, global average pooling, a dense softmax head: all Edge TPU operations."""
    x = inputs
    for block, width in enumerate(filters):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{block}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{block}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(classes, name="logits")(x)
    return keras.layers.Softmax(name="probabilities")(x)


def mobilenet_v2(
    inputs: keras.KerasTensor, classes: int, alpha: float, batchnorm_momentum: float
) -> keras.KerasTensor:
    """Keras MobileNetV2 from scratch (no pretrained weights); takes the device's [-1, 1] normalization.

    Keras builds its batch normalization with momentum 0.999, made for ImageNet-length training: after a few
    hundred steps the moving statistics the exported model uses are still near their initial values. From
    scratch on a small dataset they must follow the data faster (`batchnorm_momentum`).
    """
    backbone = keras.applications.MobileNetV2(
        input_shape=tuple(inputs.shape[1:]), alpha=alpha, include_top=False, weights=None, pooling="avg"
    )
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = batchnorm_momentum
    x = backbone(inputs)
    x = keras.layers.Dense(classes, name="logits")(x)
    return keras.layers.Softmax(name="probabilities")(x)


def build_model(params: TrainingParams, classes: int, batch_size: int | None) -> keras.Model:
    """The architecture named by `params`, with input [batch_size, size, size, 3] real values (`to_real`)."""
    inputs = keras.Input(
        shape=(params.input_size, params.input_size, RGB_CHANNELS), batch_size=batch_size, name="image"
    )
    if params.architecture == "small_cnn":
        outputs = small_cnn(inputs, classes, params.small_cnn_filters)
    else:
        outputs = mobilenet_v2(inputs, classes, params.mobilenet_alpha, params.batchnorm_momentum)
    return keras.Model(inputs, outputs, name=params.architecture)


def model_to_bytes(model: keras.Model) -> bytes:
    """Serializes a Keras model to `.keras` archive bytes."""
    with tempfile.TemporaryDirectory(prefix="edgefleet-keras-") as tmp:
        path = Path(tmp) / f"model{KERAS_SUFFIX}"
        model.save(path)
        return path.read_bytes()


def model_from_bytes(data: bytes) -> keras.Model:
    """Loads a model serialized by `model_to_bytes`."""
    with tempfile.TemporaryDirectory(prefix="edgefleet-keras-") as tmp:
        path = Path(tmp) / f"model{KERAS_SUFFIX}"
        path.write_bytes(data)
        return keras.models.load_model(path, compile=False)


def train(dataset: Dataset, params: TrainingParams) -> TrainedModel:
    """Trains `params.architecture` on the training split, seeded, and returns it with a batch-1 input.

    Training is deterministic for a given seed and dataset on one machine (TensorFlow op determinism on).
    """
    keras.utils.set_random_seed(params.seed)
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    classes = len(dataset.labels)
    model = build_model(params, classes, batch_size=None)
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        to_real(dataset.train_x),
        dataset.train_y,
        epochs=params.epochs,
        batch_size=params.batch_size,
        shuffle=True,
        verbose=0,
    )
    accuracy = float(history.history["accuracy"][-1])
    log.info("Trained %s for %d epochs: training accuracy %.3f", params.architecture, params.epochs, accuracy)
    exported = build_model(params, classes, batch_size=1)
    exported.set_weights(model.get_weights())
    return TrainedModel(
        model_to_bytes(exported), params.input_size, classes, accuracy, f"trained:{params.architecture}"
    )


def _load_user_model(path: Path) -> keras.Model:
    if not path.exists():
        raise ModelError(
            f"Keras model {path} does not exist",
            "set training.keras_model to a .keras, .h5 or SavedModel directory, or leave it empty to train",
        )
    try:
        if path.is_dir():
            if not (path / SAVED_MODEL_FILE).is_file():
                raise ModelError(
                    f"{path} is a directory without {SAVED_MODEL_FILE}: not a SavedModel",
                    "export the model with model.export(path) or save it as .keras",
                )
            return _wrap_saved_model(path)
        if path.suffix == KERAS_SUFFIX or path.suffix in H5_SUFFIXES:
            return keras.models.load_model(path, compile=False)
    except (OSError, ValueError, TypeError) as error:
        raise ModelError(
            f"Keras model {path} cannot be loaded ({error})",
            "check that the file is a complete Keras model saved by model.save()",
        ) from error
    raise ModelError(
        f"{path} is not a Keras model file (expected .keras, .h5 or a SavedModel directory)",
        "save the model with model.save('model.keras')",
    )


def _wrap_saved_model(path: Path) -> keras.Model:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ModelError(
            f"SavedModel {path} has no serving_default signature",
            "export it with model.export(path) (Keras) or tf.saved_model.save with a signature",
        )
    specs = list(signature.structured_input_signature[1].values())
    if len(specs) != 1:
        raise ModelError(
            f"SavedModel {path} has {len(specs)} inputs; an image classifier has one",
            "release a single-input image model",
        )
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    inputs = keras.Input(shape=tuple(specs[0].shape[1:]), batch_size=specs[0].shape[0], name="image")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ModelError(
                f"SavedModel {path} has {len(outputs)} outputs; a classifier has one",
                "release a single-output classifier",
            )
        outputs = next(iter(outputs.values()))
    return keras.Model(inputs, outputs, name=path.name)


def check_compatible(
    model: keras.Model, source: str, input_size: int, classes: int, labels: tuple[str, ...]
) -> None:
    """Checks that a user model takes [1|None, size, size, 3] and outputs one score per dataset class.

    Raises:
        ModelError: naming the model's shapes against the dataset's.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(
            f"Keras model {source} has {len(model.inputs)} inputs and {len(model.outputs)} outputs",
            "release an image classifier with one input and one output",
        )
    shape = tuple(model.inputs[0].shape)
    expected = (input_size, input_size, RGB_CHANNELS)
    if len(shape) != 4 or shape[0] not in (None, 1) or tuple(shape[1:]) != expected:
        raise ModelError(
            f"Keras model {source} takes input {list(shape)}, but the dataset gives images "
            f"[1, {input_size}, {input_size}, {RGB_CHANNELS}] (training.input_size {input_size}, RGB)",
            f"set training.input_size to the model's input side, or give a model taking [None, {input_size}, "
            f"{input_size}, 3] RGB normalized as (pixel - 128) / 128",
        )
    out_shape = tuple(model.outputs[0].shape)
    if len(out_shape) != 2 or out_shape[-1] != classes:
        raise ModelError(
            f"Keras model {source} outputs {list(out_shape)}, but the dataset has {classes} classes "
            f"({', '.join(labels)})",
            "give a model whose output has one score per dataset class, in sorted class-folder order",
        )


def load_trained(path: Path, dataset: Dataset, params: TrainingParams) -> TrainedModel:
    """Loads a user-supplied Keras model, checks it against the dataset, and rebuilds it with batch 1.

    Raises:
        ModelError: the file cannot be loaded or its input/output does not match the dataset.
    """
    model = _load_user_model(path)
    check_compatible(model, str(path), params.input_size, len(dataset.labels), dataset.labels)
    if model.inputs[0].shape[0] != 1:
        model = _with_batch_one(model)
    return TrainedModel(model_to_bytes(model), params.input_size, len(dataset.labels), None, str(path))


def _with_batch_one(model: keras.Model) -> keras.Model:
    """The same layers and weights behind an input with a static batch of 1."""
    inputs = keras.Input(shape=tuple(model.inputs[0].shape[1:]), batch_size=1, name="image")
    return keras.Model(inputs, model(inputs), name=model.name)
