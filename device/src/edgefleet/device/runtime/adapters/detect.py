"""SSD-style detection results (pycoral's `pycoral.adapters.detect`).

Models ending in `TFLite_Detection_PostProcess` have four outputs: boxes [1, N, 4] (ymin, xmin, ymax,
xmax, normalized to the input tensor), class ids [1, N], scores [1, N] and the count [1]. Their order
depends on how the model was exported; like pycoral, a model with a signature is read by the signature's
output names (TF2: output_0 count, output_1 scores, output_2 classes, output_3 boxes), otherwise by the
TF1 order (boxes, classes, scores, count) when the fourth output is the count, else the TF2 order
(scores, boxes, count, classes). Those heuristics are wrong for some exports (a TF2 `from_concrete_functions`
export names the op's outputs output_0..3 in op order), so when the model file is known the op's own output
order (boxes, classes, scores, count, fixed by the op) is used instead: `ModelInfo.postprocess_outputs`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from edgefleet.device.runtime.adapters.common import input_size
from edgefleet.device.runtime.tflite_api import TensorDetail, TfliteInterpreter
from edgefleet.kernel.errors import ModelError

Signatures = Mapping[str, Mapping[str, Mapping[str, int]]]
"""LiteRT's full signature list: signature key -> {"inputs": {name: tensor index}, "outputs": {...}}."""

DETECTION_OUTPUTS = 4
BOX_COORDINATES = 4


class BBox(NamedTuple):
    """A box in pixels (or normalized units before scaling): xmin, ymin, xmax, ymax."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float

    @property
    def width(self) -> float:
        return self.xmax - self.xmin

    @property
    def height(self) -> float:
        return self.ymax - self.ymin

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def valid(self) -> bool:
        return self.width >= 0 and self.height >= 0

    def scale(self, sx: float, sy: float) -> BBox:
        """Scales x by `sx` and y by `sy`."""
        return BBox(self.xmin * sx, self.ymin * sy, self.xmax * sx, self.ymax * sy)

    def translate(self, dx: float, dy: float) -> BBox:
        """Moves the box by (dx, dy)."""
        return BBox(self.xmin + dx, self.ymin + dy, self.xmax + dx, self.ymax + dy)

    def map(self, f: Callable[[float], Any]) -> BBox:
        """Applies `f` to every coordinate (e.g. `int`)."""
        return BBox(f(self.xmin), f(self.ymin), f(self.xmax), f(self.ymax))

    @staticmethod
    def intersect(a: BBox, b: BBox) -> BBox:
        return BBox(max(a.xmin, b.xmin), max(a.ymin, b.ymin), min(a.xmax, b.xmax), min(a.ymax, b.ymax))

    @staticmethod
    def union(a: BBox, b: BBox) -> BBox:
        return BBox(min(a.xmin, b.xmin), min(a.ymin, b.ymin), max(a.xmax, b.xmax), max(a.ymax, b.ymax))

    @staticmethod
    def iou(a: BBox, b: BBox) -> float:
        """Intersection over union; 0 when the boxes do not overlap."""
        intersection = BBox.intersect(a, b)
        if not intersection.valid:
            return 0.0
        union_area = a.area + b.area - intersection.area
        return intersection.area / union_area if union_area > 0 else 0.0


class Object(NamedTuple):
    """One detected object: class id, score and box in original image pixels."""

    id: int
    score: float
    bbox: BBox


@dataclass(frozen=True)
class DetectionOutputs:
    """The four postprocess outputs of one image, batch dimension removed."""

    boxes: np.ndarray      # [N, 4] ymin, xmin, ymax, xmax, normalized to the input tensor
    class_ids: np.ndarray  # [N]
    scores: np.ndarray     # [N]
    count: int


def _postprocess_order(details: list[TensorDetail], signatures: Signatures) -> list[int]:
    """Tensor indices (boxes, classes, scores, count) by pycoral's heuristics, checked against shapes."""
    indices = [d["index"] for d in details]
    outputs: Mapping[str, int] = next(iter(signatures.values()))["outputs"] if len(signatures) == 1 else {}
    if set(outputs) >= {f"output_{i}" for i in range(DETECTION_OUTPUTS)}:
        # TF2 object detection API export: output_0 count, output_1 scores, output_2 classes, output_3 boxes.
        count, scores, classes, boxes = (outputs[f"output_{i}"] for i in range(DETECTION_OUTPUTS))
        shapes = {d["index"]: tuple(d["shape"]) for d in details}
        if int(np.prod(shapes.get(count, (0,)))) == 1 and shapes.get(boxes, (0,))[-1:] == (BOX_COORDINATES,):
            return [boxes, classes, scores, count]
    if int(np.prod(details[3]["shape"])) == 1:
        return indices  # TF1 order: boxes, classes, scores, count
    scores, boxes, count, classes = indices
    return [boxes, classes, scores, count]


def detection_outputs(interpreter: TfliteInterpreter,
                      postprocess_outputs: tuple[int, ...] | None = None) -> DetectionOutputs:
    """Reads the four postprocess outputs of the last inference.

    Args:
        interpreter: An interpreter that has run.
        postprocess_outputs: Tensor indices (boxes, classes, scores, count) of the model's
            `TFLite_Detection_PostProcess` op (`ModelInfo.postprocess_outputs`): exact, whatever order the
            exporter gave the model outputs. Without them, pycoral's heuristics decide.

    Raises:
        ModelError: The model does not have SSD postprocess outputs.
    """
    details = interpreter.get_output_details()
    if postprocess_outputs is None and len(details) != DETECTION_OUTPUTS:
        raise ModelError(
            f"model has {len(details)} outputs, not the {DETECTION_OUTPUTS} of an SSD detection model "
            "(boxes, classes, scores, count)",
            fix="use a detection model ending in TFLite_Detection_PostProcess, or task 'classification'")
    if postprocess_outputs is not None:
        order = list(postprocess_outputs)
    else:
        # LiteRT's (private) list names the outputs; tflite_runtime 2.5 has none.
        full_signature_list: Callable[[], Signatures | None] | None = getattr(
            interpreter, "_get_full_signature_list", None)
        signatures = full_signature_list() if full_signature_list is not None else None
        order = _postprocess_order(details, signatures or {})
    boxes, class_ids, scores, count = (interpreter.get_tensor(index)[0] for index in order)
    return DetectionOutputs(boxes=np.asarray(boxes).reshape(-1, BOX_COORDINATES),
                            class_ids=np.asarray(class_ids).ravel(), scores=np.asarray(scores).ravel(),
                            count=int(np.asarray(count).ravel()[0]))


def objects_from_outputs(outputs: DetectionOutputs, input_size: tuple[int, int],
                         score_threshold: float = -float("inf"),
                         image_scale: tuple[float, float] = (1.0, 1.0)) -> list[Object]:
    """Objects scoring at least `score_threshold`, boxes in original image pixels.

    Args:
        outputs: The postprocess outputs.
        input_size: Model input (width, height).
        score_threshold: Minimum score.
        image_scale: Resized image size / original image size per axis (`preprocess.image_scale`).
    """
    width, height = input_size
    sx, sy = width / image_scale[0], height / image_scale[1]
    count = min(outputs.count, len(outputs.scores))
    objects: list[Object] = []
    for i in range(count):
        score = float(outputs.scores[i])
        if score < score_threshold:
            continue
        ymin, xmin, ymax, xmax = (float(v) for v in outputs.boxes[i])
        objects.append(Object(id=int(outputs.class_ids[i]), score=score,
                              bbox=BBox(xmin=xmin, ymin=ymin, xmax=xmax, ymax=ymax).scale(sx, sy).map(int)))
    return objects


def get_objects(interpreter: TfliteInterpreter, score_threshold: float = -float("inf"),
                image_scale: tuple[float, float] = (1.0, 1.0),
                postprocess_outputs: tuple[int, ...] | None = None) -> list[Object]:
    """pycoral's `get_objects`: detected objects of the last inference, boxes in original image pixels.

    Args:
        interpreter: An interpreter that has run.
        score_threshold: Minimum score.
        image_scale: Resized image size / original image size per axis (`preprocess.image_scale`).
        postprocess_outputs: See `detection_outputs`.
    """
    return objects_from_outputs(detection_outputs(interpreter, postprocess_outputs), input_size(interpreter),
                                score_threshold, image_scale)
