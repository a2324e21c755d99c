"""Bring your own model: a fully int8 .tflite released as it is, with Coral's published classifiers and a
small int8 SSD detector ending in TFLite_Detection_PostProcess. The flows run for real (Prefect test API,
LiteRT through the device runtime, the edgetpu_compiler stand-in as a subprocess, signing, a local registry).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.device.registry import open_registry_reader
from edgefleet.flows.release.brought import Operation, float_operations
from edgefleet.flows.release.dataset import DatasetError
from edgefleet.flows.release.flow import release_model
from edgefleet.kernel.contracts.layout import CPU_MODEL_FILE, EDGETPU_MODEL_FILE, LABELS_FILE
from edgefleet.kernel.errors import ConfigError, LabelsError, ModelError

pytestmark = pytest.mark.usefixtures("prefect_api")

MakeParams = Callable[..., Any]
# Coral's known answers for mobilenet_v2_1.0_224_quant (see ../shared/coral-test-data/README.md).
KNOWN = {"Egyptian cat": "cat.bmp", "macaw": "parrot.jpg", "military uniform": "grace_hopper.bmp"}


def _labelled_folders(coral, root: Path) -> Path:
    """Class folders named after ImageNet labels, two copies of one image each (the loader wants two)."""
    for label, image in KNOWN.items():
        (root / label).mkdir(parents=True)
        for copy in ("a", "b"):
            shutil.copyfile(coral.directory / image, root / label / f"{copy}{Path(image).suffix}")
    return root


def _brought(make_params: MakeParams, source: dict, **overrides: Any):
    return make_params(source={"kind": "tflite", **source}, dataset=None, **overrides)


def test_brought_classifier_is_evaluated_compiled_signed_and_published(
    make_params: MakeParams, coral_models, signing_keys: tuple[Path, Path], tmp_path: Path
) -> None:
    from edgefleet.device.runtime.engine import open_for_manifest
    from edgefleet.device.runtime.golden import check_golden
    from edgefleet.device.trust.version_bundle import verify_version_dir

    folders = _labelled_folders(coral_models, tmp_path / "images")
    params = make_params(
        model="imagenet-v2",
        source={"kind": "tflite", "path": str(coral_models.v2_224), "labels": str(coral_models.imagenet_labels)},
        dataset={"source": str(folders)},
        gates={"min_int8_accuracy": 0.99},
    )
    result = release_model(params)

    assert result.metrics.int8_accuracy == 1.0 and result.metrics.eval_samples == 6
    assert result.metrics.float_accuracy is None and result.variants == ("cpu", "edgetpu")
    gates = {gate.name: gate for gate in result.gates}
    assert gates["min_int8_accuracy"].checked and not gates["max_accuracy_drop_points"].checked
    download = tmp_path / "download"
    manifest = open_registry_reader(params.registry).download_version("imagenet-v2", result.version, download)
    verify_version_dir(download, signing_keys[1])
    assert manifest.origin.kind == "brought" and manifest.origin.dataset == str(folders)
    assert (download / CPU_MODEL_FILE).read_bytes() == coral_models.v2_224.read_bytes()
    assert (download / LABELS_FILE).read_text() == coral_models.imagenet_labels.read_text()
    assert manifest.task == "classification" and manifest.label_count == 1001
    with open_for_manifest(download, manifest, device="cpu") as engine:
        assert check_golden(engine, manifest).passed
    assert "int8 top-1 accuracy **100.00%** of 6 images" in result.report


def test_brought_without_dataset_ships_its_edgetpu_twin_and_says_it_was_not_evaluated(
    make_params: MakeParams, coral_models
) -> None:
    params = _brought(
        make_params,
        {
            "path": str(coral_models.v1_128),
            "labels": str(coral_models.imagenet_labels),
            "edgetpu_path": str(coral_models.v1_128_edgetpu),
        },
        model="imagenet-v1",
        gates={"min_int8_accuracy": 0.99},  # no dataset: not checked, so it cannot stop the release
    )
    result = release_model(params)
    assert result.published and result.variants == ("cpu", "edgetpu") and result.compiler is None
    assert all(not gate.checked for gate in result.gates)
    registry = open_registry_reader(params.registry)
    manifest = registry.read_manifest("imagenet-v1", result.version).manifest
    assert manifest.origin.kind == "brought" and manifest.origin.dataset is None
    assert "no dataset" in manifest.origin.note and manifest.metrics.int8_accuracy is None
    assert manifest.file(EDGETPU_MODEL_FILE).size == coral_models.v1_128_edgetpu.stat().st_size
    assert "Not evaluated: no dataset was given" in result.report
    assert "no accuracy gates were checked" in result.report and "brought compiled" in result.report


def test_brought_detector_is_released_and_runs_on_the_device_side(
    make_params: MakeParams, brought_detector, tmp_path: Path
) -> None:
    from edgefleet.device.runtime.engine import open_for_manifest
    from edgefleet.device.runtime.golden import check_golden

    params = _brought(
        make_params,
        {"path": str(brought_detector.model), "labels": str(brought_detector.labels)},
        model="colour-ssd",
        gates={"min_tpu_fraction": 0.5},
    )
    result = release_model(params)
    assert result.task == "detection" and result.variants == ("cpu", "edgetpu")
    assert {op.operator for op in result.compiler.cpu_operations} == {"CUSTOM", "DEQUANTIZE"}
    download = tmp_path / "download"
    manifest = open_registry_reader(params.registry).download_version("colour-ssd", result.version, download)
    assert manifest.task == "detection" and len(manifest.golden) == len(params.golden_seeds)
    with open_for_manifest(download, manifest, device="cpu", score_threshold=0.5) as engine:
        assert check_golden(engine, manifest).passed
        frame = np.zeros((32, 32, 3), np.uint8)
        frame[:16, :16] = (255, 0, 0)  # a red top-left quadrant
        found = engine.infer(engine.prepare(frame)).results
    assert [item.label for item in found] == ["red"]


def test_detector_with_an_image_folder_dataset_is_refused(
    make_params: MakeParams, brought_detector, tmp_path: Path
) -> None:
    params = make_params(
        model="colour-ssd-eval",
        source={"kind": "tflite", "path": str(brought_detector.model), "labels": str(brought_detector.labels)},
        dataset={"source": str(tmp_path)},
    )
    with pytest.raises(ConfigError, match="detector: an image-folder dataset has no boxes") as caught:
        release_model(params)
    assert "without a dataset" in caught.value.fix
    assert open_registry_reader(params.registry).list_models() == []


def test_float_model_is_refused_naming_its_float_operations(
    make_params: MakeParams, tiny_float: bytes, tmp_path: Path
) -> None:
    model = tmp_path / "float.tflite"
    model.write_bytes(tiny_float)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    params = _brought(make_params, {"path": str(model), "labels": str(labels)}, model="floaty")
    with pytest.raises(ModelError, match="not fully integer-quantized") as caught:
        release_model(params)
    assert "CONV_2D #0 (float32, float32, float32 -> float32)" in caught.value.message
    assert "TFLITE_BUILTINS_INT8" in caught.value.fix
    assert open_registry_reader(params.registry).list_models() == []


@pytest.mark.parametrize("problem", ["labels", "twin", "compiled-as-cpu", "unknown-class"])
def test_brought_model_problems_are_named(
    make_params: MakeParams, coral_models, brought_detector, tmp_path: Path, problem: str
) -> None:
    source = {"path": str(coral_models.v1_128), "labels": str(coral_models.imagenet_labels)}
    dataset = None
    expected: tuple[type[Exception], str] = (ModelError, "")
    if problem == "labels":
        source["labels"] = str(brought_detector.labels)
        expected = (LabelsError, "has 3 labels .* outputs 1001 classes")
    elif problem == "twin":
        source["edgetpu_path"] = str(coral_models.v1_128)
        expected = (ModelError, "no edgetpu-custom-op: it is not compiled")
    elif problem == "compiled-as-cpu":
        source["path"] = str(coral_models.v1_128_edgetpu)
        expected = (ModelError, "is compiled for the Edge TPU; the release needs the CPU model")
    else:
        (tmp_path / "images" / "not a label").mkdir(parents=True)
        for name in ("a.jpg", "b.jpg"):
            shutil.copyfile(coral_models.directory / "parrot.jpg", tmp_path / "images" / "not a label" / name)
        shutil.copytree(tmp_path / "images" / "not a label", tmp_path / "images" / "macaw")
        dataset = {"source": str(tmp_path / "images")}
        expected = (DatasetError, "class folder.*not a label.*not labels of the model")
    params = make_params(model="problem", source={"kind": "tflite", **source}, dataset=dataset)
    with pytest.raises(expected[0], match=expected[1]):
        release_model(params)
    assert open_registry_reader(params.registry).list_models() == []


def _op(name: str, ins: tuple[str, ...], outs: tuple[str, ...], consumers: tuple[str, ...] = ()) -> Operation:
    return Operation(0, name, ins, outs, consumers)


def test_float_operations_spare_only_the_ssd_postprocessing() -> None:
    post = "TFLite_Detection_PostProcess"
    ops = (
        _op("CONV_2D", ("uint8", "uint8", "int32"), ("uint8",)),
        _op("DEQUANTIZE", ("int8",), ("float32",), (post,)),
        _op(post, ("float32", "float32", "float32"), ("float32",) * 4),
        _op("DEQUANTIZE", ("int8",), ("float32",), ("SOFTMAX",)),
        _op("SOFTMAX", ("float32",), ("float32",)),
        _op("QUANTIZE", ("float32",), ("int8",)),
    )
    assert [op.name for op in float_operations(ops)] == ["DEQUANTIZE", "SOFTMAX", "QUANTIZE"]


def test_evaluation_set_renumbers_folders_to_the_model_ids() -> None:
    from edgefleet.flows.release.brought import evaluation_set
    from edgefleet.flows.release.dataset import Dataset

    images = np.zeros((5, 4, 4, 3), np.uint8)
    dataset = Dataset(
        labels=("cat", "macaw"), train_x=images[:3], train_y=np.array([0, 1, 1]), eval_x=images[3:],
        eval_y=np.array([0, 1]), fingerprint="f", source="/data",
    )
    held_out = evaluation_set(dataset, {0: "background", 1: "Macaw", 2: "dog", 3: "Cat"})
    assert held_out.labels == ("background", "Macaw", "dog", "Cat") and len(held_out.train_y) == 0
    assert held_out.eval_y.tolist() == [3, 1, 1, 3, 1]  # every image, as the model's class ids
