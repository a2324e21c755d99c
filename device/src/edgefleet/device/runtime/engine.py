"""The inference engine the agent loop uses: one model, its labels, preprocessing and adapters.

`prepare` touches no interpreter state, so the loop runs it in its capture thread while `infer` runs the
previous frame; `infer` and `run_raw` are serialized by a lock (the interpreter is not thread-safe).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgefleet.device.runtime.adapters.classify import get_classes_from_scores
from edgefleet.device.runtime.adapters.detect import (
    DETECTION_OUTPUTS,
    BBox,
    detection_outputs,
    objects_from_outputs,
)
from edgefleet.device.runtime.adapters.labels import check_label_count, read_label_file
from edgefleet.device.runtime.config import DEFAULT_RUNTIME_CONFIG, RuntimeConfig
from edgefleet.device.runtime.interpreter import (
    LoadedModel,
    ModelInfo,
    check_device,
    edgetpu_present,
    load_model,
)
from edgefleet.device.runtime.preprocess import Preprocessor, image_scale
from edgefleet.device.runtime.quantization import dequantize
from edgefleet.device.runtime.tflite_api import TfliteInterpreter
from edgefleet.kernel.contracts.manifest import Manifest, TensorSpec, Variant
from edgefleet.kernel.errors import EdgefleetError, ModelError, NoEdgeTpuError, VerificationError

log = logging.getLogger(__name__)

Task = Literal["classification", "detection"]
_MS = 1000.0


@dataclass(frozen=True)
class ResultItem:
    """One classification or detection result.

    Attributes:
        id: Class id (label index).
        label: Its label ('' when the engine has no labels, str(id) when the labels lack it).
        score: Dequantized score.
        box: Detection box in original image pixels (input tensor pixels without an image size).
    """

    id: int
    label: str
    score: float
    box: BBox | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; `box` only for detections."""
        data: dict[str, Any] = {"id": self.id, "label": self.label, "score": round(self.score, 6)}
        if self.box is not None:
            data["box"] = self.box._asdict()
        return data


@dataclass(frozen=True)
class InferenceResult:
    """The results of one frame.

    Attributes:
        results: Best first.
        latency_ms: Wall time of setting the input and invoking the interpreter.
    """

    results: tuple[ResultItem, ...]
    latency_ms: float

    @property
    def top(self) -> ResultItem | None:
        return self.results[0] if self.results else None


class Engine:
    """One opened model ready to run frames. Build it with `Engine.open` or `open_for_manifest`."""

    def __init__(self, loaded: LoadedModel, *, task: Task, labels: dict[int, str] | None, top_k: int,
                 score_threshold: float, variant: Variant, config: RuntimeConfig) -> None:
        self._interpreter: TfliteInterpreter | None = loaded.interpreter
        self.info: ModelInfo = loaded.info
        self.backend: str = loaded.backend
        self.task: Task = task
        self.labels: dict[int, str] | None = labels
        self.top_k = top_k
        self.score_threshold = score_threshold
        self.variant: Variant = variant
        self.config = config
        self.preprocessor = Preprocessor(self.info.input, keep_aspect=task == "detection", config=config)
        self._input_index = loaded.interpreter.get_input_details()[0]["index"]
        self._output_indices = [d["index"] for d in loaded.interpreter.get_output_details()]
        self._lock = threading.Lock()

    @classmethod
    def open(cls, model_path: str | Path, *, labels_path: str | Path | None = None,
             task: Task = "classification", device: str | None = None, num_threads: int | None = None,
             top_k: int | None = None, score_threshold: float | None = None,
             variant: Variant | None = None, config: RuntimeConfig = DEFAULT_RUNTIME_CONFIG) -> Engine:
        """Opens a model (Edge TPU or CPU, see `interpreter.load_model`) with its labels.

        Args:
            model_path: A `.tflite` file.
            labels_path: Its labels; for classification their count must match the output.
            task: 'classification' or 'detection' (SSD postprocess outputs).
            device: None/'auto', 'cpu', 'usb', 'usb:0', 'pci', ...
            num_threads: CPU threads (default from config).
            top_k: Classification results kept (default from config; detection keeps all above threshold).
            score_threshold: Minimum score (default from config, per task).
            variant: 'edgetpu' (loads the Edge TPU delegate) or 'cpu'; default: what the model needs.
            config: Runtime defaults.

        Raises:
            ModelError, NoEdgeTpuError, LabelsError, ConfigError.
        """
        loaded = load_model(model_path, device, num_threads or config.num_threads,
                            library=config.edgetpu_library, edgetpu=variant == "edgetpu")
        info = loaded.info
        try:
            labels = _checked_labels(info, task, labels_path)
        except EdgefleetError:
            del loaded  # the interpreter and its Edge TPU delegate go now, not with the error a caller keeps
            raise
        if score_threshold is None:
            score_threshold = (config.classification_threshold if task == "classification"
                               else config.detection_threshold)
        return cls(loaded, task=task, labels=labels, top_k=top_k or config.top_k,
                   score_threshold=score_threshold,
                   variant=variant or ("edgetpu" if info.needs_edgetpu else "cpu"), config=config)

    # --- the hot path -------------------------------------------------------------------------------

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """An HxWx3 uint8 RGB frame of any size -> a new input tensor. Thread-safe, no interpreter use."""
        return self.preprocessor(frame)

    def _live(self) -> TfliteInterpreter:
        """The interpreter; ModelError once the engine is closed. Caller holds the lock."""
        if self._interpreter is None:
            raise ModelError(f"the engine of {self.info.path.name} is closed", fix="open the model again")
        return self._interpreter

    def _run(self, tensor: np.ndarray) -> float:
        """Sets the input and invokes; returns the latency in ms. Caller holds the lock."""
        interpreter = self._live()
        start = time.perf_counter()
        try:
            interpreter.set_tensor(self._input_index, tensor)
        except ValueError as error:
            spec = self.info.input
            raise ModelError(
                f"input tensor {getattr(tensor, 'shape', '?')} {getattr(tensor, 'dtype', '?')} does not fit "
                f"{self.info.path.name}'s input {spec.shape} {spec.dtype}: {error}",
                fix="build the tensor with Engine.prepare") from error
        try:
            interpreter.invoke()
        except (RuntimeError, ValueError) as error:
            raise ModelError(f"{self.info.path.name} failed to run: {error}",
                             fix="check the model runs with `edgefleet-agent classify`; re-export it",
                             ) from error
        return (time.perf_counter() - start) * _MS

    def run_raw(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Runs one input tensor; returns copies of all raw (quantized) outputs."""
        with self._lock:
            self._run(tensor)
            interpreter = self._live()
            return [interpreter.get_tensor(index) for index in self._output_indices]

    def infer(self, tensor: np.ndarray, image_size: tuple[int, int] | None = None) -> InferenceResult:
        """Runs one prepared tensor and returns labelled results, best first.

        Args:
            tensor: From `prepare`.
            image_size: Original frame (width, height) for detection boxes in frame pixels; without it
                boxes are in input tensor pixels.
        """
        with self._lock:
            latency_ms = self._run(tensor)
            if self.task == "classification":
                items = self._classes()
            else:
                items = self._objects(image_size)
        return InferenceResult(results=tuple(items), latency_ms=latency_ms)

    def _label(self, class_id: int) -> str:
        if self.labels is None:
            return ""
        return self.labels.get(class_id, str(class_id))

    def _classes(self) -> list[ResultItem]:
        raw = self._live().get_tensor(self._output_indices[0]).ravel()
        quantization = self.info.outputs[0].quantization
        scores = dequantize(raw, (quantization.scale, quantization.zero_point))
        return [ResultItem(c.id, self._label(c.id), c.score)
                for c in get_classes_from_scores(scores, self.top_k, self.score_threshold)]

    def _objects(self, image_size: tuple[int, int] | None) -> list[ResultItem]:
        input_size = self.preprocessor.input_size
        scale = image_scale(image_size, input_size, keep_aspect=True) if image_size else (1.0, 1.0)
        objects = objects_from_outputs(detection_outputs(self._live(), self.info.postprocess_outputs),
                                       input_size,
                                       self.score_threshold, scale)
        objects.sort(key=lambda o: -o.score)
        return [ResultItem(o.id, self._label(o.id), o.score, o.bbox) for o in objects]

    # --- lifecycle ----------------------------------------------------------------------------------

    @property
    def input_spec(self) -> TensorSpec:
        return self.info.input

    @property
    def interpreter(self) -> TfliteInterpreter | None:
        """The underlying interpreter, for pycoral-style adapters (do not use while `infer` runs)."""
        return self._interpreter

    def close(self) -> None:
        """Releases the interpreter (and the Edge TPU delegate). Idempotent."""
        with self._lock:
            self._interpreter = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Engine({self.info.path.name!r}, task={self.task!r}, backend={self.backend!r})"


def _checked_labels(info: ModelInfo, task: Task, labels_path: str | Path | None) -> dict[int, str] | None:
    """The labels of a model, checked against its outputs (and its outputs against the task)."""
    labels = read_label_file(labels_path) if labels_path is not None else None
    if task == "classification":
        classes = int(np.prod(info.outputs[0].shape))
        if labels is not None and labels_path is not None:  # labels come from a path
            check_label_count(labels, classes, labels_path)
    elif len(info.outputs) != DETECTION_OUTPUTS and info.postprocess_outputs is None:
        raise ModelError(
            f"{info.path} has {len(info.outputs)} outputs, not the {DETECTION_OUTPUTS} of an SSD "
            "detection model (boxes, classes, scores, count)",
            fix="use a detection model ending in TFLite_Detection_PostProcess, or task 'classification'")
    return labels


def choose_variant(manifest: Manifest, device: str | None, *,
                   library: str = DEFAULT_RUNTIME_CONFIG.edgetpu_library) -> tuple[Variant, str | None]:
    """Which variant of a manifest to run here, and on which device.

    The `edgetpu` variant when the manifest has one and an Edge TPU (the asked one, or any for 'auto') is
    present; otherwise the `cpu` twin on the CPU.

    Raises:
        NoEdgeTpuError: Only an edgetpu variant and no Edge TPU.
        ConfigError: Unknown device name.
    """
    device = check_device(device)
    if device != "cpu" and "edgetpu" in manifest.variants and edgetpu_present(device, library=library):
        return "edgetpu", device
    if "cpu" not in manifest.variants:
        raise NoEdgeTpuError(
            f"No Edge TPU detected: {manifest.model} {manifest.version} ships only "
            f"{manifest.variants['edgetpu']}, compiled for the Edge TPU",
            fix="attach a Coral USB Accelerator/PCIe/Dev Board and install libedgetpu, or release the CPU "
                "model too")
    if device not in (None, "cpu"):
        log.warning("Edge TPU %r not available: running %s %s on the CPU", device, manifest.model,
                    manifest.version)
    return "cpu", "cpu"


def _check_input(manifest: Manifest, info: ModelInfo) -> None:
    got, want = info.input, manifest.input
    if got.shape != want.shape or got.dtype != want.dtype:
        raise ModelError(
            f"{info.path} input is {got.shape} {got.dtype} but manifest {manifest.model} {manifest.version} "
            f"says {want.shape} {want.dtype}",
            fix="re-publish the release: its manifest does not describe its model")


def open_for_manifest(version_dir: Path, manifest: Manifest, *, device: str | None = "auto",
                      num_threads: int | None = None, top_k: int | None = None,
                      score_threshold: float | None = None,
                      config: RuntimeConfig = DEFAULT_RUNTIME_CONFIG) -> Engine:
    """Opens the best variant of a model version (see `choose_variant`) with its labels and task.

    Args:
        version_dir: `models/<model>/<version>/` holding the manifest's files.
        manifest: Its (already verified) manifest.
        device: 'auto', 'cpu', or an Edge TPU ('usb', 'usb:0', 'pci', ...).

    Raises:
        ModelError, NoEdgeTpuError, LabelsError, ConfigError.
    """
    version_dir = Path(version_dir)
    variant, run_on = choose_variant(manifest, device, library=config.edgetpu_library)
    labels_path = version_dir / manifest.labels_file if manifest.labels_file else None
    engine = Engine.open(version_dir / manifest.variants[variant], labels_path=labels_path,
                         task=manifest.task, device=run_on, num_threads=num_threads, top_k=top_k,
                         score_threshold=score_threshold, variant=variant, config=config)
    try:
        _check_input(manifest, engine.info)
        _check_loaded_bytes(manifest, manifest.variants[variant], engine.info)
    except (ModelError, VerificationError):
        engine.close()
        raise
    return engine


def _check_loaded_bytes(manifest: Manifest, name: str, info: ModelInfo) -> None:
    """The bytes the interpreter loaded are those the verified manifest names (no swap after verifying)."""
    entry = manifest.file(name)
    if info.sha256 != entry.sha256:
        raise VerificationError(
            f"{info.path} changed after it was verified: the loaded bytes have sha256 {info.sha256[:16]}..., "
            f"manifest {manifest.model} {manifest.version} says {entry.sha256[:16]}...",
            "something writes into the model store: check its permissions (the agent's store must not be "
            "writable by others) and install the version again")
