"""`edgefleet-agent inspect | classify | detect` through typer's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgefleet.device.cli import app

MOBILENET_V2 = "mobilenet_v2_1.0_224_quant.tflite"


def _cli_runner() -> CliRunner:
    """stdout and stderr kept apart: always with Click 8.2+, on request with Click 8.1 (Python 3.9's)."""
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # Click 8.2 removed the parameter
        return CliRunner()


@pytest.fixture
def runner() -> CliRunner:
    return _cli_runner()


def test_inspect_json(runner, coral_data):
    result = runner.invoke(app, ["inspect", str(coral_data / MOBILENET_V2), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["inputs"][0]["shape"] == [1, 224, 224, 3]
    assert info["inputs"][0]["quantization"] == {"scale": 0.0078125, "zero_point": 128}
    assert info["outputs"][0]["shape"] == [1, 1001]
    assert info["needs_edgetpu"] is False


def test_inspect_edgetpu_model_table(runner, coral_data):
    result = runner.invoke(app, ["inspect", str(coral_data / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")])
    assert result.exit_code == 0, result.output
    assert "needs Edge TPU: yes" in result.stdout and "edgetpu-custom-op" in result.stdout


def test_classify_json_one_object_per_image(runner, coral_data):
    result = runner.invoke(app, ["classify", str(coral_data / MOBILENET_V2), str(coral_data / "parrot.jpg"),
                                 str(coral_data / "grace_hopper.bmp"), "--labels",
                                 str(coral_data / "imagenet_labels.txt"), "--top-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["image"] for row in rows] == [str(coral_data / "parrot.jpg"),
                                              str(coral_data / "grace_hopper.bmp")]
    assert [row["results"][0]["label"] for row in rows] == ["macaw", "military uniform"]
    assert all(len(row["results"]) == 2 and row["backend"] == "cpu" and row["latency_ms"] > 0 for row in rows)
    assert set(rows[0]["results"][0]) == {"id", "label", "score"}


def test_classify_table(runner, coral_data):
    result = runner.invoke(app, ["classify", str(coral_data / MOBILENET_V2), str(coral_data / "cat.bmp"),
                                 "--labels", str(coral_data / "imagenet_labels.txt"), "--top-k", "1"])
    assert result.exit_code == 0, result.output
    assert "Egyptian cat" in result.stdout and "286" in result.stdout


def test_detect_json_has_boxes(runner, tiny_models, tmp_path):
    image = np.zeros((32, 64, 3), np.uint8)
    image[:, :32] = (240, 10, 10)
    path = tmp_path / "half_red.png"
    Image.fromarray(image).save(path)

    result = runner.invoke(app, ["detect", str(tiny_models.detector), str(path), "--labels",
                                 str(tiny_models.detector_labels), "--threshold", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    red_score = 1 / (1 + np.exp(-4.0 * (240 - 128) / 128))  # sigmoid(gain * normalized red) in the model
    assert row["results"] == [{"id": 0, "label": "red", "score": pytest.approx(red_score, abs=1e-3),
                               "box": {"xmin": 0, "ymin": 0, "xmax": 32, "ymax": 32}}]


@pytest.mark.parametrize("case", ["edgetpu", "labels", "image", "model"])
def test_errors_print_message_and_fix_and_exit_2(runner, coral_data, tmp_path, case):
    model, labels, image = MOBILENET_V2, "imagenet_labels.txt", str(coral_data / "cat.bmp")
    if case == "edgetpu":
        model = "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    elif case == "labels":
        labels = "inat_bird_labels.txt"
    elif case == "image":
        image = str(tmp_path / "broken.jpg")
        (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    model_path = str(coral_data / model)
    if case == "model":
        model_path = str(tmp_path / "corrupt.tflite")
        (tmp_path / "corrupt.tflite").write_bytes(b"TFL3" * 100)

    result = runner.invoke(app, ["classify", model_path, image, "--labels", str(coral_data / labels),
                                 "--json"])

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "error:" in result.stderr and "fix:" in result.stderr
    expected = {"edgetpu": "No Edge TPU detected", "labels": "1001", "image": "broken.jpg",
                "model": "corrupt.tflite"}[case]
    assert expected in result.stderr


def test_unknown_device_is_exit_2(runner, coral_data):
    result = runner.invoke(app, ["classify", str(coral_data / MOBILENET_V2), str(coral_data / "cat.bmp"),
                                 "--labels", str(coral_data / "imagenet_labels.txt"), "--device", "gpu"])
    assert result.exit_code == 2 and "unknown inference device 'gpu'" in result.stderr
