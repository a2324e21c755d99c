"""Dataset loading and splitting, and the built-in demo dataset: real files, real Pillow."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgefleet.flows.release.dataset import DatasetError, load_dataset, split_indices, usable_labels
from edgefleet.flows.release.demo_dataset import DEMO_CLASSES, generate_demo_dataset


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.png"))
    }


def _write_images(directory: Path, count: int, color: tuple[int, int, int], suffix: str = ".png") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.new("RGB", (20 + index, 16), color).save(directory / f"img{index:03d}{suffix}")


def test_demo_dataset_is_deterministic_and_seeded(tmp_path: Path) -> None:
    first = generate_demo_dataset(tmp_path / "a", samples_per_class=6, image_size=24, seed=3)
    again = generate_demo_dataset(tmp_path / "b", samples_per_class=6, image_size=24, seed=3)
    other = generate_demo_dataset(tmp_path / "c", samples_per_class=6, image_size=24, seed=4)
    assert _tree_digest(first) == _tree_digest(again)
    assert _tree_digest(first) != _tree_digest(other)
    assert sorted(p.name for p in first.iterdir() if p.is_dir()) == sorted(s.name for s in DEMO_CLASSES)
    assert len(_tree_digest(first)) == 6 * len(DEMO_CLASSES)


def test_demo_dataset_is_reused_not_regenerated(tmp_path: Path) -> None:
    first = generate_demo_dataset(tmp_path, samples_per_class=4, image_size=16, seed=0)
    marker = first / "circle" / "circle-0000.png"
    before = marker.stat().st_mtime_ns
    assert generate_demo_dataset(tmp_path, samples_per_class=4, image_size=16, seed=0) == first
    assert marker.stat().st_mtime_ns == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_load_resizes_splits_per_class_and_is_deterministic(tmp_path: Path) -> None:
    _write_images(tmp_path / "red", 10, (255, 0, 0))
    _write_images(tmp_path / "blue", 5, (0, 0, 255), ".jpg")
    first = load_dataset(tmp_path, input_size=12, eval_fraction=0.2, seed=1)
    again = load_dataset(tmp_path, input_size=12, eval_fraction=0.2, seed=1)
    assert first.labels == ("blue", "red")
    assert first.train_x.shape[1:] == (12, 12, 3) and first.train_x.dtype == np.uint8
    assert first.class_counts("eval") == {"blue": 1, "red": 2}
    assert first.class_counts("train") == {"blue": 4, "red": 8}
    assert np.array_equal(first.train_x, again.train_x) and np.array_equal(first.eval_y, again.eval_y)
    assert first.fingerprint == again.fingerprint
    red = first.train_x[first.train_y == first.labels.index("red")]
    assert red[..., 0].min() > 200 and red[..., 2].max() < 50  # pixels are RGB, not BGR


def test_fingerprint_follows_content(tmp_path: Path) -> None:
    _write_images(tmp_path / "a", 3, (10, 10, 10))
    _write_images(tmp_path / "b", 3, (200, 200, 200))
    before = load_dataset(tmp_path, 8, 0.3, 0).fingerprint
    Image.new("RGB", (8, 8), (90, 90, 90)).save(tmp_path / "a" / "img000.png")
    assert load_dataset(tmp_path, 8, 0.3, 0).fingerprint != before


def test_split_indices_are_disjoint_and_cover_everything() -> None:
    train, held_out = split_indices(9, 0.25, seed=5, class_index=2)
    assert sorted(np.concatenate([train, held_out]).tolist()) == list(range(9))
    assert len(held_out) == 2
    assert split_indices(2, 0.01, 0, 0)[1].size == 1  # at least one held out
    assert split_indices(2, 0.99, 0, 0)[0].size == 1  # at least one to train on


def test_corrupt_images_are_skipped_and_counted(tmp_path: Path) -> None:
    _write_images(tmp_path / "cats", 4, (120, 80, 40))
    _write_images(tmp_path / "dogs", 4, (40, 80, 120))
    (tmp_path / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    truncated = (tmp_path / "dogs" / "img000.png").read_bytes()[:40]
    (tmp_path / "dogs" / "truncated.png").write_bytes(truncated)
    (tmp_path / "dogs" / "notes.txt").write_text("ignored: not an image suffix")
    dataset = load_dataset(tmp_path, 16, 0.25, 0)
    assert sorted(Path(s.path).name for s in dataset.skipped) == ["broken.jpg", "truncated.png"]
    assert all(s.reason for s in dataset.skipped)
    assert len(dataset.train_y) + len(dataset.eval_y) == 8


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist") as caught:
        load_dataset(tmp_path / "nope", 16, 0.2, 0)
    assert "demo" in caught.value.fix


def test_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(DatasetError, match="no readable images") as caught:
        load_dataset(tmp_path, 16, 0.2, 0)
    assert "DIR/<class>" in caught.value.fix


def test_single_class(tmp_path: Path) -> None:
    _write_images(tmp_path / "only", 6, (1, 2, 3))
    with pytest.raises(DatasetError, match="only one class") as caught:
        load_dataset(tmp_path, 16, 0.2, 0)
    assert "only" in caught.value.message


def test_class_with_too_few_images(tmp_path: Path) -> None:
    _write_images(tmp_path / "many", 6, (1, 2, 3))
    _write_images(tmp_path / "lonely", 1, (9, 9, 9))
    _write_images(tmp_path / "other", 3, (50, 50, 50))
    with pytest.raises(DatasetError, match=r"lonely \(1\)"):
        load_dataset(tmp_path, 16, 0.2, 0)


def test_usable_labels_are_decided_on_the_readable_counts_alone() -> None:
    root = Path("photos")
    assert usable_labels(root, {"cats": 3, "birds": 2}, skipped=0) == ("birds", "cats")  # label id = sorted position
    with pytest.raises(DatasetError, match=r"no readable images \(2 class folders, 5 unreadable"):
        usable_labels(root, {"cats": 0, "birds": 0}, skipped=5)
    with pytest.raises(DatasetError, match=r"only one class with images \(cats\)"):
        usable_labels(root, {"cats": 4, "birds": 0}, skipped=0)
    with pytest.raises(DatasetError, match=r"birds \(1\), empty \(0\)") as caught:  # an empty folder too
        usable_labels(root, {"cats": 4, "dogs": 3, "birds": 1, "empty": 0}, skipped=0)
    assert "remove the folders" in caught.value.fix
