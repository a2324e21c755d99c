"""Frames to tensors: conversion tables, resizing, letterboxing, image loading."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.device.runtime.config import RuntimeConfig
from edgefleet.device.runtime.preprocess import (
    Preprocessor,
    image_scale,
    is_identity,
    load_image,
    pixel_lut,
    resize,
    supersample_axes,
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


# --- supersampling camera frames (issue 24) ---------------------------------------------------------------
def test_supersampling_averages_four_samples_inside_each_output_pixel():
    frame = np.random.default_rng(7).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = resize(frame, (2, 2))
    rows, column_bytes = supersample_axes((8, 8), (2, 2))
    plan = (rows[:, None] * 8 * 3 + column_bytes[None, :]).reshape(4, 4, 3)  # the flat byte index of each sample
    pixels = plan[:, :, 0] // 3
    assert (plan == pixels[:, :, None] * 3 + np.arange(3)).all()  # the three bytes of each sampled pixel
    assert [int(index) // 8 for index in pixels[:, 0]] == [1, 3, 5, 7]  # the cells' centres: rows 1, 3, 5, 7
    assert [int(index) % 8 for index in pixels[0]] == [1, 3, 5, 7]  # and columns
    sums = frame.reshape(-1)[plan].reshape(2, 2, 2, 2, 3).astype(int).sum(axis=(1, 3))
    np.testing.assert_array_equal(out, (sums + 2) // 4)  # the four samples' mean, rounded
    gradient = np.tile(np.arange(0, 256, 4, dtype=np.uint8)[None, :, None], (64, 1, 3))  # 64x64, left to right
    assert (np.diff(resize(gradient, (16, 16))[0, :, 0].astype(int)) > 0).all()  # order kept, nothing folded


def test_frames_under_twice_the_input_or_an_exact_config_are_filtered():
    gradient = np.tile(np.arange(0, 240, 8, dtype=np.uint8)[None, :, None], (30, 1, 3))  # 30x30
    exact = RuntimeConfig(reducing_gap=None)
    np.testing.assert_array_equal(resize(gradient, (16, 16)),  # 30 < 2 x 16: the PIL filter
                                  resize(gradient, (16, 16), RuntimeConfig(supersample=False)))
    big = np.tile(gradient, (4, 4, 1))  # 120x120
    np.testing.assert_array_equal(resize(big, (16, 16), RuntimeConfig(supersample=False)),
                                  resize(big, (16, 16), RuntimeConfig(supersample=False, reducing_gap=1.0)))
    assert not np.array_equal(resize(big, (16, 16), exact), resize(big, (16, 16)))  # exact: not sampled


@pytest.mark.parametrize("frame_size", [(1280, 960), (640, 480)])  # > 4x 224; 2.1-2.9x 224
@pytest.mark.parametrize("image", ["cat.bmp", "parrot.jpg", "grace_hopper.bmp", "bird.bmp"])
def test_supersampled_camera_frames_keep_the_answer(coral_data, image, frame_size):
    from PIL import Image

    from edgefleet.device.runtime.engine import Engine

    frame = np.asarray(Image.open(coral_data / image).convert("RGB").resize(frame_size))
    answers = []
    for config in (RuntimeConfig(reducing_gap=None), RuntimeConfig()):  # the exact filter, the default
        with Engine.open(coral_data / "mobilenet_v2_1.0_224_quant.tflite",
                         labels_path=coral_data / "imagenet_labels.txt", config=config) as engine:
            answers.append(engine.infer(engine.prepare(frame)).results[0])
    assert answers[0].id == answers[1].id
    assert answers[1].score == pytest.approx(answers[0].score, abs=0.15)
