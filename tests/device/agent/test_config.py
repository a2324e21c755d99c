"""Agent configuration: strict YAML, env overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.device.agent.config import CameraSourceConfig, ImagesSourceConfig, load_config
from edgefleet.device.agent.stats import LoopStats, percentile
from edgefleet.kernel.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_a_minimal_file_gets_embedded_defaults(tmp_path):
    config = load_config(write(tmp_path, f"device_id: cam-1\nmodel: birds\nroot: {tmp_path}\n"))
    assert config.telemetry.pubsub_project is None  # local sink by default: no cloud needed
    assert config.status_path == tmp_path / "status.json"
    assert config.public_key_path == tmp_path / "keys" / "release.pub"


def test_a_typo_in_a_nested_key_is_an_error_naming_the_key(tmp_path):
    path = write(tmp_path, "device_id: cam-1\nmodel: birds\ntelemetry:\n  mdoe: every\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "telemetry.mdoe" in caught.value.message
    assert str(path) in caught.value.message


def test_a_missing_required_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="missing key 'device_id'"):
        load_config(write(tmp_path, "model: birds\n"))


def test_environment_overrides_the_file_with_nested_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_TELEMETRY__MODE", "every")
    monkeypatch.setenv("EDGEFLEET_DEVICE_ID", "cam-9")
    config = load_config(write(tmp_path, "device_id: cam-1\nmodel: birds\ntelemetry:\n  mode: summary\n"))
    assert (config.device_id, config.telemetry.mode) == ("cam-9", "every")


def test_a_section_variable_that_is_not_json_names_the_way_to_set_one_key(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_REGISTRY", "/srv/registry")
    with pytest.raises(ConfigError, match="registry") as caught:
        load_config(write(tmp_path, "device_id: cam-1\nmodel: birds\n"))
    assert "EDGEFLEET_REGISTRY__URI" in caught.value.fix
    monkeypatch.setenv("EDGEFLEET_REGISTRY", '{"uri": "/srv/registry"}')  # JSON for a whole section works
    assert str(load_config(write(tmp_path, "device_id: cam-1\nmodel: birds\n")).registry.uri) == "/srv/registry"


def test_invalid_yaml_and_a_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "device_id: [unclosed\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_a_bad_device_id_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="device_id"):
        load_config(write(tmp_path, "device_id: 'Cam 1!'\nmodel: birds\n"))


def test_percentile_is_nearest_rank():
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile([], 0.95) == 0.0
    assert percentile([7.0], 0.5) == 7.0


def test_loop_stats_window_gives_fps_and_percentiles():
    stats = LoopStats(window=10)
    for i in range(20):  # 20 frames, 0.1 s apart; the window keeps the last 10
        stats.record(finished_at=i * 0.1, latency_ms=float(i))
    snapshot = stats.snapshot()
    assert snapshot.frames == 20
    assert snapshot.fps == pytest.approx(10.0)
    assert snapshot.latency_ms_p50 == 14.0 and snapshot.latency_ms_max == 19.0


def test_source_configs_written_before_the_union_still_read(tmp_path):
    frames = tmp_path / "frames"
    config = load_config(write(tmp_path, f"device_id: cam-1\nmodel: birds\nsource: {{path: {frames}, max_fps: 2}}\n"))
    assert config.source == ImagesSourceConfig(path=frames, max_fps=2)
    config = load_config(write(tmp_path, "device_id: cam-1\nmodel: birds\nsource: {kind: camera, camera_index: 1}\n"))
    assert config.source == CameraSourceConfig(camera_index=1)
    assert load_config(write(tmp_path, "device_id: cam-1\nmodel: birds\n")).source == ImagesSourceConfig()


@pytest.mark.parametrize(("source", "named"), [
    ("{kind: camera, path: /srv/frames}", "source.path is for source.kind images or video, not camera: remove it"),
    ("{kind: video, path: a.mp4, camera_index: 1}", "source.camera_index is for source.kind camera, not video"),
    ("{kind: video, cache_frames: 8, path: a.mp4}", "source.cache_frames is for source.kind images"),
    ("{kind: video}", "missing key 'source.video.path'"),
    ("{kind: webcam}", "'images', 'video', 'camera'"),
])
def test_a_source_key_of_another_kind_fails_at_load_naming_the_key_and_the_fix(tmp_path, source, named):
    path = write(tmp_path, f"device_id: cam-1\nmodel: birds\nsource: {source}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert named in caught.value.message and str(path) in caught.value.message


def test_the_environment_may_switch_the_source_kind(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_SOURCE__KIND", "camera")
    config = load_config(write(tmp_path, "device_id: cam-1\nmodel: birds\nsource: {kind: images, max_fps: 3}\n"))
    assert config.source == CameraSourceConfig(max_fps=3)
