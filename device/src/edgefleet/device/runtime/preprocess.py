"""Frames to input tensors, fast enough to run per frame beside the interpreter.

Pixels map to the model's real input domain with pycoral's normalization, real = (p - mean) / std
(defaults 128/128: [-1, 1], what Coral's uint8 models with scale 1/128 and zero point 128 expect), then to
the input dtype with its quantization (q = real / scale + zero_point). Since a pixel has 256 values, the
whole conversion is one 256-entry lookup table per model, applied with `np.take`; uint8 models whose
quantization matches the normalization skip it (the pixels are the tensor).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgefleet.device.runtime.config import DEFAULT_RUNTIME_CONFIG, RuntimeConfig
from edgefleet.device.runtime.quantization import quantize
from edgefleet.kernel.contracts.manifest import TensorSpec
from edgefleet.kernel.errors import ImageError, ModelError

PIXEL_LEVELS = 256
RGB_CHANNELS = 3
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST, "box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING, "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@lru_cache(maxsize=32)
def pixel_lut(spec: TensorSpec, mean: float = DEFAULT_RUNTIME_CONFIG.input_mean,
              std: float = DEFAULT_RUNTIME_CONFIG.input_std) -> np.ndarray:
    """The input tensor value of each pixel value 0..255, in the input's dtype.

    Args:
        spec: The model input.
        mean: Pixel value that means real 0.0.
        std: Pixels per real unit.
    """
    pixels = np.arange(PIXEL_LEVELS, dtype=np.float64)
    dtype = np.dtype(spec.dtype)
    if np.issubdtype(dtype, np.integer) and spec.quantization.scale == 0:
        # An unquantized integer input takes raw pixels, shifted into the dtype's range (int8: p - 128).
        info = np.iinfo(dtype)
        lut = np.clip(pixels + info.min, info.min, info.max).astype(dtype)
    else:
        lut = quantize((pixels - mean) / std, spec)
    lut.setflags(write=False)
    return lut


def is_identity(lut: np.ndarray) -> bool:
    """True when the table maps every pixel to itself as uint8 (no conversion needed)."""
    return lut.dtype == np.uint8 and bool(np.array_equal(lut, np.arange(PIXEL_LEVELS)))


def image_scale(image_size: tuple[int, int], input_size: tuple[int, int],
                keep_aspect: bool) -> tuple[float, float]:
    """pycoral's image scale: resized size / original size, per axis.

    Args:
        image_size: Original (width, height).
        input_size: Model input (width, height).
        keep_aspect: Letterboxed (one scale, padded bottom/right) rather than stretched.
    """
    (width, height), (in_width, in_height) = image_size, input_size
    if keep_aspect:
        scale = min(in_width / width, in_height / height)
        return scale, scale
    return in_width / width, in_height / height


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """Checks a frame is HxWx3 uint8 (grey HxW and RGBA are converted).

    Raises:
        ImageError: Not an image array.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or 0 in frame.shape:
        raise ImageError(f"frame of shape {frame.shape} and dtype {frame.dtype} is not an image",
                         fix="pass an HxWx3 uint8 RGB array (load_image returns one)")
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], RGB_CHANNELS, axis=2)
    if frame.shape[2] != RGB_CHANNELS:
        return np.asarray(Image.fromarray(frame).convert("RGB"))
    return frame


SUPERSAMPLE = 2
"""Samples per output pixel along each axis in `supersample` (2: four samples, averaged)."""
SUPERSAMPLE_MIN_SCALE = 2
"""Frames are supersampled when at least this many times the output on both axes (so the 2x2 samples of an
output pixel are distinct pixels); below it, the configured PIL filter. CPU per 640x480 frame against PIL's
filter with its integer pre-reduction: about 0.8x to 128x128 (a 3.75-5x reduction) and 0.45x to 224x224
(2.1-2.9x; issue 24, `python -m bench.agent_bench --only hotpath`)."""


@lru_cache(maxsize=4)
def supersample_axes(frame_size: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Where `supersample` samples: a SUPERSAMPLE x SUPERSAMPLE grid of points in every output pixel's
    footprint, at the centres of its cells. Returns the frame rows sampled, and the byte offsets inside a
    row (three channels per sampled column); a few kB per frame size and input size.

    Args:
        frame_size: Frame (width, height).
        size: Output (width, height).
    """
    (width, height), (out_width, out_height) = frame_size, size
    rows = ((np.arange(out_height * SUPERSAMPLE) + 0.5) * (height / (out_height * SUPERSAMPLE))).astype(np.intp)
    columns = ((np.arange(out_width * SUPERSAMPLE) + 0.5) * (width / (out_width * SUPERSAMPLE))).astype(np.intp)
    column_bytes = (columns[:, None] * RGB_CHANNELS + np.arange(RGB_CHANNELS)).ravel()
    for axis in (rows, column_bytes):
        axis.setflags(write=False)
    return rows, column_bytes


def supersample(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Downscales an HxWx3 uint8 frame at least SUPERSAMPLE_MIN_SCALE times `size` (width, height) on both
    axes: the rows of `supersample_axes` taken whole (row copies), then their sampled bytes (one gather on a
    small index, numpy, the GIL released), averaged 2x2 by PIL's `reduce`.

    A fraction of a filter's cost on camera frames: the frame is read at 4 points per output pixel instead of
    converted whole to a PIL image and filtered.
    """
    height, width = frame.shape[:2]
    rows, column_bytes = supersample_axes((width, height), size)
    picked = np.take(np.take(frame.reshape(height, width * RGB_CHANNELS), rows, axis=0), column_bytes, axis=1)
    grid = (size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE)
    return np.asarray(Image.frombuffer("RGB", grid, picked, "raw", "RGB", 0, 1).reduce(SUPERSAMPLE))


def resize(frame: np.ndarray, size: tuple[int, int],
           config: RuntimeConfig = DEFAULT_RUNTIME_CONFIG) -> np.ndarray:
    """Resizes an HxWx3 uint8 frame to `size` (width, height): supersampled when it is at least
    SUPERSAMPLE_MIN_SCALE times as large on both axes (see `RuntimeConfig.supersample`), else with the
    configured cheap filter."""
    if (frame.shape[1], frame.shape[0]) == size:
        return frame
    if (config.supersample and config.reducing_gap is not None
            and frame.shape[1] >= SUPERSAMPLE_MIN_SCALE * size[0]
            and frame.shape[0] >= SUPERSAMPLE_MIN_SCALE * size[1]):
        return supersample(frame, size)
    image = Image.fromarray(frame)
    return np.asarray(image.resize(size, _RESAMPLE[config.resample], reducing_gap=config.reducing_gap))


@dataclass(frozen=True)
class Preprocessor:
    """Turns frames into input tensors for one model input; thread-safe (holds no mutable state).

    Attributes:
        spec: The model input (NHWC, 3 channels).
        keep_aspect: Letterbox (detection) instead of stretching (classification).
        config: Filter and normalization.
    """

    spec: TensorSpec
    keep_aspect: bool = False
    config: RuntimeConfig = DEFAULT_RUNTIME_CONFIG

    def __post_init__(self) -> None:
        shape = self.spec.shape
        if len(shape) != 4 or shape[0] != 1 or shape[3] != RGB_CHANNELS:
            raise ModelError(f"model input {self.spec.name!r} has shape {shape}, not an image [1, H, W, 3]",
                             fix="use an image model with one NHWC RGB input")

    @property
    def input_size(self) -> tuple[int, int]:
        """Model input (width, height)."""
        return self.spec.shape[2], self.spec.shape[1]

    @cached_property
    def lut(self) -> np.ndarray:
        """Pixel value -> input value table."""
        # A frozen pydantic model is hashable (pydantic adds __hash__); pyright reads model_config as not frozen.
        return pixel_lut(self.spec, self.config.input_mean, self.config.input_std)  # pyright: ignore[reportArgumentType]

    @cached_property
    def passthrough(self) -> bool:
        """Pixels are the tensor (uint8 input whose quantization matches the normalization)."""
        return is_identity(self.lut)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Returns a new input tensor (shape and dtype of the spec) for an RGB frame of any size."""
        frame = as_rgb(frame)
        lut = self.lut
        height, width = frame.shape[:2]
        if self.keep_aspect:
            scale, _ = image_scale((width, height), self.input_size, keep_aspect=True)
            resized = resize(frame, (max(1, int(width * scale)), max(1, int(height * scale))), self.config)
            # Padding is black in the model's own units.
            tensor = np.full(self.spec.shape, lut[0], dtype=lut.dtype)
            tensor[0, : resized.shape[0], : resized.shape[1]] = resized if self.passthrough else lut[resized]
            return tensor
        resized = resize(frame, self.input_size, self.config)
        tensor = np.array(resized, dtype=np.uint8) if self.passthrough else np.take(lut, resized)
        return tensor.reshape(self.spec.shape)


MAX_IMAGE_PIXELS = 64_000_000
"""Larger images are refused before decoding (8000x8000; cameras give far less)."""


def load_image(path: str | Path) -> np.ndarray:
    """Reads an image file as an HxWx3 uint8 RGB array.

    Raises:
        ImageError: Missing, unreadable, corrupt or not an image, naming the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:  # checked before decoding a single pixel
                raise ImageError(f"image {path} is {image.width}x{image.height} pixels, more than the "
                                 f"{MAX_IMAGE_PIXELS} accepted (a decompression bomb?)",
                                 fix="use frames of camera size; this file would exhaust the device's memory")
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError as error:
        raise ImageError(f"image {path} does not exist", fix="check the path") from error
    except IsADirectoryError as error:
        raise ImageError(f"image {path} is a directory, not an image file", fix="pass an image file") from error
    except Image.DecompressionBombError as error:
        raise ImageError(f"image {path} is too large to decode safely: {error}",
                         fix="use frames of camera size") from error
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ImageError(f"image {path} cannot be read: {error}",
                         fix="pass a readable JPEG/PNG/BMP file (re-copy it if it is truncated)") from error
