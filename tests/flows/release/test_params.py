"""Release parameters read from YAML (the form and its sections): defaults, shorthands, errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.flows.release.compile_params import CompileLocal, CompileOff, CompileSsh
from edgefleet.flows.release.model_params import FineTuneHead, FineTuneLastBlocks, TfliteSource
from edgefleet.flows.release.params import ReleaseParams, load_params
from edgefleet.kernel.errors import ConfigError


def test_yaml_config_round_trip(tmp_path: Path) -> None:
    config = tmp_path / "release.yaml"
    config.write_text(
        "model: birds\nregistry: gs://my-bucket/models\nversion: 2.1.0\nchannel: beta\n"
        "training: {architecture: mobilenet_v2, input_size: 96, epochs: 3}\n"
        "compile: {mode: ssh, host: builder.example.com, user: ci}\n"
        "gates: {max_accuracy_drop_points: 1.5}\n"
    )
    params = load_params(config)
    assert params.model == "birds" and params.version == "2.1.0" and params.channel == "beta"
    assert params.training.architecture == "mobilenet_v2" and params.training.input_size == 96
    assert params.compile.host == "builder.example.com"
    assert params.gates.max_accuracy_drop_points == 1.5
    assert params.dataset.is_demo


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("model: Birds!\n", "model"),
        ("model: birds\nversion: latest\n", "version"),
        ("model: birds\ntraining: {epochs: 0}\n", "training.epochs"),
        ("model: birds\ntraining: {learning_rate: 1e-3, typo_field: 3}\n", "training.typo_field"),
        ("model: birds\ncompile: {mode: ssh}\n", "compile.host"),
        ("model: birds\ncompile: {mode: local, host: b.example.com}\n",
         "compile.host is for compile.mode ssh, not local: remove it, or set compile.mode: ssh"),
        ("model: birds\ncompile: {mode: off, key_file: k}\n", "compile.key_file is for compile.mode ssh, not off"),
        ("model: birds\ncompile: {mode: off, require: true}\n", "compile.require: true contradicts"),
        ("model: birds\ncompile: {mode: sssh}\n", "'local', 'ssh', 'off'"),
        ("model: birds\ntraining: {keras_model: m.keras}\n", "source: {kind: keras"),
        ("model: birds\ntraining: {fine_tune: head}\n", "weights is 'none'"),
        ("model: birds\ntraining: {fine_tune: 'last_blocks(x)'}\n", "last_blocks(N)"),
        ("model: birds\ntraining: {architecture: small_cnn, weights: imagenet}\n", "mobilenet_v2 or mobilenet_v1"),
        ("model: birds\ntraining: {architecture: mobilenet_v2, weights: imagenet, mobilenet_alpha: 0.4}\n",
         "0.35, 0.5"),
        ("model: birds\ndataset: null\n", "source train needs a dataset"),
        ("model: birds\nsource: {kind: tflite, path: m.tflite}\n", "source.tflite.labels"),
        ("model: birds\nsource: {kind: onnx}\n", "source"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_invalid_config_names_the_field(tmp_path: Path, text: str, named: str) -> None:
    config = tmp_path / "release.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_params(config)
    assert named in caught.value.message
    assert str(config) in caught.value.message


def test_transfer_learning_and_brought_model_configs(tmp_path: Path) -> None:
    config = tmp_path / "release.yaml"
    config.write_text(
        "model: birds\ntraining: {architecture: mobilenet_v2, weights: imagenet, fine_tune: last_blocks(3)}\n"
    )
    params = load_params(config)
    assert params.training.effective_fine_tune == FineTuneLastBlocks(blocks=3) and params.training.pretrained
    assert params.dataset.is_demo and not params.brought
    config.write_text("model: birds\ntraining: {architecture: mobilenet_v1, weights: /w/backbone.weights.h5}\n")
    assert load_params(config).training.effective_fine_tune == FineTuneHead()  # pretrained: the head by default
    config.write_text("model: birds\nsource: {kind: tflite, path: m.tflite, labels: l.txt}\n")
    brought = load_params(config)
    assert brought.brought and brought.dataset is None  # no dataset unless one is given
    assert brought.source == TfliteSource(path="m.tflite", labels="l.txt")
    config.write_text("model: birds\nsource: {kind: tflite, path: m.tflite, labels: l.txt}\ndataset: {source: d}\n")
    assert load_params(config).dataset.source == "d"


def test_compile_sections_written_before_the_union_still_read(tmp_path: Path) -> None:
    config = tmp_path / "release.yaml"
    config.write_text("model: birds\ncompile: {compiler: /opt/edgetpu_compiler, require: true}\n")
    assert load_params(config).compile == CompileLocal(compiler="/opt/edgetpu_compiler", require=True)
    config.write_text("model: birds\ncompile: {mode: off, compiler: edgetpu_compiler, require: false}\n")
    assert load_params(config).compile == CompileOff()
    config.write_text("model: birds\n")
    assert load_params(config).compile == CompileLocal()
    # Prefect reads prefect.yaml with YAML 1.1, where `mode: off` is False: still off.
    assert ReleaseParams.model_validate({"model": "birds", "compile": {"mode": False}}).compile == CompileOff()
    ssh = ReleaseParams.model_validate({"model": "birds", "compile": {"mode": "ssh", "host": "b", "port": 2222}})
    assert ssh.compile == CompileSsh(host="b", port=2222)


@pytest.mark.parametrize("name", ["release", "release.transfer", "release.tflite"])
def test_example_configs_are_valid(name: str) -> None:
    example = Path(__file__).parents[3] / "flows/src/edgefleet/flows" / "release" / f"{name}.example.yaml"
    params = load_params(example)
    assert params.brought == (name == "release.tflite")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "absent.yaml")


def test_params_schema_renders_as_a_form() -> None:
    schema = ReleaseParams.model_json_schema()
    assert {
        "model",
        "dataset",
        "training",
        "quantization",
        "compile",
        "gates",
        "registry",
        "version",
        "channel",
        "signing",
    } <= set(schema["properties"])
    assert schema["required"] == ["model"]
