"""Finding 13: tracebacks instead of clear errors for a non-UTF-8 YAML file, a directory where a file is
expected, and a decompression-bomb image. Each now gets an error naming the thing and the fix; a source
image that is a bomb is skipped like any unreadable image."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from edgefleet.device.agent.config import load_config
from edgefleet.device.agent.sources import ImageSource
from edgefleet.device.runtime.preprocess import load_image
from edgefleet.kernel.errors import ConfigError, ImageError
from edgefleet.monitor.config import load_monitor_config


def test_a_yaml_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"device_id: cam-\xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_a_directory_given_as_a_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_monitor_config(tmp_path)


def test_a_decompression_bomb_is_refused_before_decoding_and_skipped_as_a_frame(tmp_path: Path) -> None:
    bomb = tmp_path / "frames" / "bomb.png"
    bomb.parent.mkdir()
    Image.new("1", (10_000, 10_000)).save(bomb)  # 100 Mpixels in a few kilobytes
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(bomb)
    Image.new("RGB", (8, 8), "red").save(tmp_path / "frames" / "ok.png")
    source = ImageSource(tmp_path / "frames", cache_frames=10)
    assert source.skipped == [str(bomb)] and len(source._frames) == 1
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path / "frames")
