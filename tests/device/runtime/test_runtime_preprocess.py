"""Frames to tensors: conversion tables, resizing, letterboxing, image loading."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.device.runtime.preprocess import (
    Preprocessor,
    image_scale,
    is_identity,
    load_image,
    pixel_lut,
)
from edgefleet.device.runtime.quantization import dequantize
from edgefleet.kernel.contracts.manifest import Quantization, TensorSpec
from edgefleet.kernel.errors import ImageError, ModelError

PIXELS = np.arange(256)
REAL = (PIXELS - 128.0) / 128.0  # the default normalization


def _spec(dtype: str, scale: float = 0.0, zero_point: int = 0, size: int = 8) -> TensorSpec:
    return TensorSpec(shape=(1, size, size, 3), dtype=dtype,
                      quantization=Quantization(scale=scale, zero_point=zero_point))


def test_coral_uint8_input_takes_pixels_as_they_are():
    lut = pixel_lut(_spec("uint8", 1 / 128, 128))
    assert is_identity(lut)
    np.testing.assert_array_equal(lut, PIXELS)


@pytest.mark.parametrize("spec", [_spec("int8", 2 / 255, -1), _spec("int8", 1 / 128, 0),
                                  _spec("uint8", 1 / 255, 127)])
def test_quantized_lut_dequantizes_back_to_the_normalized_pixel(spec):
    lut = pixel_lut(spec)
    assert lut.dtype == np.dtype(spec.dtype)
    real = dequantize(lut, spec.quantization)
    in_range = (REAL >= real.min()) & (REAL <= real.max())  # values outside the range are clipped
    assert in_range.sum() >= 128
    np.testing.assert_allclose(real[in_range], REAL[in_range], atol=spec.quantization.scale / 2 + 1e-6)


def test_float_lut_is_the_normalized_pixel():
    lut = pixel_lut(_spec("float32"))
    assert lut.dtype == np.float32
    np.testing.assert_allclose(lut, REAL, atol=1e-7)


def test_stretch_resize_fills_the_input():
    prepare = Preprocessor(_spec("uint8", 1 / 128, 128, size=16))
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, :320] = 255  # left half white
    tensor = prepare(frame)
    assert tensor.shape == (1, 16, 16, 3) and tensor.dtype == np.uint8
    assert tensor[0, :, :7].min() == 255 and tensor[0, :, 9:].max() == 0
    assert not np.shares_memory(tensor, prepare(frame))


def test_letterbox_keeps_the_aspect_and_pads_black_in_model_units():
    spec = _spec("int8", 1 / 128, 0, size=16)
    prepare = Preprocessor(spec, keep_aspect=True)
    tensor = prepare(np.full((240, 640, 3), 255, np.uint8))  # 640x240 -> 16x6
    lut = pixel_lut(spec)
    assert (tensor[0, :6] == lut[255]).all()
    assert (tensor[0, 6:] == lut[0]).all()
    assert image_scale((640, 240), (16, 16), keep_aspect=True) == (0.025, 0.025)
    assert image_scale((640, 240), (16, 16), keep_aspect=False) == (0.025, 16 / 240)


def test_grey_and_rgba_frames_are_converted():
    prepare = Preprocessor(_spec("uint8", 1 / 128, 128, size=4))
    grey = prepare(np.full((8, 8), 9, np.uint8))
    rgba = prepare(np.full((8, 8, 4), 9, np.uint8))
    assert (grey == 9).all() and (rgba == 9).all()


@pytest.mark.parametrize("frame", [np.zeros((8, 8, 3), np.float32), np.zeros((8,), np.uint8),
                                   np.zeros((0, 8, 3), np.uint8)])
def test_non_images_are_refused(frame):
    with pytest.raises(ImageError, match="not an image"):
        Preprocessor(_spec("uint8", size=4))(frame)


def test_non_image_model_input_is_refused():
    with pytest.raises(ModelError, match="not an image"):
        Preprocessor(TensorSpec(shape=(1, 3), dtype="uint8"))


def test_load_image_returns_rgb(coral_data):
    image = load_image(coral_data / "cat.bmp")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_unreadable_image_names_the_file(tmp_path, coral_data):
    corrupt = tmp_path / "photo.jpg"
    corrupt.write_bytes(b"definitely not a jpeg")
    truncated = tmp_path / "half.jpg"
    data = (coral_data / "parrot.jpg").read_bytes()
    truncated.write_bytes(data[: len(data) // 3])

    for path in (corrupt, truncated):
        with pytest.raises(ImageError) as caught:
            load_image(path)
        assert str(path) in caught.value.message
        assert caught.value.__cause__ is not None
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png")
