"""What a release's model is and how it is made: its source (trained here, a Keras model, a brought .tflite),
the dataset, the training schedule and the int8 quantization. Sections of `ReleaseParams`
(`edgefleet.flows.release.params`), rendered in the same Prefect UI form; the model-making tasks read them and
nothing else of the form. Every default of training and quantization lives here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEMO_DATASET = "demo"
WEIGHTS_NONE = "none"
WEIGHTS_IMAGENET = "imagenet"
# The width multipliers Keras publishes ImageNet weights for (keras.applications raises on others).
IMAGENET_ALPHAS = {"mobilenet_v1": (0.25, 0.5, 0.75, 1.0), "mobilenet_v2": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)}
_LAST_BLOCKS = re.compile(r"^\s*last_blocks\s*\(\s*(\d+)\s*\)\s*$")


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetParams(_Config):
    """Where the images come from and how they are split."""

    source: str = Field(
        default=DEMO_DATASET,
        description="An image folder laid out DIR/CLASS/*.jpg|png, or 'demo' for the built-in synthetic "
        "dataset (coloured shapes)",
    )
    eval_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of each class held out for evaluation"
    )
    seed: int = Field(default=0, description="Seed of the deterministic train/eval split")
    demo_samples_per_class: int = Field(
        default=150, ge=4, le=5000, description="Demo dataset only: images generated per class"
    )
    demo_image_size: int = Field(
        default=64, ge=16, le=512, description="Demo dataset only: side of the generated images in pixels"
    )

    @property
    def is_demo(self) -> bool:
        return self.source == DEMO_DATASET


class FineTuneHead(_Config):
    """Train only the new classification head; the pretrained backbone stays frozen."""

    mode: Literal["head"] = "head"


class FineTuneLastBlocks(_Config):
    """Train the head and the last `blocks` blocks of the backbone; the earlier blocks stay frozen."""

    mode: Literal["last_blocks"] = "last_blocks"
    blocks: int = Field(default=2, ge=1, description="Backbone blocks trained, counted from the top")


class FineTuneAll(_Config):
    """Train every layer (the pretrained weights are only the starting point)."""

    mode: Literal["all"] = "all"


FineTune = Annotated[FineTuneHead | FineTuneLastBlocks | FineTuneAll, Field(discriminator="mode")]


def parse_fine_tune(value: Any) -> Any:
    """'head' | 'all' | 'last_blocks(N)' (the YAML shorthand) -> the FineTune form; anything else as is."""
    if not isinstance(value, str):
        return value
    match = _LAST_BLOCKS.match(value)
    if match:
        return {"mode": "last_blocks", "blocks": int(match.group(1))}
    if value.strip() in ("head", "all"):
        return {"mode": value.strip()}
    raise ValueError(f"fine_tune {value!r} is not one of: head, last_blocks(N), all")


class TrainingParams(_Config):
    """How the float model is trained: architecture, starting weights, what is fine-tuned, and the schedule.

    The defaults carve a validation split out of the training images, stop early on its loss (restoring the
    best epoch), decay the learning rate along a cosine and shift training images by a few pixels; the
    held-out images are never seen before the evaluation.
    """

    architecture: Literal["small_cnn", "mobilenet_v2", "mobilenet_v1"] = Field(
        default="small_cnn",
        description="small_cnn: a few conv layers; mobilenet_v2 / mobilenet_v1: the Keras MobileNet backbones "
        "(from scratch, or pretrained: see weights)",
    )
    weights: str = Field(
        default=WEIGHTS_NONE,
        description="MobileNet backbones: 'none' (from scratch), 'imagenet' (Keras' download and cache, "
        "~/.keras/models) or the path of a weights file of the same backbone (include_top=False, same "
        "mobilenet_alpha), e.g. saved with backbone.save_weights('backbone.weights.h5')",
    )
    fine_tune: FineTune | None = Field(
        default=None,
        description="What trains on top of pretrained weights: head, last_blocks (N blocks from the top) or "
        "all; empty: head with pretrained weights, all from scratch. YAML also takes 'head', "
        "'last_blocks(2)', 'all'",
    )
    input_size: int = Field(default=32, ge=16, le=512, description="Side of the square RGB model input")
    epochs: int = Field(default=6, ge=1, le=1000, description="Most epochs (early stopping may stop sooner)")
    batch_size: int = Field(default=16, ge=1, le=1024)
    learning_rate: float = Field(default=3e-3, gt=0, description="Initial learning rate (Adam)")
    lr_schedule: Literal["cosine", "constant"] = Field(
        default="cosine", description="cosine: decays to 0 over `epochs`; constant: no decay"
    )
    validation_fraction: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Share of the TRAINING images held back to watch for early stopping (never the held-out "
        "evaluation images); 0: none",
    )
    early_stopping_patience: int = Field(
        default=3,
        ge=0,
        description="Epochs without a better validation loss before training stops and the best epoch's "
        "weights are restored; 0: train all epochs",
    )
    augment_shift: float = Field(
        default=0.1,
        ge=0,
        lt=0.5,
        description="Random shift of training images, as a fraction of their side (0: no augmentation)",
    )
    seed: int = Field(default=0, description="Seeds weight init, the validation split, shuffling, augmentation")
    mobilenet_alpha: float = Field(default=0.35, gt=0, le=1.4, description="MobileNet width multiplier")
    batchnorm_momentum: float = Field(
        default=0.9, gt=0, lt=1, description="MobileNet: batch-norm moving-average momentum"
    )
    small_cnn_filters: tuple[int, ...] = Field(
        default=(32, 64, 96), min_length=1, description="small_cnn: filters of each conv block"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "keras_model" in data:
                raise ValueError(
                    "training.keras_model moved: release a Keras model with source: {kind: keras, path: "
                    f"{data['keras_model']}}}"
                )
            if "fine_tune" in data:
                data = {**data, "fine_tune": parse_fine_tune(data["fine_tune"])}
        return data

    @model_validator(mode="after")
    def _weights_fit_architecture(self) -> TrainingParams:
        if self.weights == WEIGHTS_NONE and self.fine_tune is not None and self.fine_tune.mode != "all":
            raise ValueError(
                f"fine_tune {self.fine_tune.mode} freezes pretrained layers, but weights is 'none': set weights "
                "to 'imagenet' or a weights file, or fine_tune to all"
            )
        if self.architecture == "small_cnn" and self.weights == WEIGHTS_IMAGENET:
            raise ValueError("weights 'imagenet' needs architecture mobilenet_v2 or mobilenet_v1")
        if self.architecture == "small_cnn" and self.fine_tune is not None and self.fine_tune.mode != "all":
            raise ValueError("fine_tune head / last_blocks needs a MobileNet backbone (architecture)")
        alphas = IMAGENET_ALPHAS.get(self.architecture, ())
        if self.weights == WEIGHTS_IMAGENET and self.mobilenet_alpha not in alphas:
            raise ValueError(
                f"Keras has ImageNet weights of {self.architecture} for mobilenet_alpha "
                f"{', '.join(map(str, alphas))}, not {self.mobilenet_alpha}"
            )
        return self

    @property
    def pretrained(self) -> bool:
        """Starts from weights learnt elsewhere (ImageNet or a file)."""
        return self.weights != WEIGHTS_NONE

    @property
    def effective_fine_tune(self) -> FineTuneHead | FineTuneLastBlocks | FineTuneAll:
        """`fine_tune`, or its default: the head alone on pretrained weights, everything from scratch."""
        if self.fine_tune is not None:
            return self.fine_tune
        return FineTuneHead() if self.pretrained else FineTuneAll()


class QuantizationParams(_Config):
    """Full-integer post-training quantization."""

    representative_samples: int = Field(
        default=100, ge=1, le=10000, description="Training images used to calibrate int8 ranges"
    )


class TrainSource(_Config):
    """Train a classifier on `dataset` as `training` says."""

    kind: Literal["train"] = "train"


class KerasSource(_Config):
    """A trained Keras classifier, quantized and released as is (no training)."""

    kind: Literal["keras"] = "keras"
    path: str = Field(
        description="A .keras, .h5 or SavedModel directory. Its input must be [1|None, H, W, 3] RGB normalized "
        "as (pixel - 128) / 128 ([-1, 1], the device runtime's normalization), its output one score per "
        "dataset class (training.input_size must be H)"
    )


class TfliteSource(_Config):
    """A model brought as a fully integer-quantized .tflite (Coral's model zoo, Model Maker, a notebook)."""

    kind: Literal["tflite"] = "tflite"
    path: str = Field(description="The int8/uint8 .tflite (the CPU model that ships)")
    labels: str = Field(description="Its labels: one a line (line N = class N) or pycoral's 'N label' lines")
    edgetpu_path: str | None = Field(
        default=None,
        description="Its _edgetpu.tflite, compiled from `path`; empty: compiled here (see compile)",
    )
    task: Literal["auto", "classification", "detection"] = Field(
        default="auto",
        description="auto: detection when the model ends in TFLite_Detection_PostProcess (SSD), else "
        "classification",
    )


ModelSource = Annotated[TrainSource | KerasSource | TfliteSource, Field(discriminator="kind")]
