"""Accuracy of the float model and of the int8 model, both run with LiteRT through the device runtime.

The models are run exactly as a device runs them: `edgefleet.device.runtime` opens them on the CPU and its
`Preprocessor` turns the uint8 RGB images into input tensors. The maths (accuracy, per-class table, latency
summary) is kept in pure functions.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgefleet.device.runtime.adapters.classify import get_scores
from edgefleet.device.runtime.adapters.common import set_input
from edgefleet.device.runtime.interpreter import load_model
from edgefleet.device.runtime.preprocess import Preprocessor
from edgefleet.flows.release.dataset import Dataset
from edgefleet.kernel.contracts.distributions import SCORE_BUCKETS, DistributionAccumulator, score_bucket
from edgefleet.kernel.contracts.manifest import Calibration, Reference
from edgefleet.kernel.contracts.telemetry import MAX_RELEASE_CLASSES

MS_PER_S = 1000.0


class ClassAccuracy(NamedTuple):
    """Held-out accuracy of one class, float against int8."""

    label: str
    samples: int
    float_accuracy: float
    int8_accuracy: float


class Evaluation(NamedTuple):
    """Float vs int8 quality on the held-out split.

    Attributes:
        float_accuracy, int8_accuracy: Top-1 accuracy (0..1).
        agreement: Share of images where both models predict the same class.
        per_class: Accuracy per class.
        samples: Held-out images.
        int8_latency_ms: Median CPU time of one int8 inference here (not on a device).
        float_size_bytes, int8_size_bytes: Sizes of the float32 and int8 TFLite models.
    """

    float_accuracy: float
    int8_accuracy: float
    agreement: float
    per_class: tuple[ClassAccuracy, ...]
    samples: int
    int8_latency_ms: float
    float_size_bytes: int
    int8_size_bytes: int
    reference: Reference | None = None
    calibration: Calibration | None = None

    @property
    def drop_points(self) -> float:
        """Accuracy lost by quantization, in percentage points (negative: int8 did better)."""
        return (self.float_accuracy - self.int8_accuracy) * 100.0

    @property
    def size_ratio(self) -> float:
        """int8 size / float32 size."""
        return self.int8_size_bytes / self.float_size_bytes if self.float_size_bytes else float("nan")


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Share of `predicted` equal to `truth` (0 for no samples)."""
    return float(np.mean(predicted == truth)) if len(truth) else 0.0


def per_class_accuracy(
    labels: tuple[str, ...], truth: np.ndarray, float_predicted: np.ndarray, int8_predicted: np.ndarray
) -> tuple[ClassAccuracy, ...]:
    """Accuracy of each class for both models."""
    rows = []
    for index, label in enumerate(labels):
        mask = truth == index
        rows.append(
            ClassAccuracy(
                label,
                int(mask.sum()),
                accuracy(float_predicted[mask], truth[mask]),
                accuracy(int8_predicted[mask], truth[mask]),
            )
        )
    return tuple(rows)


class _Top1(NamedTuple):
    id: int
    score: float


def reference_distributions(predicted: np.ndarray, scores: np.ndarray) -> Reference:
    """The canary judge's reference: the top-1 class mix and top-1 score histogram of the held-out split, in
    the same buckets as the agents' telemetry (latency left empty: this machine is not a device)."""
    accumulator = DistributionAccumulator(top_k=MAX_RELEASE_CLASSES)  # every class: one list per release
    for class_id, score in zip(predicted, scores, strict=True):
        accumulator.add(0.0, [_Top1(int(class_id), float(score))], detector=False)
    dist = accumulator.snapshot().model_copy(update={"latency": []})
    return Reference(split="held-out", samples=len(predicted), distributions=dist)


def calibration_counts(predicted: np.ndarray, scores: np.ndarray, truth: np.ndarray) -> Calibration:
    """Per top-1 score bucket (the telemetry's): the held-out images there and how many the int8 model got right
    (the monitor's label-free accuracy estimate reads it from the manifest)."""
    buckets = np.array([score_bucket(float(score)) for score in scores], dtype=int)
    images = np.bincount(buckets, minlength=SCORE_BUCKETS)
    right = np.bincount(buckets, weights=(predicted == truth).astype(float), minlength=SCORE_BUCKETS)
    return Calibration(images=tuple(int(n) for n in images), correct=tuple(int(round(c)) for c in right))


def predict(tflite: bytes, images: np.ndarray, timed_runs: int) -> tuple[np.ndarray, float, np.ndarray]:
    """Top-1 class of each uint8 RGB image with a TFLite model on the device runtime's CPU interpreter.

    Returns:
        (predictions, median latency in ms of the first `timed_runs` inferences, top-1 scores as the device's
        classification adapter reads them).
    """
    with tempfile.TemporaryDirectory(prefix="edgefleet-eval-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(tflite)
        loaded = load_model(path, device="cpu")
    interpreter = loaded.interpreter
    preprocess = Preprocessor(loaded.info.input)
    predictions = np.empty(len(images), dtype=np.int64)
    top_scores = np.empty(len(images), dtype=np.float64)
    timings: list[float] = []
    for index, image in enumerate(images):
        set_input(interpreter, preprocess(image))
        started = time.perf_counter()
        interpreter.invoke()
        if index < timed_runs:
            timings.append((time.perf_counter() - started) * MS_PER_S)
        scores = get_scores(interpreter)
        predictions[index] = int(np.argmax(scores))
        top_scores[index] = float(scores[predictions[index]])
    return predictions, float(np.median(timings)) if timings else 0.0, top_scores


def evaluate(dataset: Dataset, float_tflite: bytes, int8_tflite: bytes, timed_runs: int) -> Evaluation:
    """Evaluates the float32 and the int8 TFLite models on the held-out split, as a device would run them.

    The float32 TFLite model is the Keras model converted without quantization (same graph, same weights), so
    its accuracy is the float model's; running both through the same runtime makes the comparison exact.
    """
    float_predicted, _, _ = predict(float_tflite, dataset.eval_x, 0)
    int8_predicted, latency_ms, int8_scores = predict(int8_tflite, dataset.eval_x, timed_runs)
    truth = dataset.eval_y
    return Evaluation(
        float_accuracy=accuracy(float_predicted, truth),
        int8_accuracy=accuracy(int8_predicted, truth),
        agreement=accuracy(float_predicted, int8_predicted),
        per_class=per_class_accuracy(dataset.labels, truth, float_predicted, int8_predicted),
        samples=len(truth),
        int8_latency_ms=latency_ms,
        float_size_bytes=len(float_tflite),
        int8_size_bytes=len(int8_tflite),
        reference=reference_distributions(int8_predicted, int8_scores),
        calibration=calibration_counts(int8_predicted, int8_scores, truth),
    )
