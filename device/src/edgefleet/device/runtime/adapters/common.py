"""Input and output tensor helpers (pycoral's `pycoral.adapters.common`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgefleet.device.runtime.preprocess import pixel_lut
from edgefleet.kernel.contracts.manifest import Quantization, TensorSpec
from edgefleet.kernel.errors import ModelError


def input_details(interpreter: Any, key: str) -> Any:
    """Returns `key` ('shape', 'dtype', 'quantization', 'index', ...) of the first input tensor."""
    return interpreter.get_input_details()[0][key]


def input_size(interpreter: Any) -> tuple[int, int]:
    """Returns the input image size as (width, height)."""
    _, height, width, _ = input_details(interpreter, "shape")
    return int(width), int(height)


def input_tensor(interpreter: Any) -> np.ndarray:
    """Returns a writable view of the input image tensor, shape (height, width, channels).

    Drop the view before `allocate_tensors()`: LiteRT refuses to reallocate while views exist.
    """
    return interpreter.tensor(input_details(interpreter, "index"))()[0]


def set_input(interpreter: Any, data: np.ndarray) -> None:
    """Copies an image into the input tensor, converted to the input's dtype and quantization.

    Args:
        interpreter: An allocated interpreter.
        data: Either a tensor already in the input dtype (copied as is), or an HxWx3 uint8 RGB image of the
            input size, converted with the runtime's pixel normalization (`preprocess.pixel_lut`).
    """
    dtype = np.dtype(input_details(interpreter, "dtype"))
    data = np.asarray(data)
    if data.dtype != dtype:
        if data.dtype != np.uint8:
            raise ModelError(
                f"input of dtype {data.dtype} cannot feed a {dtype} model input",
                fix="pass a uint8 RGB image or a tensor of the model's input dtype")
        data = pixel_lut(input_spec(interpreter))[data]
    expected = tuple(int(d) for d in input_details(interpreter, "shape"))
    if data.shape != expected:
        if data.size != int(np.prod(expected)):
            raise ModelError(
                f"input of shape {data.shape} does not fit the model input {expected}",
                fix="resize the image to the model's input size (preprocess.Preprocessor does)")
        data = data.reshape(expected)
    interpreter.set_tensor(input_details(interpreter, "index"), data)


def output_tensor(interpreter: Any, i: int) -> np.ndarray:
    """Returns a copy of output tensor `i` (raw values, quantized for quantized models)."""
    return interpreter.get_tensor(interpreter.get_output_details()[i]["index"])


def tensor_spec(detail: dict[str, Any]) -> TensorSpec:
    """An interpreter tensor detail dict as a `TensorSpec` (ValueError for dtypes the contract lacks)."""
    scale, zero_point = detail["quantization"]
    return TensorSpec(name=detail["name"], shape=tuple(int(d) for d in detail["shape"]),
                      dtype=np.dtype(detail["dtype"]).name,
                      quantization=Quantization(scale=float(scale), zero_point=int(zero_point)))


def input_spec(interpreter: Any) -> TensorSpec:
    """The first input as a `TensorSpec`."""
    return tensor_spec(interpreter.get_input_details()[0])


def output_spec(interpreter: Any, i: int) -> TensorSpec:
    """Output `i` as a `TensorSpec`."""
    return tensor_spec(interpreter.get_output_details()[i])
