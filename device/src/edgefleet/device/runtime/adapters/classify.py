"""Classification results (pycoral's `pycoral.adapters.classify`)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edgefleet.device.runtime.adapters.common import output_tensor
from edgefleet.device.runtime.quantization import dequantize
from edgefleet.device.runtime.tflite_api import TfliteInterpreter


class Class(NamedTuple):
    """One classification result."""

    id: int
    score: float


def num_classes(interpreter: TfliteInterpreter) -> int:
    """Number of classes of the (first) output."""
    return int(np.prod(interpreter.get_output_details()[0]["shape"]))


def get_scores(interpreter: TfliteInterpreter) -> np.ndarray:
    """Dequantized scores of the first output, flattened (float outputs pass through)."""
    detail = interpreter.get_output_details()[0]
    return dequantize(output_tensor(interpreter, 0).ravel(), detail["quantization"])


def get_classes_from_scores(scores: np.ndarray, top_k: int = 1,
                            score_threshold: float = -float("inf")) -> list[Class]:
    """The `top_k` best classes scoring at least `score_threshold`, best first (ties: lower id first)."""
    top_k = min(top_k, len(scores))
    if top_k <= 0:
        return []
    best = np.argpartition(-scores, top_k - 1)[:top_k]
    kept = [int(i) for i in best if scores[i] >= score_threshold]
    return [Class(i, float(scores[i])) for i in sorted(kept, key=lambda i: (-scores[i], i))]


def get_classes(interpreter: TfliteInterpreter, top_k: int = 1, score_threshold: float = -float("inf")) -> list[Class]:
    """The `top_k` best classes of the last inference scoring at least `score_threshold`."""
    return get_classes_from_scores(get_scores(interpreter), top_k, score_threshold)
