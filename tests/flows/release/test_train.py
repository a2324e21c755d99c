"""Training: the validation split, the defaults' schedule, and transfer learning on MobileNet backbones.

Offline throughout: the pretrained weights are a file the test writes itself and loads by path (the same
code path as a downloaded ImageNet file); the frozen-backbone checks compare the released model's backbone
with that file, weight by weight.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefleet.flows.release.backbones import (
    BACKBONE_NAME,
    backbone_blocks,
    build_model,
    model_from_bytes,
    trainable_blocks,
)
from edgefleet.flows.release.dataset import Dataset, load_dataset
from edgefleet.flows.release.demo_dataset import generate_demo_dataset
from edgefleet.flows.release.model_params import FineTuneAll, FineTuneHead, FineTuneLastBlocks, TrainingParams
from edgefleet.flows.release.train import KeptEpoch, kept_epoch, train, validation_split
from edgefleet.kernel.errors import ModelError

MOBILENET = {"architecture": "mobilenet_v2", "input_size": 32, "epochs": 1, "batch_size": 8}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = generate_demo_dataset(tmp_path_factory.mktemp("demo"), samples_per_class=10, image_size=32, seed=3)
    return load_dataset(root, 32, 0.2, 0)


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 'pretrained' MobileNetV2 backbone: random weights, saved the way a user saves them."""
    import keras

    keras.utils.set_random_seed(11)
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    path = tmp_path_factory.mktemp("weights") / "pretrained.weights.h5"
    backbone.save_weights(path)
    return path


def _backbone_weights(path: Path) -> list[np.ndarray]:
    import keras

    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    backbone.load_weights(path)
    return [w.numpy() for w in backbone.weights]


def test_validation_split_is_stratified_disjoint_and_seeded() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 2])
    fit, validation = validation_split(labels, 0.2, seed=4)
    assert not set(fit) & set(validation) and len(fit) + len(validation) == len(labels)
    assert np.bincount(labels[validation], minlength=3).tolist() == [2, 4, 0]  # a 2-image class keeps both
    again = validation_split(labels, 0.2, seed=4)
    assert (again[1] == validation).all()
    assert not (validation_split(labels, 0.2, seed=5)[1] == validation).all()


def test_the_kept_epoch_is_the_best_validation_loss_only_when_early_stopping_restored_it() -> None:
    history = {"loss": [0.9, 0.5, 0.6], "accuracy": [0.4, 0.7, 0.8], "val_loss": [0.8, 0.3, 0.5],
               "val_accuracy": [0.5, 0.9, 0.6]}
    assert kept_epoch(history, validated=True, early_stopping=True) == KeptEpoch(2, 3, 0.7, 0.9)
    assert kept_epoch(history, validated=True, early_stopping=False) == KeptEpoch(3, 3, 0.8, 0.6)
    no_validation = {"loss": [0.9, 0.5], "accuracy": [0.4, 0.7]}
    assert kept_epoch(no_validation, validated=False, early_stopping=False) == KeptEpoch(2, 2, 0.7, None)


def test_backbone_blocks_and_what_trains() -> None:
    import keras

    v2 = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
    v1 = keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, include_top=False, weights=None)
    v2_blocks = backbone_blocks("mobilenet_v2", [layer.name for layer in v2.layers])
    v1_blocks = backbone_blocks("mobilenet_v1", [layer.name for layer in v1.layers])
    assert v2_blocks[:3] == ["stem", "expanded_conv", "block_1"] and v2_blocks[-2:] == ["block_16", "top"]
    assert len(v2_blocks) == 19 and len(v1_blocks) == 14 and v1_blocks[-1] == "block_13"
    assert trainable_blocks(v2_blocks, FineTuneLastBlocks(blocks=2), "mobilenet_v2") == {"block_16", "top"}
    assert trainable_blocks(v2_blocks, FineTuneHead(), "mobilenet_v2") == set()
    assert trainable_blocks(v2_blocks, FineTuneAll(), "mobilenet_v2") == set(v2_blocks)
    with pytest.raises(ModelError, match=r"last_blocks\(20\).*19") as caught:
        trainable_blocks(v2_blocks, FineTuneLastBlocks(blocks=20), "mobilenet_v2")
    assert "N <= 19" in caught.value.fix


# Training MobileNet v2 end to end for an epoch: ~40 s on the quiet 2-core machine, past the suite's 600 s hang
# guard at load average 25 (seen: TensorFlow's thread pools under oversubscription).
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    ("fine_tune", "unchanged"),
    [("head", "all"), ("last_blocks(1)", "all but the top block"), ("all", "none")],
)
def test_frozen_backbone_keeps_the_pretrained_weights(
    tiny_dataset: Dataset, backbone_file: Path, fine_tune: str, unchanged: str
) -> None:
    params = TrainingParams.model_validate({**MOBILENET, "weights": str(backbone_file), "fine_tune": fine_tune})
    trained = train(tiny_dataset, params)
    model = model_from_bytes(trained.keras_bytes)
    backbone = model.get_layer(BACKBONE_NAME)
    after = {w.path: w.numpy() for w in backbone.weights}
    before = dict(zip((w.path for w in backbone.weights), _backbone_weights(backbone_file), strict=True))
    same = {path for path in after if np.array_equal(after[path], before[path])}
    top = {path for path in after if path.split("/")[-2] in ("Conv_1", "Conv_1_bn")}
    if unchanged == "all":
        assert same == set(after)
    elif unchanged == "all but the top block":
        assert set(after) - top <= same and top
        assert "Conv_1/kernel" not in same
    else:
        assert len(same) < len(after) / 2
    head = model.get_layer("logits").get_weights()[0]
    assert np.abs(head).sum() > 0 and trained.epochs_run == 1


def test_weights_file_errors_name_the_file(tiny_dataset: Dataset, tmp_path: Path) -> None:
    import keras

    missing = TrainingParams.model_validate({**MOBILENET, "weights": str(tmp_path / "absent.weights.h5")})
    with pytest.raises(ModelError, match="absent.weights.h5.*does not exist"):
        build_model(missing, classes=4, batch_size=None)
    v1 = keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, include_top=False, weights=None)
    wrong = tmp_path / "v1.weights.h5"
    v1.save_weights(wrong)
    params = TrainingParams.model_validate({**MOBILENET, "weights": str(wrong)})
    with pytest.raises(ModelError, match="does not fit mobilenet_v2") as caught:
        build_model(params, classes=4, batch_size=None)
    assert "mobilenet_alpha" in caught.value.fix


def test_default_training_stops_on_the_validation_split(tiny_dataset: Dataset) -> None:
    params = TrainingParams(epochs=3, small_cnn_filters=(8,), early_stopping_patience=1)
    trained = train(tiny_dataset, params)
    assert trained.validation_accuracy is not None and 1 <= trained.best_epoch <= trained.epochs_run <= 3
    without = train(tiny_dataset, TrainingParams(epochs=2, small_cnn_filters=(8,), validation_fraction=0))
    assert without.validation_accuracy is None and without.epochs_run == 2


def _keras_cache_file(keras_home: Path, alpha: float, corrupt: bool = False) -> Path:
    """Puts a MobileNetV2 no-top weights file where Keras' ImageNet download caches it (legacy .h5 format, as
    the real one is), so `weights: imagenet` takes its real loading path without a network."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_224_no_top.h5"  # 224: any size
    path = keras_home / "models" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if corrupt:
        path.write_bytes(b"not an HDF5 file")
        return path
    keras.utils.set_random_seed(5)
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=alpha, include_top=False, weights=None, pooling="avg"
    )
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, backbone)
    return path


def test_imagenet_weights_load_from_the_keras_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras
    from keras.src.backend import config as keras_config

    # $KERAS_HOME, as Keras read it at import time: where get_file looks for (and caches) downloads.
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))
    cached = _keras_cache_file(tmp_path, 0.35)
    params = TrainingParams.model_validate({**MOBILENET, "weights": "imagenet"})
    model = build_model(params, classes=4, batch_size=None)
    reference = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    reference.load_weights(cached)
    loaded = model.get_layer(BACKBONE_NAME).weights
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(loaded, reference.weights, strict=True))

    _keras_cache_file(tmp_path, 0.35, corrupt=True)
    with pytest.raises(ModelError, match="ImageNet weights of mobilenet_v2 .* could not be downloaded") as caught:
        build_model(params, classes=4, batch_size=None)
    assert "training.weights to its path" in caught.value.fix


def test_a_missing_keras_model_names_the_source_field_that_holds_it(tmp_path: Path) -> None:
    from edgefleet.flows.release.train import _load_user_model

    with pytest.raises(ModelError, match="absent.keras does not exist") as caught:
        _load_user_model(tmp_path / "absent.keras")
    assert "source: {kind: keras" in caught.value.fix and "keras_model" not in caught.value.fix
