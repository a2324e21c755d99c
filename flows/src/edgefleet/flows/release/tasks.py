"""The Prefect tasks that make a release candidate: dataset, training, quantization, evaluation, compilation.

Caching: training and conversion are cached on their real inputs (dataset fingerprint, parameters, source
of the code that produces them), in the release work directory (`<work_dir>/cache`), so re-running a release
with the same data and parameters skips them. Nothing here is retried blindly. One task per side effect,
thin wrappers over the modules. What follows the candidate (golden outputs, manifest, signing, publishing,
the channel move) is in `edgefleet.flows.release.version_tasks`.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.context import TaskRunContext

from edgefleet.flows.release import backbones as backbones_module
from edgefleet.flows.release import brought as brought_module
from edgefleet.flows.release import compiler as compiler_module
from edgefleet.flows.release import quantize as quantize_module
from edgefleet.flows.release import train as train_module
from edgefleet.flows.release.dataset import Dataset, load_dataset
from edgefleet.flows.release.demo_dataset import generate_demo_dataset
from edgefleet.flows.release.evaluate import Evaluation, evaluate
from edgefleet.flows.release.model_params import DatasetParams, TfliteSource, TrainingParams
from edgefleet.flows.release.params import CompileParams, QuantizationParams, expand

log = logging.getLogger(__name__)

COMPILER_INPUT_NAME = "model.tflite"
DATASETS_DIR = "datasets"
CACHE_DIR = "cache"


# --- cache keys ---------------------------------------------------------------------------------------


def _source_digest(*modules: Any) -> str:
    """sha256 of the source files of `modules`: a code change invalidates what they produced."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def _digest(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _weights_digest(training: TrainingParams) -> str:
    """sha256 of a local weights file (training.weights: PATH): new weights under the same name retrain."""
    if training.weights in ("none", "imagenet"):
        return training.weights
    path = expand(training.weights)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else f"missing:{path}"


def training_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Same dataset content and split, same training parameters, same training code: same model."""
    dataset: Dataset = parameters["dataset"]
    split: DatasetParams = parameters["split"]
    training: TrainingParams = parameters["training"]
    return "train-" + _digest(
        dataset.fingerprint,
        split.model_dump_json(include={"eval_fraction", "seed"}),
        training.model_dump_json(),
        _weights_digest(training),
        _source_digest(train_module, backbones_module),
    )


def conversion_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Same float model, same calibration images and settings, same converter code: same TFLite models."""
    trained: train_module.TrainedModel = parameters["trained"]
    dataset: Dataset = parameters["dataset"]
    quantization: QuantizationParams = parameters["quantization"]
    return "convert-" + _digest(
        trained.keras_bytes,
        dataset.fingerprint,
        quantization.model_dump_json(),
        str(parameters["seed"]),
        _source_digest(quantize_module, train_module),
    )


# --- tasks ------------------------------------------------------------------------------------------------


@task(name="load-dataset", cache_policy=NO_CACHE)
def prepare_dataset(dataset: DatasetParams, input_size: int, work_dir: str) -> Dataset:
    """Loads (generating the demo first when asked) and splits the dataset; unreadable images are counted."""
    if dataset.is_demo:
        root = generate_demo_dataset(
            expand(work_dir) / DATASETS_DIR,
            dataset.demo_samples_per_class,
            dataset.demo_image_size,
            dataset.seed,
        )
    else:
        root = expand(dataset.source)
    loaded = load_dataset(root, input_size, dataset.eval_fraction, dataset.seed)
    if loaded.skipped:
        log.warning("%d unreadable image(s) skipped in %s", len(loaded.skipped), root)
    return loaded


@task(name="train", cache_policy=CacheKeyFnPolicy(cache_key_fn=training_cache_key), persist_result=True)
def train_model(
    dataset: Dataset, split: DatasetParams, training: TrainingParams
) -> train_module.TrainedModel:
    """Trains the float model (seeded); cached on dataset content + parameters."""
    return train_module.train(dataset, training)


@task(name="load-keras-model", cache_policy=NO_CACHE)
def load_keras_model(path: str, dataset: Dataset, training: TrainingParams) -> train_module.TrainedModel:
    """Loads a user-supplied Keras model instead of training; checks it fits the dataset."""
    return train_module.load_trained(expand(path), dataset, training)


@task(name="load-tflite-model", cache_policy=NO_CACHE)
def load_brought_model(source: TfliteSource) -> brought_module.BroughtModel:
    """Reads a brought .tflite and checks it: fully integer, labels fit, Edge TPU twin (if any) compiled."""
    return brought_module.load_brought(source)


@task(name="evaluate-tflite-model", cache_policy=NO_CACHE)
def evaluate_brought_model(
    dataset: Dataset, model: brought_module.BroughtModel, timed_runs: int
) -> tuple[Dataset, Evaluation]:
    """Top-1 accuracy of a brought classifier on every dataset image, through the device runtime.

    It goes through the same `evaluate` as a trained model; with no float model, the int8 model stands on
    both sides (float figures are not reported for a brought model).
    """
    held_out = brought_module.evaluation_set(dataset, model.labels)
    return held_out, evaluate(held_out, model.cpu_tflite, model.cpu_tflite, timed_runs)


@task(name="quantize", cache_policy=CacheKeyFnPolicy(cache_key_fn=conversion_cache_key), persist_result=True)
def quantize_model(
    trained: train_module.TrainedModel, dataset: Dataset, quantization: QuantizationParams, seed: int
) -> quantize_module.ConvertedModels:
    """Converts to float32 and full-integer (uint8 in/out) TFLite, calibrated on training images."""
    calibration = quantize_module.representative_images(
        dataset.train_x, quantization.representative_samples, seed
    )
    return quantize_module.convert(trained, calibration)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_models(
    dataset: Dataset, converted: quantize_module.ConvertedModels, timed_runs: int
) -> Evaluation:
    """Float32 vs int8 accuracy on the held-out split, both through the device runtime (LiteRT)."""
    return evaluate(dataset, converted.float_tflite, converted.int8_tflite, timed_runs)


@task(name="compile-edgetpu", cache_policy=NO_CACHE)
def compile_edgetpu(int8_tflite: bytes, compile_params: CompileParams) -> compiler_module.CompileOutcome:
    """Runs edgetpu_compiler (here, over SSH, or not at all) and parses its report."""
    host = compiler_module.compiler_host(compile_params)
    return compiler_module.compile_model(host, int8_tflite, COMPILER_INPUT_NAME, compile_params.require)
