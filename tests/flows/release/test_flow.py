"""The release-model flow run for real: Prefect (prefect_test_harness), Keras training, TFLite conversion,
LiteRT evaluation, the edgetpu_compiler stand-in as a subprocess, signing, and the registry on a local
directory and on the GCS emulator. Training is tiny (32x32 demo images, 2 epochs) to keep this quick.
"""

from __future__ import annotations

import json
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from typer.testing import CliRunner

from edgefleet.device.registry import RegistryReader, open_registry_reader
from edgefleet.device.trust.version_bundle import verify_version_dir
from edgefleet.flows.release.candidate import training_cache_key
from edgefleet.flows.release.compiler import CompileError
from edgefleet.flows.release.dataset import DatasetError, decode_image
from edgefleet.flows.release.demo_dataset import generate_demo_dataset
from edgefleet.flows.release.flow import GateFailed, release_model
from edgefleet.flows.release.report import artifact_key
from edgefleet.flows.release.version_tasks import move_channel
from edgefleet.kernel.contracts.layout import CPU_MODEL_FILE, LABELS_FILE
from edgefleet.kernel.errors import ConflictError, ModelError, RegistryError

pytestmark = pytest.mark.usefixtures("prefect_api")

MakeParams = Callable[..., Any]


def _registry(params) -> RegistryReader:
    return open_registry_reader(params.registry)


def _artifact(key: str) -> str:
    from prefect.artifacts import Artifact

    artifact = Artifact.get(key)
    assert artifact is not None, f"no artifact {key}"
    return str(artifact.data)


@pytest.mark.slow
def test_release_round_trip_to_the_device_side(
    make_params: MakeParams, signing_keys: tuple[Path, Path], tmp_path: Path
) -> None:
    """Published -> downloaded -> the agent's `verify` and `classify` accept it; golden outputs match."""
    from edgefleet.device.cli import app as agent
    from edgefleet.device.runtime.engine import Engine
    from edgefleet.device.runtime.golden import check_golden
    from edgefleet.flows.release.evaluate import predict

    params = make_params()
    result = release_model(params)

    assert result.published and result.created and result.version == "1.0.0"
    assert result.variants == ("cpu", "edgetpu")
    registry = _registry(params)
    pointer = registry.read_channel("shapes", "canary").pointer
    assert pointer.version == "1.0.0" and pointer.manifest_sha256 == result.manifest_sha256
    assert "release-model" in pointer.updated_by

    download = tmp_path / "download"
    manifest = registry.download_version("shapes", "1.0.0", download)
    assert verify_version_dir(download, signing_keys[1], model="shapes", version="1.0.0") == manifest
    assert manifest.metrics.int8_accuracy == result.metrics.int8_accuracy
    assert manifest.compiler.operations_total > 0 and manifest.source_commit == "0123456789abcdef"
    assert (download / LABELS_FILE).read_text().split() == ["circle", "cross", "square", "triangle"]
    # The label-free accuracy estimate's table (manifest schema 3): the int8 model's right answers per score bucket.
    assert manifest.schema_ == "edgefleet.manifest/3"
    assert sum(manifest.calibration.images) == result.metrics.eval_samples
    assert sum(manifest.calibration.correct) == round(result.metrics.int8_accuracy * result.metrics.eval_samples)

    runner = CliRunner()
    verified = runner.invoke(agent, ["verify", str(download), "--public-key", str(signing_keys[1]), "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.output)["verified"] is True

    demo = generate_demo_dataset(
        Path(params.work_dir) / "datasets",
        params.dataset.demo_samples_per_class,
        params.dataset.demo_image_size,
        params.dataset.seed,
    )
    images = [sorted((demo / label).glob("*.png"))[0] for label in ("circle", "cross", "square", "triangle")]
    classified = runner.invoke(
        agent,
        [
            "classify",
            str(download / CPU_MODEL_FILE),
            *map(str, images),
            "--labels",
            str(download / LABELS_FILE),
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert classified.exit_code == 0, classified.output
    labels = (download / LABELS_FILE).read_text().split()
    cpu_model = (download / CPU_MODEL_FILE).read_bytes()
    for image, row in zip(images, json.loads(classified.output), strict=True):
        expected, _, _ = predict(
            cpu_model, decode_image(image.read_bytes(), params.training.input_size)[None], 0
        )
        assert row["results"][0]["label"] == labels[int(expected[0])]

    with Engine.open(download / CPU_MODEL_FILE, device="cpu") as engine:
        golden = check_golden(engine, manifest)
    assert golden.passed, golden.detail
    assert len(manifest.golden) == len(params.golden_seeds)

    report = _artifact(artifact_key("shapes", "report"))
    assert "shapes 1.0.0: PUBLISHED" in report and "/models/shapes/1.0.0" in report
    table = _artifact(artifact_key("shapes", "per-class-accuracy"))
    assert "triangle" in table and "int8 accuracy" in table


def test_rerun_reuses_training_and_same_version_is_a_noop(make_params: MakeParams, tmp_path: Path) -> None:
    params = make_params(version="2.0.0", work_dir=str(tmp_path / "fresh-work"))
    first = release_model(params)
    again = release_model(params)
    assert not first.training_cached and again.training_cached
    assert first.created and not again.created
    assert again.manifest_sha256 == first.manifest_sha256  # the registry still holds the first manifest
    assert _registry(params).list_versions("shapes") == ["2.0.0"]
    assert "training reused from the task cache" in again.report


def test_existing_version_with_different_content_is_refused(make_params: MakeParams) -> None:
    params = make_params(version="3.0.0")
    first = release_model(params)
    registry = _registry(params)
    before = registry.read_manifest("shapes", "3.0.0").raw
    different = make_params(version="3.0.0", training={"seed": 7})
    with pytest.raises(ConflictError, match="3.0.0 .* already exists"):
        release_model(different)
    assert registry.read_manifest("shapes", "3.0.0").raw == before
    assert registry.read_channel("shapes", "canary").pointer.manifest_sha256 == first.manifest_sha256


@pytest.mark.slow
def test_release_into_gcs_emulator_registry(
    make_params: MakeParams, gcs_bucket: str, signing_keys: tuple[Path, Path]
) -> None:
    params = make_params(registry=f"gs://{gcs_bucket}/edgefleet")
    result = release_model(params)
    assert result.version_uri == f"gs://{gcs_bucket}/edgefleet/models/shapes/1.0.0"
    registry = open_registry_reader(params.registry)
    manifest = registry.verify_version("shapes", "1.0.0", signing_keys[1])
    assert manifest.variants == {"cpu": "model_cpu.tflite", "edgetpu": "model_edgetpu.tflite"}
    assert registry.read_channel("shapes", "canary").pointer.version == "1.0.0"
    second = release_model(params)  # next patch version, channel moves by compare-and-swap
    assert second.version == "1.0.1"
    assert registry.read_channel("shapes", "canary").pointer.version == "1.0.1"


def test_missing_bucket_is_named_with_how_to_create_it(
    make_params: MakeParams, gcs_env, unique_name: str, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    params = make_params(registry=f"gs://no-such-bucket-{unique_name}/models", work_dir=str(work))
    with pytest.raises(RegistryError) as caught:
        release_model(params)
    assert f"no-such-bucket-{unique_name}" in caught.value.message
    assert "buckets create" in caught.value.fix
    assert not (work / "datasets").exists()  # it stopped before doing any work


def test_failing_gate_publishes_nothing(make_params: MakeParams, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGETPU_STANDIN_CPU_OPS", "SOFTMAX,MEAN")
    params = make_params(model="gated", gates={"min_tpu_fraction": 0.95})
    with pytest.raises(GateFailed, match="min_tpu_fraction") as caught:
        release_model(params)
    assert "SOFTMAX" in caught.value.fix and "points short" in caught.value.message
    registry = _registry(params)
    assert registry.list_versions("gated") == [] and registry.list_channels("gated") == []
    assert not list((Path(params.work_dir) / "builds" / "gated").glob("*"))
    report = _artifact(artifact_key("gated", "report"))
    assert (
        "NOT PUBLISHED" in report and "**FAIL**" in report and "Nothing was written to the registry" in report
    )


def test_compiler_exiting_non_zero_fails_the_release(
    make_params: MakeParams, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGETPU_STANDIN_FAIL", "1")
    params = make_params(model="broken-compile")
    with pytest.raises(CompileError, match="exit status 1"):
        release_model(params)
    assert _registry(params).list_models() == []


def test_without_compiler_the_cpu_model_ships_alone(make_params: MakeParams, tmp_path: Path) -> None:
    params = make_params(
        model="cpu-only", compile={"compiler": str(tmp_path / "absent" / "edgetpu_compiler")}
    )
    result = release_model(params)
    assert result.variants == ("cpu",) and result.compiler is None
    assert "No Edge TPU model in this release" in result.report
    manifest = _registry(params).read_manifest("cpu-only", result.version).manifest
    assert manifest.variants == {"cpu": "model_cpu.tflite"} and manifest.compiler is None
    gate = next(g for g in result.gates if g.name == "min_tpu_fraction")
    assert not gate.checked


def _folder_dataset(root: Path) -> Path:
    demo = generate_demo_dataset(root / "gen", samples_per_class=10, image_size=32, seed=9)
    (demo / "circle" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (demo / "square" / "empty.png").write_bytes(b"")
    return demo


def test_folder_dataset_with_corrupt_images_is_released_and_counted(
    make_params: MakeParams, tmp_path: Path
) -> None:
    params = make_params(model="folder", dataset={"source": str(_folder_dataset(tmp_path))})
    result = release_model(params)
    assert result.skipped_images == 2
    assert "2 unreadable image(s) skipped" in result.report and "corrupt.jpg" in result.report


@pytest.mark.parametrize("layout", ["empty", "single-class"])
def test_unusable_dataset_fails_before_training(make_params: MakeParams, tmp_path: Path, layout: str) -> None:
    data = tmp_path / "data"
    (data / "only").mkdir(parents=True)
    if layout == "single-class":
        generate_demo_dataset(tmp_path / "gen", 4, 32, 0)
        for image in (tmp_path / "gen").glob("*/circle/*.png"):
            image.rename(data / "only" / image.name)
    params = make_params(model="bad-data", dataset={"source": str(data)})
    with pytest.raises(DatasetError, match="no readable images" if layout == "empty" else "only one class"):
        release_model(params)
    assert _registry(params).list_models() == []


def test_user_keras_model(make_params: MakeParams, tmp_path: Path) -> None:
    """A trained Keras model is released as is; one whose input does not fit the dataset is refused."""
    import keras

    from edgefleet.flows.release.params import TrainingParams
    from edgefleet.flows.release.train import build_model

    good = tmp_path / "good.keras"
    build_model(TrainingParams(input_size=32, small_cnn_filters=(8,)), classes=4, batch_size=None).save(good)
    result = release_model(make_params(model="user-model", source={"kind": "keras", "path": str(good)}))
    assert result.published and not result.training_cached and str(good) in result.report
    assert result.origin.kind == "keras" and result.origin.dataset

    grey = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(4)])
    bad = tmp_path / "grey.h5"
    grey.save(bad)
    params = make_params(model="user-model-bad", source={"kind": "keras", "path": str(bad)})
    with pytest.raises(ModelError, match=r"takes input \[None, 28, 28, 1\]") as caught:
        release_model(params)
    assert "training.input_size" in caught.value.fix
    assert _registry(params).list_versions("user-model-bad") == []


class _Fingerprint(NamedTuple):
    fingerprint: str


def test_transfer_learning_release_from_a_weights_file(make_params: MakeParams, tmp_path: Path) -> None:
    """A MobileNetV1 backbone from a weights file, its last 2 blocks fine-tuned; new weights retrain."""
    import keras

    def write_backbone(seed: int) -> Path:
        keras.utils.set_random_seed(seed)
        backbone = keras.applications.MobileNet(
            input_shape=(32, 32, 3), alpha=0.25, include_top=False, weights=None, pooling="avg"
        )
        path = tmp_path / "pretrained.weights.h5"
        backbone.save_weights(path)
        return path

    weights = write_backbone(2)
    params = make_params(
        model="transfer",
        training={"architecture": "mobilenet_v1", "mobilenet_alpha": 0.25, "weights": str(weights),
                  "fine_tune": "last_blocks(2)", "epochs": 1},
    )
    result = release_model(params)
    assert result.origin.kind == "trained" and f"from {weights} weights" in result.origin.note
    assert "fine-tuned: last 2 blocks" in result.origin.note and "fine-tuned: last 2 blocks" in result.report
    manifest = _registry(params).read_manifest("transfer", result.version).manifest
    assert manifest.origin == result.origin and manifest.origin.dataset
    key = training_cache_key(None, {"dataset": _Fingerprint("d"), "split": params.dataset, "training": params.training})
    write_backbone(3)  # other weights under the same name: the cached training must not be reused
    assert training_cache_key(
        None, {"dataset": _Fingerprint("d"), "split": params.dataset, "training": params.training}
    ) != key


def test_development_key_is_created_and_said_so(make_params: MakeParams, tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "dev.key"
    params = make_params(model="dev-signed", signing={"key_file": None, "dev_key_file": str(key_file)})
    result = release_model(params)
    assert "DEVELOPMENT key" in result.signing_key and "created now" in result.signing_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    public = key_file.with_name("dev.key.pub")
    _registry(params).verify_version("dev-signed", result.version, public)
    again = release_model(params)
    assert "existing" in again.signing_key


def _promoting_compiler(tmp_path: Path, standin: Path, registry: str, signing_key: Path) -> Path:
    """A compiler wrapper that, while "compiling", promotes 1.0.0 to canary as a concurrent operator would."""
    script = tmp_path / "edgetpu_compiler"
    edgefleet = Path(sys.executable).with_name("edgefleet")
    script.write_text(
        f'#!/bin/sh\n"{edgefleet}" registry promote racy 1.0.0 --channel canary --registry '
        f'"{registry}" --signing-key "{signing_key}" >&2 || exit 99\nexec "{standin}" "$@"\n'
    )
    script.chmod(0o755)
    return script


def test_channel_moved_meanwhile_is_not_overwritten(
    make_params: MakeParams, standin_compiler: Path, tmp_path: Path, signing_keys: tuple[Path, Path]
) -> None:
    params = make_params(model="racy", channel="stable")
    release_model(params)  # 1.0.0, channel stable (canary untouched)
    racing = make_params(
        model="racy",
        compile={
            "compiler": str(_promoting_compiler(tmp_path, standin_compiler, params.registry, signing_keys[0]))
        },
    )
    with pytest.raises(ConflictError, match="somebody else changed it"):
        release_model(racing)
    registry = _registry(params)
    assert registry.list_versions("racy") == ["1.0.0", "1.0.1"]  # published, immutable
    assert registry.read_channel("racy", "canary").pointer.version == "1.0.0"  # the other promotion stands
    assert "channel canary was NOT moved" in _artifact(artifact_key("racy", "report"))


@pytest.mark.parametrize("backend", ["local", "gcs"])
def test_concurrent_promotions_one_wins(
    make_params: MakeParams, request: pytest.FixtureRequest, backend: str
) -> None:
    registry_uri = f"gs://{request.getfixturevalue('gcs_bucket')}/r" if backend == "gcs" else None
    params = make_params(
        model="contended", channel=None, **({"registry": registry_uri} if registry_uri else {})
    )
    versions = [release_model(params).version for _ in range(2)]
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def promote(version: str) -> None:
        barrier.wait(timeout=30)
        try:
            outcomes[version] = move_channel.fn(
                params.registry, "contended", version, "prod", None, f"t-{version}", params.signing
            )
        except ConflictError as error:
            outcomes[version] = error

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [v for v, outcome in outcomes.items() if not isinstance(outcome, ConflictError)]
    assert len(winners) == 1 and len(outcomes) == 2
    assert open_registry_reader(params.registry).read_channel("contended", "prod").pointer.version == winners[0]


def test_cli_release_and_registry_commands(
    make_params: MakeParams, tmp_path: Path, signing_keys: tuple[Path, Path]
) -> None:
    import yaml

    from edgefleet.cli import app

    params = make_params(model="from-cli")
    config = tmp_path / "release.yaml"
    config.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    runner = CliRunner()
    released = runner.invoke(app, ["release", "--config", str(config), "--json"])
    assert released.exit_code == 0, released.output
    assert json.loads(released.output)["version"] == "1.0.0"

    listed = runner.invoke(app, ["registry", "ls", "from-cli", "--json", "--registry", params.registry])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert row["version"] == "1.0.0" and row["channels"] == ["canary"]

    shown = runner.invoke(
        app, ["registry", "show", "from-cli", "1.0.0", "--json", "--registry", params.registry]
    )
    assert json.loads(shown.output)["model"] == "from-cli"

    verified = runner.invoke(
        app,
        [
            "registry",
            "verify",
            "from-cli",
            "1.0.0",
            "--public-key",
            str(signing_keys[1]),
            "--registry",
            params.registry,
        ],
    )
    assert verified.exit_code == 0 and "OK" in verified.output

    def promote(channel: str, expect: str):
        return runner.invoke(app, ["registry", "promote", "from-cli", "1.0.0", "--channel", channel, "--expect",
                                   expect, "--registry", params.registry, "--signing-key", str(signing_keys[0])])

    promoted = promote("stable", expect="none")
    assert promoted.exit_code == 0, promoted.output
    refused = promote("beta", expect="0.9.0")
    assert refused.exit_code == 2

    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("model: from-cli\ntraining: {epochs: -1}\n")
    failed = runner.invoke(app, ["release", "--config", str(bad_config)])
    assert failed.exit_code == 2 and "training.epochs" in failed.output
