"""Input and output tensor helpers (pycoral's `pycoral.adapters.common`)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgefleet.device.runtime.preprocess import pixel_lut
from edgefleet.device.runtime.tflite_api import TensorDetail, TfliteInterpreter
from edgefleet.kernel.contracts.manifest import Quantization, TensorSpec
from edgefleet.kernel.errors import ModelError


def input_details(interpreter: TfliteInterpreter, key: str) -> object:
    """Returns `key` ('shape', 'dtype', 'quantization', 'index', ...) of the first input tensor."""
    return _value(_first_input(interpreter), key)


def _value(detail: Mapping[str, object], key: str) -> object:
    return detail[key]


def _first_input(interpreter: TfliteInterpreter) -> TensorDetail:
    return interpreter.get_input_details()[0]


def input_size(interpreter: TfliteInterpreter) -> tuple[int, int]:
    """Returns the input image size as (width, height)."""
    _, height, width, _ = _first_input(interpreter)["shape"]
    return int(width), int(height)


def input_tensor(interpreter: TfliteInterpreter) -> np.ndarray:
    """Returns a writable view of the input image tensor, shape (height, width, channels).

    Drop the view before `allocate_tensors()`: LiteRT refuses to reallocate while views exist.
    """
    return interpreter.tensor(_first_input(interpreter)["index"])()[0]


def set_input(interpreter: TfliteInterpreter, data: np.ndarray) -> None:
    """Copies an image into the input tensor, converted to the input's dtype and quantization.

    Args:
        interpreter: An allocated interpreter.
        data: Either a tensor already in the input dtype (copied as is), or an HxWx3 uint8 RGB image of the
            input size, converted with the runtime's pixel normalization (`preprocess.pixel_lut`).
    """
    dtype = np.dtype(_first_input(interpreter)["dtype"])
    data = np.asarray(data)
    if data.dtype != dtype:
        if data.dtype != np.uint8:
            raise ModelError(
                f"input of dtype {data.dtype} cannot feed a {dtype} model input",
                fix="pass a uint8 RGB image or a tensor of the model's input dtype")
        # A frozen pydantic model is hashable (pydantic adds __hash__); pyright reads model_config as not frozen.
        data = pixel_lut(input_spec(interpreter))[data]  # pyright: ignore[reportArgumentType]
    expected = tuple(int(d) for d in _first_input(interpreter)["shape"])
    if data.shape != expected:
        if data.size != int(np.prod(expected)):
            raise ModelError(
                f"input of shape {data.shape} does not fit the model input {expected}",
                fix="resize the image to the model's input size (preprocess.Preprocessor does)")
        data = data.reshape(expected)
    interpreter.set_tensor(_first_input(interpreter)["index"], data)


def output_tensor(interpreter: TfliteInterpreter, i: int) -> np.ndarray:
    """Returns a copy of output tensor `i` (raw values, quantized for quantized models)."""
    return interpreter.get_tensor(interpreter.get_output_details()[i]["index"])


def tensor_spec(detail: TensorDetail) -> TensorSpec:
    """An interpreter tensor detail dict as a `TensorSpec` (ValueError for dtypes the contract lacks)."""
    scale, zero_point = detail["quantization"]
    return TensorSpec.model_validate({  # validated: the dtype may be one the contract lacks
        "name": detail["name"], "shape": tuple(int(d) for d in detail["shape"]),
        "dtype": np.dtype(detail["dtype"]).name,
        "quantization": Quantization(scale=float(scale), zero_point=int(zero_point))})


def input_spec(interpreter: TfliteInterpreter) -> TensorSpec:
    """The first input as a `TensorSpec`."""
    return tensor_spec(interpreter.get_input_details()[0])


def output_spec(interpreter: TfliteInterpreter, i: int) -> TensorSpec:
    """Output `i` as a `TensorSpec`."""
    return tensor_spec(interpreter.get_output_details()[i])
