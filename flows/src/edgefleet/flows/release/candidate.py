"""The release candidate: the model a release is about to gate and publish, however it was made.

Two builders, called from the `release-model` flow body (they only orchestrate tasks): `trained_candidate`
trains a model (or takes a Keras one), quantizes, evaluates and compiles it; `brought_candidate` checks a
brought `.tflite`, evaluates it when a dataset is given and compiles it when no Edge TPU twin is given. What
follows (gates, golden outputs, manifest, signing, publishing) is the same for both.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple, TypeVar

from prefect.client.schemas.objects import State

from edgefleet.flows.release import tasks
from edgefleet.flows.release.brought import check_can_evaluate
from edgefleet.flows.release.compiler import CompileOutcome
from edgefleet.flows.release.evaluate import Evaluation
from edgefleet.flows.release.model_params import TrainingParams
from edgefleet.flows.release.params import ReleaseParams
from edgefleet.flows.release.report import CandidateSummary
from edgefleet.kernel.contracts.manifest import Metrics, Origin

CACHED_STATE_NAME = "Cached"
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


def trained_candidate(params: ReleaseParams, stage: Stage, work_dir: Path) -> Candidate:
    """Trains (or loads a Keras model), quantizes, evaluates float vs int8 and compiles."""
    assert params.dataset is not None  # ReleaseParams requires one for source train/keras
    # Cached results live in the work directory, so the cache follows the user's data, not Prefect's home.
    train = tasks.train_model.with_options(result_storage=work_dir / tasks.CACHE_DIR)
    quantize = tasks.quantize_model.with_options(result_storage=work_dir / tasks.CACHE_DIR)
    training = params.training
    with stage("dataset"):
        dataset = tasks.prepare_dataset(params.dataset, training.input_size, params.work_dir)
    with stage("train"):
        if params.source.kind == "keras":
            trained, cached = tasks.load_keras_model(params.source.path, dataset, training), False
        else:
            trained, cached = _result_of(train(dataset, params.dataset, training, return_state=True))
    with stage("quantize"):
        converted, _ = _result_of(quantize(trained, dataset, params.quantization, training.seed, return_state=True))
    with stage("evaluate"):
        evaluation = tasks.evaluate_models(dataset, converted, params.latency_runs)
    with stage("compile"):
        compiled = tasks.compile_edgetpu(converted.int8_tflite, params.compile)
    if params.source.kind == "keras":
        kind, description = "keras", f"Keras model {params.source.path}"
    else:
        kind = "trained"
        description = f"{training_note(training)}, {training.epochs} epochs max"
        if trained.epochs_run is not None:
            description += f" (ran {trained.epochs_run}, kept epoch {trained.best_epoch})"
        description += f", seed {training.seed}"
    description += f", input {training.input_size}x{training.input_size}x3"
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
        model = tasks.load_brought_model(params.source)
    evaluation = held_out = None
    if params.dataset is not None:
        side = check_can_evaluate(model)
        with stage("dataset"):
            dataset = tasks.prepare_dataset(params.dataset, side, params.work_dir)
        with stage("evaluate"):
            held_out, evaluation = tasks.evaluate_brought_model(dataset, model, params.latency_runs)
    with stage("compile"):
        if model.edgetpu_tflite is not None:
            compiled = CompileOutcome(model.edgetpu_tflite, None, None)
        else:
            compiled = tasks.compile_edgetpu(model.cpu_tflite, params.compile)
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
