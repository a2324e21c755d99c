"""The classifier architectures the release trains, and transfer learning on the Keras MobileNet backbones.

Every model takes [batch, size, size, 3] real-valued RGB in [-1, 1] (the device's normalization, which is also
Keras' MobileNet preprocessing, so ImageNet weights see what they were trained on) and ends in a dense softmax
head. A MobileNet's backbone is a nested Keras model named `backbone`, so its weights can be saved and loaded
on their own (`save_backbone_weights`, `training.weights: PATH`) and frozen block by block (`freeze`).

Blocks, counted from the input (what `fine_tune: last_blocks(N)` counts from the top):
- mobilenet_v2: `stem` (Conv1), `expanded_conv`, `block_1` .. `block_16`, `top` (Conv_1): 19 blocks;
- mobilenet_v1: `stem` (conv1), `block_1` .. `block_13` (conv_dw_N + conv_pw_N): 14 blocks.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import keras

from edgefleet.flows.release.model_params import (
    WEIGHTS_IMAGENET,
    WEIGHTS_NONE,
    FineTuneAll,
    FineTuneHead,
    FineTuneLastBlocks,
    TrainingParams,
)
from edgefleet.flows.release.params import (
    expand,
)
from edgefleet.kernel.errors import ModelError

log = logging.getLogger(__name__)

RGB_CHANNELS = 3
BACKBONE_NAME = "backbone"
MIN_MOBILENET_INPUT = 32  # keras.applications refuses smaller inputs
WEIGHTS_SUFFIX = ".weights.h5"

_V2_BLOCK = re.compile(r"^(block_\d+|expanded_conv)_")
_V2_STEM = ("Conv1", "bn_Conv1", "Conv1_relu")
_V2_TOP = ("Conv_1", "Conv_1_bn", "out_relu")
_V1_BLOCK = re.compile(r"^conv_(?:dw|pw|pad)_(\d+)")
_V1_STEM = re.compile(r"^conv1(?:_|$)")


def small_cnn(inputs: keras.KerasTensor, classes: int, filters: tuple[int, ...]) -> keras.KerasTensor:
    """Conv-ReLU-MaxPool blocks, flattened into a dense softmax head: all Edge TPU operations.

    The head sees where features are (Flatten), not only whether they are somewhere (global average
    pooling): on digits, a global-average head is 1-6 points worse and unstable across seeds
    (bench/release_bench.py --section trainer).
    """
    x = inputs
    for block, width in enumerate(filters):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{block}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{block}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(classes, name="logits")(x)
    return keras.layers.Softmax(name="probabilities")(x)


def mobilenet_backbone(params: TrainingParams, input_size: int) -> keras.Model:
    """The Keras MobileNet of `params.architecture` without its top, with the weights `params.weights` names.

    Raises:
        ModelError: the input is too small, the weights file is missing or does not fit this backbone, or the
            ImageNet weights cannot be downloaded.
    """
    if input_size < MIN_MOBILENET_INPUT:
        raise ModelError(
            f"{params.architecture} needs an input of at least {MIN_MOBILENET_INPUT} pixels, not {input_size}",
            f"set training.input_size to {MIN_MOBILENET_INPUT} or more",
        )
    build = keras.applications.MobileNetV2 if params.architecture == "mobilenet_v2" else keras.applications.MobileNet
    shape = (input_size, input_size, RGB_CHANNELS)
    imagenet = params.weights == WEIGHTS_IMAGENET
    try:
        backbone = build(
            input_shape=shape,
            alpha=params.mobilenet_alpha,
            include_top=False,
            # keras leaves `weights` unannotated, so its default types it str; None (random init) is documented
            weights=WEIGHTS_IMAGENET if imagenet else None,  # pyright: ignore[reportArgumentType]
            pooling="avg",
            name=BACKBONE_NAME,
        )
    except Exception as error:  # keras.utils.get_file raises a bare Exception when the download fails
        if not imagenet:
            raise
        raise ModelError(
            f"the ImageNet weights of {params.architecture} (alpha {params.mobilenet_alpha}) could not be "
            f"downloaded or read: {error}",
            "allow this machine to reach Keras' weight downloads once (they are cached in ~/.keras/models), "
            "or download the *_no_top weights file elsewhere and set training.weights to its path",
        ) from error
    if params.weights not in (WEIGHTS_NONE, WEIGHTS_IMAGENET):
        load_backbone_weights(backbone, expand(params.weights), params)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = params.batchnorm_momentum
    return backbone


def load_backbone_weights(backbone: keras.Model, path: Path, params: TrainingParams) -> None:
    """Loads a weights file (.weights.h5, a legacy .h5 such as Keras' cached ImageNet file, or .keras).

    Raises:
        ModelError: the file is missing or its layers or shapes do not match this backbone.
    """
    if not path.is_file():
        raise ModelError(
            f"backbone weights file {path} (training.weights) does not exist",
            "set training.weights to 'imagenet', 'none', or the path of a weights file of the same backbone",
        )
    try:
        backbone.load_weights(path)
    except (OSError, ValueError, KeyError) as error:
        raise ModelError(
            f"weights file {path} does not fit {params.architecture} (alpha {params.mobilenet_alpha}, without "
            f"its top): {str(error).strip().splitlines()[0]}",
            "use weights saved from the same architecture and mobilenet_alpha with include_top=False (e.g. "
            "edgefleet.flows.release.backbones.save_backbone_weights), or change training.architecture / "
            "mobilenet_alpha to the file's",
        ) from error
    log.info("Loaded backbone weights from %s", path)


def build_model(params: TrainingParams, classes: int, batch_size: int | None) -> keras.Model:
    """The architecture named by `params`, with input [batch_size, size, size, 3] real values in [-1, 1]."""
    inputs = keras.Input(
        shape=(params.input_size, params.input_size, RGB_CHANNELS), batch_size=batch_size, name="image"
    )
    if params.architecture == "small_cnn":
        # keras.Input is unannotated; pyright infers a tensor-or-list from its body, one input here is one tensor
        outputs = small_cnn(inputs, classes, params.small_cnn_filters)  # pyright: ignore[reportArgumentType]
    else:
        x = mobilenet_backbone(params, params.input_size)(inputs)
        x = keras.layers.Dense(classes, name="logits")(x)
        outputs = keras.layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, outputs, name=params.architecture)


def block_of(architecture: str, layer_name: str) -> str | None:
    """The backbone block a layer belongs to (see the module docstring), None for layers outside blocks."""
    if architecture == "mobilenet_v2":
        if layer_name in _V2_STEM:
            return "stem"
        if layer_name in _V2_TOP:
            return "top"
        match = _V2_BLOCK.match(layer_name)
        return match.group(1) if match else None
    if _V1_STEM.match(layer_name):
        return "stem"
    match = _V1_BLOCK.match(layer_name)
    return f"block_{match.group(1)}" if match else None


def backbone_blocks(architecture: str, layer_names: list[str]) -> list[str]:
    """The blocks of a backbone, input first (pure)."""
    blocks: list[str] = []
    for name in layer_names:
        block = block_of(architecture, name)
        if block is not None and block not in blocks:
            blocks.append(block)
    return blocks


def trainable_blocks(
    blocks: list[str], fine_tune: FineTuneHead | FineTuneLastBlocks | FineTuneAll, architecture: str
) -> set[str]:
    """Which blocks train under `fine_tune` (pure).

    Raises:
        ModelError: last_blocks asks for more blocks than the backbone has.
    """
    if isinstance(fine_tune, FineTuneAll):
        return set(blocks)
    if isinstance(fine_tune, FineTuneHead):
        return set()
    if fine_tune.blocks > len(blocks):
        raise ModelError(
            f"fine_tune last_blocks({fine_tune.blocks}) asks for more blocks than {architecture} has "
            f"({len(blocks)})",
            f"use last_blocks(N) with N <= {len(blocks)}, or fine_tune: all",
        )
    return set(blocks[-fine_tune.blocks :])


def freeze(model: keras.Model, params: TrainingParams) -> tuple[int, int]:
    """Freezes the backbone layers `params.effective_fine_tune` keeps fixed (frozen batch norms run in inference
    mode, so their statistics do not move either).

    Returns:
        (trainable, frozen) backbone layers that have weights.
    """
    if params.architecture == "small_cnn":
        return 0, 0
    backbone = model.get_layer(BACKBONE_NAME)
    names = [layer.name for layer in backbone.layers]
    train = trainable_blocks(
        backbone_blocks(params.architecture, names), params.effective_fine_tune, params.architecture
    )
    counts = [0, 0]
    for layer in backbone.layers:
        block = block_of(params.architecture, layer.name)
        layer.trainable = block in train if block is not None else bool(train)
        if layer.weights:
            counts[0 if layer.trainable else 1] += 1
    log.info(
        "%s fine-tuning %s: %d backbone layers train, %d frozen",
        params.architecture,
        params.effective_fine_tune.mode,
        counts[0],
        counts[1],
    )
    return counts[0], counts[1]


def save_backbone_weights(model: keras.Model, path: str | Path) -> Path:
    """Saves the MobileNet backbone of a trained release model (e.g. from `model_from_bytes`) for
    `training.weights: PATH`: transfer what one dataset taught to another.

    Raises:
        ModelError: the model has no MobileNet backbone.
    """
    path = Path(path)
    try:
        backbone = model.get_layer(BACKBONE_NAME)
    except ValueError as error:
        raise ModelError(
            f"model {model.name} has no {BACKBONE_NAME!r} layer: only the MobileNet architectures have one",
            "train with training.architecture mobilenet_v2 or mobilenet_v1",
        ) from error
    if not path.name.endswith(WEIGHTS_SUFFIX):
        raise ModelError(f"{path}: Keras weight files end in {WEIGHTS_SUFFIX}", f"name it *{WEIGHTS_SUFFIX}")
    path.parent.mkdir(parents=True, exist_ok=True)
    backbone.save_weights(path)
    return path


def model_to_bytes(model: keras.Model) -> bytes:
    """Serializes a Keras model to `.keras` archive bytes."""
    with tempfile.TemporaryDirectory(prefix="edgefleet-keras-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.read_bytes()


def model_from_bytes(data: bytes) -> keras.Model:
    """Loads a model serialized by `model_to_bytes`."""
    with tempfile.TemporaryDirectory(prefix="edgefleet-keras-") as tmp:
        path = Path(tmp) / "model.keras"
        path.write_bytes(data)
        return load_keras_file(path)


def load_keras_file(path: Path) -> keras.Model:
    """The model a .keras/.h5 file holds (such a file can hold any saved Keras object, not only a model).

    Raises:
        ModelError: the file holds another Keras object.
    """
    loaded = keras.models.load_model(path, compile=False)
    if not isinstance(loaded, keras.Model):
        raise ModelError(f"{path} holds a Keras {type(loaded).__name__}, not a model",
                         "save the model itself with model.save('model.keras')")
    return loaded
