"""The parameters of a release: one pydantic model the Prefect UI renders as a form, a section per concern.

Every default of the release pipeline lives in a section (no magic numbers in the tasks): what the model is and
how it is made (source, dataset, training, quantization) in `edgefleet.flows.release.model_params`, where
`edgetpu_compiler` runs in `edgefleet.flows.release.compile_params`, and here the form itself with what judges
and publishes the candidate (gates, signing). A release is described by a `ReleaseParams`, read from YAML by
`edgefleet release --config release.yaml` or filled in the UI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgefleet.flows.release.compile_params import CompileLocal, CompileParams
from edgefleet.flows.release.model_params import (
    DatasetParams,
    ModelSource,
    QuantizationParams,
    TrainingParams,
    TrainSource,
)
from edgefleet.flows.trust.signing_params import SigningParams
from edgefleet.kernel.configfile import load
from edgefleet.kernel.contracts.names import ChannelName, EmptyIsNone, ModelName, ModelVersion

EDGEFLEET_HOME = Path("~/.edgefleet")
DEFAULT_REGISTRY = str(EDGEFLEET_HOME / "registry")
DEFAULT_WORK_DIR = str(EDGEFLEET_HOME / "work")


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GateParams(_Config):
    """What a release must meet to be published."""

    max_accuracy_drop_points: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="Largest drop from float to int8 accuracy, in percentage points",
    )
    min_int8_accuracy: float = Field(
        default=0.0, ge=0, le=1, description="Lowest int8 accuracy on the held-out split (0..1)"
    )
    min_tpu_fraction: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="Lowest fraction of operations mapped to the Edge TPU (checked when the model is "
        "compiled)",
    )


class ReleaseParams(_Config):
    """Everything one release needs: what to train, how to check it, where to publish it."""

    model: ModelName = Field(description="Model name in the registry, e.g. shapes")
    source: ModelSource = Field(
        default=TrainSource(),
        description="Where the model comes from: train (on dataset), keras (a trained Keras model) or tflite "
        "(an int8 .tflite brought as is)",
    )
    dataset: DatasetParams | None = Field(
        default=None,
        description="Images to train and evaluate on; empty: the demo dataset for source train/keras, no "
        "evaluation (and no accuracy gates) for a brought .tflite",
    )
    training: TrainingParams = TrainingParams()
    quantization: QuantizationParams = QuantizationParams()
    compile: CompileParams = CompileLocal()
    gates: GateParams = GateParams()
    registry: str = Field(default=DEFAULT_REGISTRY, description="gs://bucket[/prefix] or a local directory")
    version: Annotated[ModelVersion | None, EmptyIsNone] = Field(
        default=None, description="Version to publish (MAJOR.MINOR.PATCH); empty: next patch version"
    )
    channel: Annotated[ChannelName | None, EmptyIsNone] = Field(
        default="canary", description="Channel to point at the new version; empty: publish only"
    )
    signing: SigningParams = SigningParams()
    golden_seeds: tuple[int, ...] = Field(
        default=(0, 1, 2), min_length=1, description="Seeds of the reference inputs whose outputs ship"
    )
    latency_runs: int = Field(
        default=20, ge=1, description="Int8 CPU inferences timed for the latency metric"
    )
    work_dir: str = Field(
        default=DEFAULT_WORK_DIR, description="Local working directory: demo data, build outputs, task cache"
    )
    source_commit: str | None = Field(
        default=None,
        description="Commit recorded in the manifest; empty: git HEAD of the current directory, if any",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_dataset(cls, data: Any) -> Any:
        """No `dataset` key: the demo dataset when the model is trained or quantized here, none for a .tflite."""
        if isinstance(data, dict) and "dataset" not in data:
            source = data.get("source")
            kind = source.get("kind") if isinstance(source, dict) else getattr(source, "kind", "train")
            if kind != "tflite":
                data = {**data, "dataset": DatasetParams()}
        return data

    @model_validator(mode="after")
    def _dataset_for_training(self) -> ReleaseParams:
        if self.dataset is None and self.source.kind != "tflite":
            raise ValueError(
                f"source {self.source.kind} needs a dataset (to train, calibrate and evaluate): set "
                "dataset.source to an image folder or 'demo'"
            )
        return self

    @property
    def brought(self) -> bool:
        """The model is brought as a .tflite: no training, no quantization here."""
        return self.source.kind == "tflite"


def expand(path: str) -> Path:
    """`~` and environment variables expanded: how every path parameter is read."""
    return Path(os.path.expandvars(path)).expanduser()


def load_params(path: Path) -> ReleaseParams:
    """Reads a release.yaml into `ReleaseParams`.

    Raises:
        ConfigError: the file is missing, not YAML, or does not describe a valid release.
    """
    return load(
        ReleaseParams, path, what="release config",
        missing_fix="pass the path of a release YAML file, e.g. `edgefleet release --config release.yaml`",
        shape_fix="start from flows/src/edgefleet/flows/release/release.example.yaml (model, dataset, training, "
                  "registry...)",
        fix="correct the named fields (see ReleaseParams in edgefleet.flows.release.params)")
