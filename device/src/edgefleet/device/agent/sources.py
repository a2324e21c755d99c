"""Frame sources: an image file or a directory of images (cycled), a video file or a camera (OpenCV).

Each source is an iterator of RGB uint8 frames (H x W x 3). Video and camera need the optional OpenCV
extra (`pip install 'edgefleet[video]'`).
"""

from __future__ import annotations

import importlib
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, cast

import numpy as np
from PIL import Image

from edgefleet.device.agent.config import CameraSourceConfig, SourceConfig, VideoSourceConfig
from edgefleet.device.runtime.preprocess import load_image
from edgefleet.kernel.errors import ConfigError, ImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm"})


class FrameSource(Protocol):
    """Yields frames until exhausted (video end) or forever (cycled images, camera)."""

    def frames(self) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...


def _fit(frame: np.ndarray, width: int | None, height: int | None) -> np.ndarray:
    if width is None or height is None or frame.shape[:2] == (height, width):
        return frame
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))


class ImageSource:
    """Cycles over one image or the images of a directory (sorted), decoded once and kept in memory.

    Unreadable images are skipped with a warning; a source with no readable image is a ConfigError.
    """

    def __init__(self, path: Path, *, cache_frames: int, width: int | None = None, height: int | None = None):
        if not path.exists():
            raise ConfigError(f"frame source {path} does not exist", "set source.path to an image or a directory")
        files = [path] if path.is_file() else sorted(
            p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self._frames: list[np.ndarray] = []
        self.skipped: list[str] = []
        for file in files[:cache_frames]:
            try:
                self._frames.append(_fit(load_image(file), width, height))
            except ImageError as error:
                log.warning("skipping frame source image: %s", error.message)
                self.skipped.append(str(file))
        if not self._frames:
            raise ConfigError(f"frame source {path} has no readable image",
                              f"put .jpg/.png/.bmp images in it (skipped: {', '.join(self.skipped) or 'none'})")

    def frames(self) -> Iterator[np.ndarray]:
        return itertools.cycle(self._frames)

    def close(self) -> None:
        self._frames = []


class _VideoCapture(Protocol):
    """What this module uses of OpenCV's `cv2.VideoCapture`."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name

    def read(self) -> tuple[bool, np.ndarray]: ...

    def release(self) -> None: ...


class _OpenCv(Protocol):
    """What this module uses of the `cv2` module (an optional extra, without stubs where the checker runs)."""

    COLOR_BGR2RGB: int

    def VideoCapture(self, target: str | int, /) -> _VideoCapture: ...  # noqa: N802 - OpenCV's name

    def cvtColor(self, src: np.ndarray, code: int, /) -> np.ndarray: ...  # noqa: N802 - OpenCV's name


def _import_opencv() -> _OpenCv:
    try:
        # The optional `video` extra, imported by name: where the checker runs it is not installed, so the
        # module's type is only `ModuleType`; this module uses it through `_OpenCv` (a cast at the boundary).
        opencv = cast(_OpenCv, importlib.import_module("cv2"))
    except ImportError as error:
        raise ConfigError("video and camera sources need OpenCV, which is not installed",
                          "pip install 'edgefleet[video]' (opencv-python-headless), or use source.kind: images"
                          ) from error
    return opencv


class OpenCvSource:
    """A video file (played once) or a camera (endless) through OpenCV, converted to RGB."""

    def __init__(self, target: str | int, *, width: int | None = None, height: int | None = None):
        self._cv2 = _import_opencv()
        self._capture = self._cv2.VideoCapture(target)
        if not self._capture.isOpened():
            raise ConfigError(f"cannot open video source {target!r}",
                              "check the file path or camera index (and the user's access to /dev/video*)")
        self._width, self._height = width, height

    def frames(self) -> Iterator[np.ndarray]:
        while True:
            ok, bgr = self._capture.read()
            if not ok:
                return
            yield _fit(self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB), self._width, self._height)

    def close(self) -> None:
        self._capture.release()


def open_source(config: SourceConfig) -> FrameSource:
    """Opens the frame source `config` describes (its type, by the key `kind`, picks the backend)."""
    if isinstance(config, CameraSourceConfig):
        return OpenCvSource(config.camera_index, width=config.frame_width, height=config.frame_height)
    if isinstance(config, VideoSourceConfig):
        return OpenCvSource(str(config.path), width=config.frame_width, height=config.frame_height)
    if config.path is None:
        raise ConfigError(f"source.path is required for source.kind '{config.kind}'",
                          "set source.path to an image or a directory of images")
    return ImageSource(config.path, cache_frames=config.cache_frames, width=config.frame_width,
                       height=config.frame_height)
