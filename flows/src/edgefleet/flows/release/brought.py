"""Models brought as they are: a fully integer-quantized `.tflite` made elsewhere, its labels, and optionally
its `_edgetpu.tflite`.

The checks are the ones `edgetpu_compiler` and the device make, done before anything is published: the
model opens with the device runtime, every operation is integer (the float ones are named), its labels fit
its outputs, an Edge TPU twin really is compiled and takes the same input. A dataset, when given, is an image
folder whose class folders are named after the model's labels; every image is evaluated (there is no
training, so nothing needs holding out).

The decisions (`float_operations`, `detect_task`, `evaluation_set`) are pure functions of what was read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from edgefleet.device.runtime.adapters.labels import check_label_count, read_label_file
from edgefleet.device.runtime.config import DETECTION_POSTPROCESS_OP
from edgefleet.device.runtime.interpreter import Interpreter, ModelInfo, inspect_model
from edgefleet.flows.release.dataset import Dataset, DatasetError
from edgefleet.flows.release.model_params import TfliteSource
from edgefleet.flows.release.params import expand
from edgefleet.kernel.errors import ConfigError, LabelsError, ModelError

log = logging.getLogger(__name__)

Task = Literal["classification", "detection"]
INTEGER_DTYPES = frozenset({"uint8", "int8", "int16", "int32", "int64", "bool"})
DEQUANTIZE_OP = "DEQUANTIZE"
DELEGATE_OP = "DELEGATE"
NAMED_FLOAT_OPS = 8  # how many float operations an error lists before "and N more"
QUANTIZE_FIX = (
    "convert it with full-integer post-training quantization: converter.optimizations = "
    "[tf.lite.Optimize.DEFAULT], a representative_dataset, target_spec.supported_ops = "
    "[tf.lite.OpsSet.TFLITE_BUILTINS_INT8], inference_input_type = tf.uint8 (see g.co/coral/model-reqs)"
)


class Operation(NamedTuple):
    """One operation of a TFLite graph with the dtypes of its tensors (what the integer check reads)."""

    index: int
    name: str
    input_dtypes: tuple[str, ...]
    output_dtypes: tuple[str, ...]
    consumers: tuple[str, ...]  # names of the operations reading its outputs


class BroughtModel(NamedTuple):
    """A brought model, checked.

    Attributes:
        source: The .tflite path as given.
        cpu_tflite: Its bytes (the `cpu` variant).
        edgetpu_tflite: The brought `_edgetpu.tflite` bytes, None when it is to be compiled here.
        labels_text: The labels file as given (one a line, or pycoral's `id label` lines).
        labels: {class id: label}.
        task: classification or detection.
        info: What the device runtime reads from the CPU model.
    """

    source: str
    cpu_tflite: bytes
    edgetpu_tflite: bytes | None
    labels_text: str
    labels: dict[int, str]
    task: Task
    info: ModelInfo

    @property
    def input_side(self) -> int | None:
        """The side of a square [1, S, S, 3] input, None for any other input shape."""
        shape = self.info.input.shape
        return shape[1] if len(shape) == 4 and shape[1] == shape[2] and shape[3] == 3 else None


def graph_operations(interpreter: Any) -> tuple[Operation, ...]:
    """The operations of the interpreter's main graph with their tensors' dtypes."""
    dtypes = {detail["index"]: np.dtype(detail["dtype"]).name for detail in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != DELEGATE_OP]
    readers: dict[int, list[str]] = {}
    for op in ops:
        for tensor in op["inputs"]:
            readers.setdefault(int(tensor), []).append(op["op_name"])
    return tuple(
        Operation(
            index=int(op["index"]),
            name=op["op_name"],
            input_dtypes=tuple(dtypes.get(int(t), "unknown") for t in op["inputs"] if t >= 0),
            output_dtypes=tuple(dtypes.get(int(t), "unknown") for t in op["outputs"] if t >= 0),
            consumers=tuple(name for t in op["outputs"] for name in readers.get(int(t), ())),
        )
        for op in ops
    )


def float_operations(operations: tuple[Operation, ...]) -> tuple[Operation, ...]:
    """The operations with a non-integer tensor, except an SSD's postprocessing (pure).

    `TFLite_Detection_PostProcess` works in float by definition (it runs on the CPU beside the Edge TPU, as
    in Coral's own SSD models), and so may the DEQUANTIZE operations that only feed it.
    """
    found = []
    for op in operations:
        dtypes = op.input_dtypes + op.output_dtypes
        if all(dtype in INTEGER_DTYPES for dtype in dtypes):
            continue
        if op.name == DETECTION_POSTPROCESS_OP:
            continue
        if op.name == DEQUANTIZE_OP and op.consumers and set(op.consumers) == {DETECTION_POSTPROCESS_OP}:
            continue
        found.append(op)
    return tuple(found)


def describe_float_operations(operations: tuple[Operation, ...]) -> str:
    """'QUANTIZE #0 (float32 -> int8), FULLY_CONNECTED #3 (float32 -> float32)...' (pure)."""
    named = [
        f"{op.name} #{op.index} ({', '.join(op.input_dtypes)} -> {', '.join(op.output_dtypes)})"
        for op in operations[:NAMED_FLOAT_OPS]
    ]
    more = len(operations) - NAMED_FLOAT_OPS
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


def detect_task(info: ModelInfo, asked: str) -> Task:
    """The task: as asked, or (auto) detection for a model ending in TFLite_Detection_PostProcess (pure).

    Raises:
        ModelError: detection asked for a model without the SSD postprocess outputs.
    """
    if asked == "classification":
        return "classification"
    if info.postprocess_outputs is not None:
        return "detection"
    if asked == "detection":
        raise ModelError(
            f"{info.path} has no {DETECTION_POSTPROCESS_OP} operation: edgefleet runs SSD detectors that end "
            "in it (boxes, classes, scores, count)",
            "export the detector with its postprocessing (TF2 object detection API: "
            "export_tflite_graph_tf2.py), or set source.task: classification",
        )
    return "classification"


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as error:
        raise ModelError(f"{what} {path} does not exist", "check source.path / source.edgetpu_path") from error
    except OSError as error:
        raise ModelError(f"{what} {path} cannot be read: {error}", "check its permissions") from error


def check_fully_integer(path: Path) -> None:
    """Raises ModelError naming every float operation of the model (what edgetpu_compiler refuses)."""
    interpreter = Interpreter(model_path=str(path))
    floats = float_operations(graph_operations(interpreter))
    if floats:
        raise ModelError(
            f"{path} is not fully integer-quantized: {len(floats)} operation(s) compute in float: "
            f"{describe_float_operations(floats)}. The Edge TPU runs only 8-bit integer models",
            QUANTIZE_FIX,
        )


def _check_edgetpu_twin(path: Path, cpu: ModelInfo) -> ModelInfo:
    info = inspect_model(path)
    if not info.needs_edgetpu:
        raise ModelError(
            f"{path} (source.edgetpu_path) has no edgetpu-custom-op: it is not compiled for the Edge TPU",
            "give the file edgetpu_compiler wrote (NAME_edgetpu.tflite), or leave source.edgetpu_path empty to "
            "compile here",
        )
    if info.input.shape != cpu.input.shape or info.input.dtype != cpu.input.dtype:
        raise ModelError(
            f"{path} takes {list(info.input.shape)} {info.input.dtype}, but {cpu.path} takes "
            f"{list(cpu.input.shape)} {cpu.input.dtype}: they are not the same model",
            "give the _edgetpu.tflite compiled from source.path (edgetpu_compiler source.tflite)",
        )
    return info


def load_brought(source: TfliteSource) -> BroughtModel:
    """Reads and checks a brought model: opens, integer, labels fit, Edge TPU twin (when given) compiled.

    Raises:
        ModelError: missing, corrupt, float, custom operations the runtime lacks, or a wrong Edge TPU twin.
        LabelsError: the labels file is missing, or a classifier's labels do not match its outputs.
    """
    path = expand(source.path)
    cpu_bytes = _read(path, "model")
    info = inspect_model(path)
    if info.needs_edgetpu:
        raise ModelError(
            f"{path} (source.path) is compiled for the Edge TPU; the release needs the CPU model it was compiled "
            "from",
            "set source.path to the int8 .tflite given to edgetpu_compiler and source.edgetpu_path to this file",
        )
    check_fully_integer(path)
    task = detect_task(info, source.task)
    labels_path = expand(source.labels)
    labels = read_label_file(labels_path)
    if task == "classification":
        check_label_count(labels, int(np.prod(info.outputs[0].shape)), labels_path)
    edgetpu = None
    if source.edgetpu_path:
        edgetpu_path = expand(source.edgetpu_path)
        edgetpu = _read(edgetpu_path, "Edge TPU model")
        _check_edgetpu_twin(edgetpu_path, info)
    try:
        labels_text = labels_path.read_text(encoding="utf-8")
    except OSError as error:  # read_label_file has read it a moment ago
        raise LabelsError(f"labels file {labels_path} cannot be read: {error}", "check the file") from error
    log.info("Brought %s: %s, %d labels, Edge TPU twin %s", path, task, len(labels), "given" if edgetpu else "no")
    return BroughtModel(source.path, cpu_bytes, edgetpu, labels_text, labels, task, info)


def check_can_evaluate(model: BroughtModel) -> int:
    """The input side to load an evaluation dataset at.

    Raises:
        ConfigError: a detector (image folders have no boxes) or a non-square input.
    """
    if model.task == "detection":
        raise ConfigError(
            f"{model.source} is a detector: an image-folder dataset has no boxes to evaluate it against",
            "release the detector without a dataset (leave `dataset` empty): no accuracy gates apply, and "
            "devices still smoke-test it with its golden outputs before swapping it in",
        )
    side = model.input_side
    if side is None:
        raise ConfigError(
            f"{model.source} takes input {list(model.info.input.shape)}, not square RGB [1, S, S, 3]: "
            "folder datasets are evaluated at a square size",
            "release it without a dataset",
        )
    return side


def _label_ids(labels: dict[int, str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for class_id, label in labels.items():
        ids.setdefault(label.strip().casefold(), class_id)
    return ids


def evaluation_set(dataset: Dataset, labels: dict[int, str]) -> Dataset:
    """The whole dataset as the held-out split, its classes renumbered to the model's class ids (pure).

    The result's labels are the model's (id = index), so per-class results and class mixes are in the ids
    the model outputs, the ids devices report.

    Raises:
        DatasetError: a class folder is not one of the model's labels (matched ignoring case).
    """
    ids = _label_ids(labels)
    unknown = [name for name in dataset.labels if name.strip().casefold() not in ids]
    if unknown:
        sample = ", ".join(list(labels.values())[:5])
        raise DatasetError(
            f"dataset {dataset.source}: class folder(s) {', '.join(unknown)} are not labels of the model "
            f"({len(labels)} labels: {sample}, ...)",
            "name each class folder exactly as the model's label (the line of the labels file), or remove it",
        )
    mapping = np.array([ids[name.strip().casefold()] for name in dataset.labels], dtype=np.int64)
    images = np.concatenate([dataset.train_x, dataset.eval_x])
    truth = mapping[np.concatenate([dataset.train_y, dataset.eval_y])]
    count = max(labels) + 1
    return Dataset(
        labels=tuple(labels.get(i, str(i)) for i in range(count)),
        train_x=images[:0],
        train_y=truth[:0],
        eval_x=images,
        eval_y=truth,
        fingerprint=dataset.fingerprint,
        source=dataset.source,
        skipped=dataset.skipped,
    )

