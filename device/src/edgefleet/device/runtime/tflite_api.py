"""The typed view of the TensorFlow Lite Python API edgefleet uses (`tflite_runtime` and LiteRT ship no types).

`edgefleet.device.runtime.interpreter` imports the runtime and makes interpreters of these types; the adapters
and the engine take them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypedDict

import numpy as np
import numpy.typing as npt


class TensorDetail(TypedDict):
    """One tensor of `get_input_details()` / `get_output_details()`: the keys edgefleet reads (there are more)."""

    name: str
    index: int
    shape: npt.NDArray[np.int32]
    dtype: type[np.generic]
    quantization: tuple[float, int]  # (scale, zero_point); (0.0, 0) when not quantized


class TfliteInterpreter(Protocol):
    """What edgefleet uses of a `tflite_runtime` / LiteRT `Interpreter` (neither package ships types)."""

    def allocate_tensors(self) -> None: ...
    def get_input_details(self) -> list[TensorDetail]: ...
    def get_output_details(self) -> list[TensorDetail]: ...
    def set_tensor(self, tensor_index: int, value: npt.ArrayLike) -> None: ...
    def invoke(self) -> None: ...
    def get_tensor(self, tensor_index: int) -> np.ndarray: ...
    def tensor(self, tensor_index: int) -> Callable[[], np.ndarray]: ...
