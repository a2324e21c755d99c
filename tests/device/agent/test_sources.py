"""Frame sources: images cycled, unreadable ones skipped, clear errors for what cannot be opened."""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
from PIL import Image

from edgefleet.device.agent.config import ImagesSourceConfig, VideoSourceConfig
from edgefleet.device.agent.sources import open_source
from edgefleet.kernel.errors import ConfigError


def write_image(path, colour, size=(40, 30)):
    Image.new("RGB", size, colour).save(path)
    return path


def test_a_directory_is_cycled_in_name_order_and_unreadable_images_are_skipped(tmp_path):
    write_image(tmp_path / "a.png", (255, 0, 0))
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    write_image(tmp_path / "c.png", (0, 0, 255))
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    source = open_source(ImagesSourceConfig(path=tmp_path))
    frames = list(itertools.islice(source.frames(), 5))
    reds = [int(frame[0, 0, 0]) for frame in frames]
    assert reds == [255, 0, 255, 0, 255]  # a, c, a, c, a: b.jpg skipped, the rest cycled
    assert source.skipped == [str(tmp_path / "b.jpg")]
    assert frames[0].shape == (30, 40, 3) and frames[0].dtype == np.uint8


def test_frames_are_resized_when_a_frame_size_is_configured(tmp_path):
    write_image(tmp_path / "a.png", (10, 20, 30), size=(100, 50))
    source = open_source(ImagesSourceConfig(path=tmp_path / "a.png", frame_width=64, frame_height=48))
    assert next(iter(source.frames())).shape == (48, 64, 3)


def test_a_source_without_a_readable_image_names_the_path(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ConfigError, match="no readable image") as caught:
        open_source(ImagesSourceConfig(path=tmp_path))
    assert "broken.png" in caught.value.fix
    with pytest.raises(ConfigError, match="does not exist"):
        open_source(ImagesSourceConfig(path=tmp_path / "missing"))
    with pytest.raises(ConfigError, match="source.path is required"):
        open_source(ImagesSourceConfig())


@pytest.mark.skipif(importlib.util.find_spec("cv2") is not None, reason="OpenCV is installed here")
def test_video_without_opencv_says_which_extra_to_install(tmp_path):
    with pytest.raises(ConfigError, match="OpenCV") as caught:
        open_source(VideoSourceConfig(path=tmp_path / "clip.mp4"))
    assert "edgefleet[video]" in caught.value.fix
