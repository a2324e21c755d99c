"""The release candidate: the model a release is about to gate and publish, however it was made, and the
Prefect tasks that make it (dataset, training, quantization, evaluation, compilation).

Two builders, called from the `release-model` flow body (they only orchestrate tasks): `trained_candidate`
trains a model (or takes a Keras one), quantizes, evaluates and compiles it; `brought_candidate` checks a
brought `.tflite`, evaluates it when a dataset is given and compiles it when no Edge TPU twin is given. What
follows (gates, golden outputs, manifest, signing, publishing) is the same for both, and is in
`edgefleet.flows.release.version_tasks`.

Caching: training and conversion are cached on their real inputs (dataset fingerprint, parameters, source
of the code that produces them), in the release work directory (`<work_dir>/cache`), so re-running a release
with the same data and parameters skips them. Nothing here is retried blindly. One task per side effect,
thin wrappers over the modules.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.client.schemas.objects import State
from prefect.context import TaskRunContext

from edgefleet.flows.release import backbones as backbones_module
from edgefleet.flows.release import brought as brought_module
from edgefleet.flows.release import compiler as compiler_module
from edgefleet.flows.release import quantize as quantize_module
from edgefleet.flows.release import train as train_module
from edgefleet.flows.release.brought import check_can_evaluate
from edgefleet.flows.release.compiler import CompileOutcome
from edgefleet.flows.release.dataset import Dataset, load_dataset
from edgefleet.flows.release.demo_dataset import generate_demo_dataset
from edgefleet.flows.release.evaluate import Evaluation, evaluate
from edgefleet.flows.release.model_params import DatasetParams, QuantizationParams, TfliteSource, TrainingParams
from edgefleet.flows.release.params import CompileParams, ReleaseParams, expand
from edgefleet.flows.release.report import CandidateSummary
from edgefleet.kernel.contracts.manifest import Metrics, Origin

log = logging.getLogger(__name__)

CACHED_STATE_NAME = "Cached"
COMPILER_INPUT_NAME = "model.tflite"
DATASETS_DIR = "datasets"
CACHE_DIR = "cache"
R = TypeVar("R")
NO_DATASET_NOTE = "no dataset: not evaluated, no accuracy gates, no reference distributions"

Stage = Callable[[str], AbstractContextManager[None]]


class Candidate(NamedTuple):
    """A model ready for the gates, with everything the manifest needs.

    Attributes:
        has_float: A float twin was evaluated (trained and Keras models; not a brought .tflite).
        precompiled: The Edge TPU variant was brought, not compiled here (no compiler report).
    """

    summary: CandidateSummary
    origin: Origin
    task: str
    labels_text: str
    cpu_tflite: bytes
    compiled: CompileOutcome
    evaluation: Evaluation | None
    metrics: Metrics
    representative_samples: int
    has_float: bool
    precompiled: bool


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


# --- the candidate -----------------------------------------------------------------------------------------


def _result_of(state: State[R]) -> tuple[R, bool]:
    return state.result(), state.name == CACHED_STATE_NAME


def training_note(training: TrainingParams) -> str:
    """One line on how a model was trained (pure): architecture, starting weights, what was fine-tuned."""
    if training.architecture == "small_cnn":
        return "small_cnn from scratch"
    weights = "from scratch" if not training.pretrained else f"from {training.weights} weights"
    fine_tune = training.effective_fine_tune
    detail = f"last {fine_tune.blocks} blocks" if fine_tune.mode == "last_blocks" else fine_tune.mode
    return f"{training.architecture} (alpha {training.mobilenet_alpha}) {weights}, fine-tuned: {detail}"


def trained_description(
    params: ReleaseParams, trained: train_module.TrainedModel
) -> tuple[Literal["trained", "keras"], str]:
    """The origin kind ("keras" or "trained") and the one-line description of a trained or Keras model (pure)."""
    training = params.training
    shape = f", input {training.input_size}x{training.input_size}x3"
    if params.source.kind == "keras":
        return "keras", f"Keras model {params.source.path}{shape}"
    description = f"{training_note(training)}, {training.epochs} epochs max"
    if trained.epochs_run is not None:
        description += f" (ran {trained.epochs_run}, kept epoch {trained.best_epoch})"
    return "trained", f"{description}, seed {training.seed}{shape}"


def trained_candidate(params: ReleaseParams, stage: Stage, work_dir: Path) -> Candidate:
    """Trains (or loads a Keras model), quantizes, evaluates float vs int8 and compiles."""
    assert params.dataset is not None  # ReleaseParams requires one for source train/keras
    # Cached results live in the work directory, so the cache follows the user's data, not Prefect's home.
    train = train_model.with_options(result_storage=work_dir / CACHE_DIR)
    quantize = quantize_model.with_options(result_storage=work_dir / CACHE_DIR)
    training = params.training
    with stage("dataset"):
        dataset = prepare_dataset(params.dataset, training.input_size, params.work_dir)
    with stage("train"):
        if params.source.kind == "keras":
            trained, cached = load_keras_model(params.source.path, dataset, training), False
        else:
            trained, cached = _result_of(train(dataset, params.dataset, training, return_state=True))
    with stage("quantize"):
        converted, _ = _result_of(quantize(trained, dataset, params.quantization, training.seed, return_state=True))
    with stage("evaluate"):
        evaluation = evaluate_models(dataset, converted, params.latency_runs)
    with stage("compile"):
        compiled = compile_edgetpu(converted.int8_tflite, params.compile)
    return _trained(params, dataset, trained, converted, evaluation, compiled, cached=cached)


def _trained(
    params: ReleaseParams,
    dataset: Dataset,
    trained: train_module.TrainedModel,
    converted: quantize_module.ConvertedModels,
    evaluation: Evaluation,
    compiled: CompileOutcome,
    *,
    cached: bool,
) -> Candidate:
    """The candidate of a trained (or Keras) model from what its stages made (pure); `cached`: the float model
    came from the task cache."""
    kind, description = trained_description(params, trained)
    summary = CandidateSummary(
        model_description=description,
        dataset_source=dataset.source,
        labels=dataset.labels,
        train_count=len(dataset.train_y),
        eval_count=len(dataset.eval_y),
        skipped_images=tuple((s.path, s.reason) for s in dataset.skipped),
        training_cached=cached,
    )
    return Candidate(
        summary=summary,
        origin=Origin(kind=kind, dataset=dataset.source, note=description),
        task="classification",
        labels_text="".join(f"{label}\n" for label in dataset.labels),
        cpu_tflite=converted.int8_tflite,
        compiled=compiled,
        evaluation=evaluation,
        metrics=Metrics(
            float_accuracy=evaluation.float_accuracy,
            int8_accuracy=evaluation.int8_accuracy,
            float_size_bytes=evaluation.float_size_bytes,
            int8_size_bytes=evaluation.int8_size_bytes,
            cpu_latency_ms=evaluation.int8_latency_ms,
            eval_samples=evaluation.samples,
        ),
        representative_samples=converted.representative_samples,
        has_float=True,
        precompiled=False,
    )


def brought_candidate(params: ReleaseParams, stage: Stage) -> Candidate:
    """Checks a brought .tflite, evaluates it on the dataset (when given) and compiles it (when no twin)."""
    assert params.source.kind == "tflite"
    with stage("load"):
        model = load_brought_model(params.source)
    evaluation = held_out = None
    if params.dataset is not None:
        side = check_can_evaluate(model)
        with stage("dataset"):
            dataset = prepare_dataset(params.dataset, side, params.work_dir)
        with stage("evaluate"):
            held_out, evaluation = evaluate_brought_model(dataset, model, params.latency_runs)
    with stage("compile"):
        if model.edgetpu_tflite is not None:
            compiled = CompileOutcome(model.edgetpu_tflite, None, None)
        else:
            compiled = compile_edgetpu(model.cpu_tflite, params.compile)
    return _brought(model, held_out, evaluation, compiled)


def _brought(
    model: brought_module.BroughtModel,
    held_out: Dataset | None,
    evaluation: Evaluation | None,
    compiled: CompileOutcome,
) -> Candidate:
    """The candidate of a brought .tflite from what its stages made (pure); `held_out` is the dataset it was
    evaluated on, None without one."""
    description = (
        f"brought {model.task} model {model.source} ({len(model.labels)} labels, input "
        f"{'x'.join(map(str, model.info.input.shape[1:]))} {model.info.input.dtype})"
        + (", Edge TPU twin brought precompiled" if model.edgetpu_tflite is not None else "")
    )
    if held_out is None:
        note = f"{description}; {NO_DATASET_NOTE}"
        summary = CandidateSummary(description, None, tuple(model.labels.values()), 0, 0, (), False)
    else:
        note = f"{description}; evaluated on all {len(held_out.eval_y)} images of {held_out.source}"
        summary = CandidateSummary(
            description,
            held_out.source,
            held_out.labels,
            0,
            len(held_out.eval_y),
            tuple((s.path, s.reason) for s in held_out.skipped),
            False,
        )
    return Candidate(
        summary=summary,
        origin=Origin(kind="brought", dataset=held_out.source if held_out else None, note=note),
        task=model.task,
        labels_text=model.labels_text,
        cpu_tflite=model.cpu_tflite,
        compiled=compiled,
        evaluation=evaluation,
        metrics=Metrics(
            int8_accuracy=evaluation.int8_accuracy if evaluation else None,
            int8_size_bytes=len(model.cpu_tflite),
            cpu_latency_ms=evaluation.int8_latency_ms if evaluation else None,
            eval_samples=evaluation.samples if evaluation else None,
        ),
        representative_samples=0,
        has_float=False,
        precompiled=model.edgetpu_tflite is not None,
    )
