"""Opening `.tflite` models: what they need, and an interpreter on the Edge TPU or the CPU.

The interpreter class comes from `tflite_runtime` where a Coral community build provides it, else from
LiteRT (`ai_edge_litert`), the maintained successor. Both load the Edge TPU through libedgetpu's external
delegate ABI (`tflite_plugin_create_delegate`), with pycoral's device names (`usb`, `usb:0`, `pci`, `:0`).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import logging
import re
import threading
import traceback
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple, Protocol

import numpy as np

from edgefleet.device.runtime.adapters.common import tensor_spec
from edgefleet.device.runtime.config import (
    DEFAULT_RUNTIME_CONFIG,
    DETECTION_POSTPROCESS_OP,
    EDGETPU_CUSTOM_OP,
)
from edgefleet.device.runtime.library_file import library_file
from edgefleet.device.runtime.tflite_api import TensorDetail, TfliteInterpreter
from edgefleet.device.runtime.tflite_file import (
    FlatbufferError,
    custom_op_outputs,
    custom_ops,
    read_operator_codes,
)
from edgefleet.kernel.contracts.manifest import TensorSpec
from edgefleet.kernel.errors import ConfigError, ModelError, NoEdgeTpuError

Delegate = object
"""A loaded external delegate (opaque: handed back to the interpreter, kept alive while in use)."""


class InterpreterClass(Protocol):
    """The `Interpreter` constructor."""

    def __call__(self, model_path: str | None = None, model_content: bytes | None = None,
                 experimental_delegates: list[Delegate] | None = None,
                 num_threads: int | None = None) -> TfliteInterpreter: ...


class DelegateLoader(Protocol):
    """`load_delegate(library, options)`: raises ValueError (or OSError) when the delegate cannot be created."""

    def __call__(self, library: str, options: dict[str, str] | None = None) -> Delegate: ...


def _runtime_module() -> ModuleType:
    try:  # Coral community builds of tflite_runtime come first: they match the installed libedgetpu.
        return importlib.import_module("tflite_runtime.interpreter")
    except ImportError:
        return importlib.import_module("ai_edge_litert.interpreter")


_RUNTIME = _runtime_module()
Interpreter: InterpreterClass = _RUNTIME.Interpreter
load_delegate: DelegateLoader = _RUNTIME.load_delegate

log = logging.getLogger(__name__)

EDGETPU_SUFFIX = "_edgetpu"
_DEVICE_PATTERN = re.compile(r"^(?:(usb|pci)(?::\d+)?|:\d+)$")
_UNRESOLVED_OP = re.compile(r"unresolved custom op: ([^\s.]+(?:\.[^\s.]+)*)")

__all__ = [
    "EDGETPU_SUFFIX", "Interpreter", "LoadedModel", "ModelInfo", "TensorDetail", "TfliteInterpreter",
    "backend_name", "check_device", "cpu_twin_name", "edgetpu_present", "holds_edgetpu", "inspect_model",
    "library_changed", "load_delegate", "load_model", "make_interpreter",
]

# The Edge TPU delegates alive in this process, per library: while one is, this process holds the TPU (the
# real libedgetpu opens a TPU in one process at a time; its delegates in the same process share it).
_LIVE_DELEGATES: dict[str, weakref.WeakSet[Delegate]] = {}
_LIVE_LOCK = threading.Lock()
# The file (resolved path, mtime) each library name was when this process first loaded it. A process keeps the
# build it loaded: dlopen of the same name returns the library already mapped, whatever file is there now.
_LOADED_FILES: dict[str, tuple[str, int]] = {}
RESTART_FIX = ("restart the agent: the new libedgetpu build takes effect in a new process (deploy-agent "
               "restarts it after installing libedgetpu_debs; after `apt install` by hand, `systemctl restart` "
               "the agent's unit)")


class LibraryChangedError(OSError):
    """The libedgetpu file changed since this process loaded it: opening it here would run the old build."""


@dataclass(frozen=True)
class ModelInfo:
    """What a `.tflite` file is and needs.

    Attributes:
        path: The model file.
        inputs: Input tensors (shape, dtype, quantization).
        outputs: Output tensors.
        needs_edgetpu: The model contains `edgetpu-custom-op` (compiled by edgetpu_compiler).
        custom_ops: All custom operators in the model's operator codes.
        postprocess_outputs: Tensor indices of the `TFLite_Detection_PostProcess` outputs (boxes,
            classes, scores, count) when the model ends in that op, else None.
        size: File size in bytes.
        sha256: Hex sha256 of the file.
    """

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    needs_edgetpu: bool
    custom_ops: tuple[str, ...]
    postprocess_outputs: tuple[int, ...] | None
    size: int
    sha256: str

    @property
    def input(self) -> TensorSpec:
        """The first (for image models: the only) input."""
        return self.inputs[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what `edgefleet-agent inspect --json` prints)."""
        return {
            "path": str(self.path), "size": self.size, "sha256": self.sha256,
            "needs_edgetpu": self.needs_edgetpu, "custom_ops": list(self.custom_ops),
            "inputs": [spec.model_dump(mode="json") for spec in self.inputs],
            "outputs": [spec.model_dump(mode="json") for spec in self.outputs],
        }


class LoadedModel(NamedTuple):
    """An allocated interpreter with what it runs and where."""

    interpreter: TfliteInterpreter
    info: ModelInfo
    backend: str


def cpu_twin_name(path: Path) -> str:
    """`model_edgetpu.tflite` -> `model.tflite`: the CPU model the Edge TPU one was compiled from."""
    stem = path.stem[: -len(EDGETPU_SUFFIX)] if path.stem.endswith(EDGETPU_SUFFIX) else path.stem
    return f"{stem}{path.suffix}"


def check_device(device: str | None) -> str | None:
    """Validates a device name: None/'auto', 'cpu', 'usb', 'usb:N', 'pci', 'pci:N' or ':N'.

    Returns:
        None for 'auto', the name otherwise.

    Raises:
        ConfigError: Unknown device name.
    """
    if device is None or device == "auto":
        return None
    if device == "cpu" or _DEVICE_PATTERN.fullmatch(device):
        return device
    raise ConfigError(
        f"unknown inference device {device!r}",
        fix="use 'auto', 'cpu', or an Edge TPU like 'usb', 'usb:0', 'pci', 'pci:0' or ':0'")


def backend_name(device: str | None, edgetpu: bool) -> str:
    """The backend string reported in results and telemetry: 'cpu', 'edgetpu' or 'edgetpu:usb:0'."""
    if not edgetpu:
        return "cpu"
    return f"edgetpu:{device}" if device else "edgetpu"


def _tensor_spec(detail: TensorDetail, path: Path) -> TensorSpec:
    try:
        return tensor_spec(detail)
    except ValueError as error:
        raise ModelError(
            f"{path}: tensor {detail['name']!r} has dtype {np.dtype(detail['dtype']).name}, which edgefleet "
            "does not run",
            fix="export the model with uint8, int8 or float32 inputs and outputs") from error


def _corrupt(path: Path, error: Exception) -> ModelError:
    return ModelError(
        f"{path} is not a valid TFLite model (corrupt or truncated): {error}",
        fix="re-download the model (check its sha256 against the manifest) or re-export it with "
            "TFLiteConverter")


def _build_interpreter(path: Path, delegates: list[Delegate] | None, num_threads: int,
                       data: bytes) -> TfliteInterpreter:
    try:
        return Interpreter(model_content=data, experimental_delegates=delegates, num_threads=num_threads)
    except (ValueError, RuntimeError) as error:
        raise _corrupt(path, error) from error


def read_model_bytes(path: str | Path) -> bytes:
    """A model file's bytes, read once (what gets hashed is what gets loaded).

    Raises:
        ModelError: missing or unreadable.
    """
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError as error:
        raise ModelError(f"model file {path} does not exist", fix="check the path") from error
    except OSError as error:
        raise ModelError(f"model file {path} cannot be read: {error}", fix="check its permissions") from error


def inspect_model(path: str | Path, *, data: bytes | None = None) -> ModelInfo:
    """Reads a model's inputs, outputs and operator codes without running it.

    Args:
        path: A `.tflite` file (named in errors).
        data: its bytes when already read (then the file is not read again).

    Raises:
        ModelError: The file is missing, unreadable, corrupt or truncated.
    """
    path = Path(path)
    if data is None:
        data = read_model_bytes(path)
    # Our bounds-checked reader goes first: LiteRT 2.1 (the last for Python 3.9) does not verify the
    # flatbuffer and crashes the process on some corrupt files. The interpreter then verifies the whole file
    # where its verifier runs.
    try:
        ops = custom_ops(read_operator_codes(data))
        postprocess = custom_op_outputs(data, DETECTION_POSTPROCESS_OP)
    except FlatbufferError as error:
        raise _corrupt(path, error) from error
    interpreter = _build_interpreter(path, None, DEFAULT_RUNTIME_CONFIG.num_threads, data)
    return ModelInfo(
        path=path,
        inputs=tuple(_tensor_spec(d, path) for d in interpreter.get_input_details()),
        outputs=tuple(_tensor_spec(d, path) for d in interpreter.get_output_details()),
        needs_edgetpu=EDGETPU_CUSTOM_OP in ops,
        custom_ops=ops,
        postprocess_outputs=postprocess,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def library_changed(library: str) -> str | None:
    """Why `library` may not be opened in this process: this process loaded another file (path or mtime) of that
    name, which it keeps running; None when it loaded none, or the same file."""
    loaded = _LOADED_FILES.get(library)
    if loaded is None:
        return None
    now = library_file(library)
    if now == loaded:
        return None
    return (f"{library} changed since this process loaded it ({loaded[0]}, mtime {loaded[1]} ns; now "
            f"{now[0] + f', mtime {now[1]} ns' if now else 'not found'}): a new libedgetpu was installed, and "
            "this process would still run the build it loaded")


def _edgetpu_delegate(device: str | None, library: str) -> Delegate:
    """Loads libedgetpu's delegate; raises OSError/ValueError when the library or a TPU is missing, and
    LibraryChangedError when the file changed since this process loaded it and no delegate of the loaded build
    is alive (while one is, that build is the one running here and further delegates share it)."""
    changed = library_changed(library)
    if changed is not None and not holds_edgetpu(library):
        raise LibraryChangedError(f"{changed}; {RESTART_FIX}")
    file = library_file(library)
    # dlopen first ourselves: LiteRT's Delegate leaves a half-built object (and a noisy __del__) when the
    # library itself is missing.
    ctypes.CDLL(library)
    if file is not None:
        _LOADED_FILES.setdefault(library, file)
    delegate = load_delegate(library, {"device": device} if device else {})
    with _LIVE_LOCK:
        _LIVE_DELEGATES.setdefault(library, weakref.WeakSet[Delegate]()).add(delegate)
    return delegate


def holds_edgetpu(library: str = DEFAULT_RUNTIME_CONFIG.edgetpu_library) -> bool:
    """True while a delegate of `library` this process loaded is alive (so this process holds the TPU and
    another process, a probe child say, cannot open it)."""
    with _LIVE_LOCK:
        return len(_LIVE_DELEGATES.get(library, ())) > 0


def _release_delegates(delegates: list[Delegate] | None, error: BaseException) -> None:
    """Destroys the delegates of a load that failed, before its error is raised: an exception kept by a caller
    (a log, a test's `pytest.raises`) would otherwise keep them, and the TPU, held. The half-built interpreter
    in the runtime's frames goes first (LiteRT destroys an interpreter before its delegates)."""
    traceback.clear_frames(error.__traceback__)
    if delegates:
        delegates.clear()  # the list the half-built interpreter shared: the delegates' last references


def edgetpu_present(device: str | None = None, *,
                    library: str = DEFAULT_RUNTIME_CONFIG.edgetpu_library) -> bool:
    """True when the Edge TPU delegate loads (libedgetpu installed and a TPU, or `device`, attached)."""
    try:
        _edgetpu_delegate(check_device(device), library)
    except (OSError, ValueError, RuntimeError) as error:
        log.debug("no Edge TPU (%s): %s", library, error)
        return False
    return True


def _no_edgetpu(info: ModelInfo, device: str | None, reason: str) -> NoEdgeTpuError:
    where = f" (device {device!r})" if device else ""
    if info.needs_edgetpu:
        return NoEdgeTpuError(
            f"No Edge TPU detected{where}: {info.path.name} is compiled for the Edge TPU ({reason})",
            fix=f"attach a Coral USB Accelerator/PCIe/Dev Board and install libedgetpu, or run the CPU model "
                f"{cpu_twin_name(info.path)}")
    return NoEdgeTpuError(
        f"No Edge TPU detected{where}: an Edge TPU was asked for to run {info.path.name} ({reason})",
        fix="attach a Coral USB Accelerator/PCIe/Dev Board and install libedgetpu, or use device 'cpu' "
            "(or 'auto')")


def _unresolved_op(error: Exception, info: ModelInfo) -> str:
    match = _UNRESOLVED_OP.search(str(error))
    if match:
        return match.group(1)
    return ", ".join(info.custom_ops) or "unknown"


def load_model(model_path: str | Path, device: str | None = None, num_threads: int = 1, *,
               library: str = DEFAULT_RUNTIME_CONFIG.edgetpu_library, edgetpu: bool = False) -> LoadedModel:
    """Opens a model on the Edge TPU or the CPU and allocates its tensors.

    The Edge TPU delegate is loaded when the model needs it (`edgetpu-custom-op`) or an Edge TPU device is
    asked for; `device='cpu'` forces the CPU interpreter.

    Args:
        model_path: A `.tflite` file.
        device: None/'auto', 'cpu', 'usb', 'usb:0', 'pci', 'pci:0', ':0'.
        num_threads: CPU interpreter threads.
        library: The Edge TPU delegate library.
        edgetpu: Load the Edge TPU delegate even when neither the model nor `device` asks for it (an
            `edgetpu` variant the compiler could not map any op of still runs "on" the TPU runtime).

    Raises:
        ModelError: Corrupt model, or it fails to allocate (e.g. an unresolved custom op).
        NoEdgeTpuError: An Edge TPU model (or device) without an Edge TPU.
        ConfigError: Unknown device name.
    """
    device = check_device(device)
    data = read_model_bytes(model_path)  # read once: `info.sha256` is the hash of exactly what is loaded
    info = inspect_model(model_path, data=data)
    delegates = None
    if device == "cpu":
        if info.needs_edgetpu:
            raise _no_edgetpu(info, None, "the CPU was asked for")
    elif device is not None or info.needs_edgetpu or edgetpu:
        try:
            delegates = [_edgetpu_delegate(device, library)]
        except (OSError, ValueError, RuntimeError) as error:
            raise _no_edgetpu(info, device, f"{library}: {error}") from error
    try:
        # inspect_model has verified the file: failures from here on are the graph's, not the bytes'
        # (with a delegate, LiteRT already prepares the graph while constructing the interpreter).
        interpreter = Interpreter(model_content=data, experimental_delegates=delegates,
                                  num_threads=num_threads)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as error:
        op = _unresolved_op(error, info)
        edgetpu_loaded = bool(delegates)
        _release_delegates(delegates, error)
        if op == EDGETPU_CUSTOM_OP and edgetpu_loaded:
            raise ModelError(
                f"{info.path} cannot be allocated: the Edge TPU runtime ({library}) did not take its "
                f"{op!r} ({error})",
                fix="install the libedgetpu matching the edgetpu_compiler version the model was compiled "
                    f"with, or run the CPU model {cpu_twin_name(info.path)}") from error
        raise ModelError(
            f"{info.path} cannot be allocated: unresolved or failing operator {op!r} ({error})",
            fix=f"this runtime has no kernel for {op!r}: re-export the model with TFLite builtin ops only "
                "(or run it where that custom op is registered)") from error
    return LoadedModel(interpreter=interpreter, info=info,
                       backend=backend_name(device, delegates is not None))


def make_interpreter(model_path: str | Path, device: str | None = None,
                     num_threads: int = 1) -> TfliteInterpreter:
    """pycoral's `make_interpreter`: an allocated interpreter on the Edge TPU or CPU (see `load_model`)."""
    return load_model(model_path, device, num_threads).interpreter
