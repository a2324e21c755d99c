"""Train the float classifier with Keras 3 (TensorFlow backend), or load a user's trained model.

The architectures live in `backbones`. Training holds a validation share of the training split back for early
stopping (the best epoch is kept), decays the learning rate along a cosine and shifts training images at
random; a pretrained MobileNet backbone is frozen as `training.fine_tune` says.

Models take real-valued RGB input, real = (pixel - mean) / std with the device runtime's normalization
(`RuntimeConfig.input_mean/input_std`, pycoral's 128/128: [-1, 1]), so the int8 model's input quantization is
what the device's preprocessing produces from camera pixels. Training uses a dynamic batch; the model that
is exported has a static batch of 1 (the same weights), so the TFLite graph has no dynamic-shape operations,
which the Edge TPU compiler cannot map.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from edgefleet.device.runtime.config import DEFAULT_RUNTIME_CONFIG
from edgefleet.flows.release.backbones import (  # noqa: F401 - build_model & co. re-exported
    RGB_CHANNELS,
    build_model,
    freeze,
    load_keras_file,
    model_from_bytes,
    model_to_bytes,
)
from edgefleet.flows.release.dataset import Dataset
from edgefleet.flows.release.model_params import WEIGHTS_NONE, TrainingParams
from edgefleet.kernel.errors import ModelError

log = logging.getLogger(__name__)

KERAS_SUFFIX = ".keras"
H5_SUFFIXES = (".h5", ".hdf5")
SAVED_MODEL_FILE = "saved_model.pb"
VALIDATION_STREAM = 1  # a random stream of its own: the validation split never repeats the held-out split's


class TrainedModel(NamedTuple):
    """A float model as bytes of a `.keras` file (so it can be cached and handed between tasks).

    Attributes:
        keras_bytes: The `.keras` archive; its input has a static batch of 1.
        input_size: Side of the square RGB input.
        classes: Number of output classes.
        train_accuracy: Training accuracy of the kept epoch (None for a user-supplied model).
        source: "trained:<architecture>" or the user model path.
        validation_accuracy: Accuracy on the validation share of the training split (None without one).
        epochs_run: Epochs trained (fewer than asked when training stopped early).
        best_epoch: The epoch whose weights were kept (1-based).
    """

    keras_bytes: bytes
    input_size: int
    classes: int
    train_accuracy: float | None
    source: str
    validation_accuracy: float | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None


def to_real(
    pixels: np.ndarray,
    mean: float = DEFAULT_RUNTIME_CONFIG.input_mean,
    std: float = DEFAULT_RUNTIME_CONFIG.input_std,
) -> np.ndarray:
    """uint8 pixels -> float32 model input, real = (p - mean) / std: the device's normalization."""
    return ((pixels.astype(np.float32) - mean) / std).astype(np.float32)


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) indices of the TRAINING split: `fraction` of each class held back (pure, seeded).

    The validation images only decide when to stop and which epoch to keep; the held-out evaluation images
    are never among them.
    """
    fit: list[np.ndarray] = []
    validation: list[np.ndarray] = []
    for class_index in np.unique(labels):
        members = np.flatnonzero(labels == class_index)
        order = np.random.default_rng([seed, int(class_index), VALIDATION_STREAM]).permutation(len(members))
        count = min(len(members) - 1, round(len(members) * fraction))
        validation.append(members[order[:count]])
        fit.append(members[order[count:]])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(validation))


def _optimizer(params: TrainingParams, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate: float | keras.optimizers.schedules.LearningRateSchedule = params.learning_rate
    if params.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(params.learning_rate, params.epochs * steps_per_epoch)
    # keras leaves learning_rate unannotated (typed float by its default); a schedule is documented
    return keras.optimizers.Adam(rate)  # pyright: ignore[reportArgumentType]


def _with_augmentation(model: keras.Model, params: TrainingParams) -> keras.Model:
    """The model behind random shifts (training only; the exported model has no augmentation layer)."""
    if params.augment_shift <= 0:
        return model
    shape = (params.input_size, params.input_size, RGB_CHANNELS)
    shift = keras.layers.RandomTranslation(
        params.augment_shift, params.augment_shift, fill_mode="nearest", seed=params.seed, name="augment_shift"
    )
    return keras.Sequential([keras.Input(shape), shift, model], name=f"{model.name}_training")


def train(dataset: Dataset, params: TrainingParams) -> TrainedModel:
    """Trains `params.architecture` on the training split, seeded, and returns it with a batch-1 input.

    A validation share of the training split (`validation_fraction`) drives early stopping, which restores
    the best epoch's weights; pretrained backbones are frozen as `fine_tune` says. Training is deterministic
    for a given seed and dataset on one machine (TensorFlow op determinism on).

    Raises:
        ModelError: the backbone or its weights cannot be built (see `backbones.mobilenet_backbone`).
    """
    _deterministic(params.seed)
    classes = len(dataset.labels)
    model = build_model(params, classes, batch_size=None)
    freeze(model, params)
    x, y = to_real(dataset.train_x), dataset.train_y
    fit_idx, val_idx = validation_split(y, params.validation_fraction, params.seed)
    validation = (x[val_idx], y[val_idx]) if len(val_idx) else None
    stops_early = validation is not None and params.early_stopping_patience > 0
    history = _fit(model, params, (x[fit_idx], y[fit_idx]), validation, stops_early)
    kept = kept_epoch(history, validated=validation is not None, early_stopping=stops_early)
    log.info(
        "Trained %s: %d of %d epochs, kept epoch %d (training accuracy %.3f, validation %s)",
        params.architecture,
        kept.epochs_run,
        params.epochs,
        kept.epoch,
        kept.accuracy,
        f"{kept.validation_accuracy:.3f} on {len(val_idx)} images" if kept.validation_accuracy is not None else "none",
    )
    return TrainedModel(
        model_to_bytes(_exported(model, params, classes)),
        params.input_size,
        classes,
        kept.accuracy,
        f"trained:{params.architecture}",
        kept.validation_accuracy,
        kept.epochs_run,
        kept.epoch,
    )


class KeptEpoch(NamedTuple):
    """The epoch whose weights training kept, and its accuracies.

    Attributes:
        epoch: The kept epoch (1-based).
        epochs_run: Epochs trained.
        accuracy: Training accuracy of the kept epoch.
        validation_accuracy: Validation accuracy of the kept epoch (None without a validation split).
    """

    epoch: int
    epochs_run: int
    accuracy: float
    validation_accuracy: float | None


def kept_epoch(history: Mapping[str, Sequence[float]], validated: bool, early_stopping: bool) -> KeptEpoch:
    """Which epoch Keras' `fit` history says was kept: the lowest validation loss when early stopping restored
    it, else the last. Pure.
    """
    epochs_run = len(history["loss"])
    best = int(np.argmin(history["val_loss"])) if validated and early_stopping else epochs_run - 1
    validation_accuracy = float(history["val_accuracy"][best]) if validated else None
    return KeptEpoch(best + 1, epochs_run, float(history["accuracy"][best]), validation_accuracy)


def _deterministic(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow and turns TensorFlow op determinism on."""
    keras.utils.set_random_seed(seed)
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


def _fit(
    model: keras.Model,
    params: TrainingParams,
    fit: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None,
    stops_early: bool,
) -> dict[str, list[float]]:
    """Fits `model` (behind the training-only augmentation) on `fit`; returns Keras' per-epoch history."""
    callbacks = []
    if stops_early:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=params.early_stopping_patience, restore_best_weights=True
            )
        )
    trainer = _with_augmentation(model, params)
    steps_per_epoch = max(1, int(np.ceil(len(fit[1]) / params.batch_size)))
    trainer.compile(
        optimizer=_optimizer(params, steps_per_epoch),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = trainer.fit(
        fit[0],
        fit[1],
        epochs=params.epochs,
        batch_size=params.batch_size,
        shuffle=True,
        validation_data=validation,
        callbacks=callbacks,
        verbose=0,  # pyright: ignore[reportArgumentType] - typed str by its default "auto"; 0 is documented
    )
    return history.history


def _exported(model: keras.Model, params: TrainingParams, classes: int) -> keras.Model:
    """The exported twin: same layers and weights, batch 1; built without loading pretrained weights again."""
    exported = build_model(params.model_copy(update={"weights": WEIGHTS_NONE, "fine_tune": None}), classes, 1)
    exported.set_weights(model.get_weights())
    return exported


def _load_user_model(path: Path) -> keras.Model:
    if not path.exists():
        raise ModelError(
            f"Keras model {path} does not exist",
            "set source.path (source: {kind: keras, path: ...}) to a .keras, .h5 or SavedModel directory, or "
            "use source: {kind: train} to train one",
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
            return load_keras_file(path)
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
