"""Tensor quantization maths (TFLite's affine scheme): real = scale * (q - zero_point). Pure numpy, no I/O."""

from __future__ import annotations

import numpy as np

from edgefleet.kernel.contracts.manifest import Quantization, TensorSpec


def dequantize(values: np.ndarray, quantization: Quantization | tuple[float, int]) -> np.ndarray:
    """real = scale * (q - zero_point); float values and scale 0 (not quantized) pass through as float.

    Args:
        values: Raw tensor values.
        quantization: A `Quantization`, or the interpreter's `(scale, zero_point)` pair.
    """
    scale, zero_point = ((quantization.scale, quantization.zero_point)
                         if isinstance(quantization, Quantization) else quantization)
    if not np.issubdtype(values.dtype, np.integer) or scale == 0:
        return values.astype(np.float32, copy=False)
    return (scale * (values.astype(np.int32) - zero_point)).astype(np.float32)


def quantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """real -> tensor values of `spec`: q = round(real / scale) + zero_point, clipped to the dtype's range."""
    dtype = np.dtype(spec.dtype)
    if not np.issubdtype(dtype, np.integer):
        return np.asarray(values, dtype=dtype)
    scale = spec.quantization.scale or 1.0
    info = np.iinfo(dtype)
    quantized = np.rint(np.asarray(values, dtype=np.float64) / scale) + spec.quantization.zero_point
    return np.clip(quantized, info.min, info.max).astype(dtype)
