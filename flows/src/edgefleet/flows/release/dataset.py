"""Load an image-folder dataset (`DIR/<class>/*.jpg|png`) and split it deterministically.

Class names are the sorted sub-directory names; label ids are their positions. Images that cannot be read
are skipped and counted (the release report lists them), never silently dropped.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgefleet.kernel.errors import EdgefleetError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
MIN_CLASSES = 2
MIN_IMAGES_PER_CLASS = 2


class DatasetError(EdgefleetError):
    """A dataset is missing, empty or unusable for training a classifier."""


class SkippedImage(NamedTuple):
    """An image the loader could not use, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Dataset:
    """A loaded, split dataset: uint8 RGB images [N, H, W, 3] and integer labels.

    Attributes:
        labels: Class names; label id = index.
        train_x, train_y: Training split.
        eval_x, eval_y: Held-out split (every class is present).
        fingerprint: sha256 over the class names and every used file's bytes: the dataset's identity for
            task caching.
        source: Directory the images were read from.
        skipped: Files that could not be read.
    """

    labels: tuple[str, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray
    fingerprint: str
    source: str
    skipped: tuple[SkippedImage, ...] = ()

    @property
    def input_size(self) -> int:
        return int(self.train_x.shape[1])

    def class_counts(self, split: str) -> dict[str, int]:
        """Images per class in split 'train' or 'eval'."""
        y = self.train_y if split == "train" else self.eval_y
        counts = np.bincount(y, minlength=len(self.labels))
        return {label: int(count) for label, count in zip(self.labels, counts, strict=True)}


class _ClassImages(NamedTuple):
    pixels: list[np.ndarray]
    digests: list[str]


def list_class_dirs(root: Path) -> list[Path]:
    """Sub-directories of `root` that name classes (sorted, hidden ones ignored)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Decodes image bytes to uint8 RGB [size, size, 3] (bilinear resize), the device's preprocessing.

    Raises:
        OSError, ValueError: the bytes are not a readable image (Pillow's errors).
    """
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _read_class(class_dir: Path, size: int, skipped: list[SkippedImage]) -> _ClassImages:
    images = _ClassImages([], [])
    files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    for path in files:
        try:
            data = path.read_bytes()
            pixels = decode_image(data, size)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as error:
            skipped.append(SkippedImage(str(path), f"{type(error).__name__}: {error}"))
            log.warning("Skipping unreadable image %s: %s", path, error)
            continue
        images.pixels.append(pixels)
        images.digests.append(f"{path.name}:{hashlib.sha256(data).hexdigest()}")
    return images


def split_indices(
    count: int, eval_fraction: float, seed: int, class_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/eval index split of one class (at least one image on each side).

    Pure: the same count, fraction, seed and class index give the same split on every machine.
    """
    order = np.random.default_rng([seed, class_index]).permutation(count)
    eval_count = min(count - 1, max(1, round(count * eval_fraction)))
    return np.sort(order[eval_count:]), np.sort(order[:eval_count])


def load_dataset(root: Path, input_size: int, eval_fraction: float, seed: int) -> Dataset:
    """Reads `root/<class>/*.jpg|png`, resizes to `input_size`, and splits each class.

    Args:
        root: Dataset directory, one sub-directory per class.
        input_size: Side of the square model input.
        eval_fraction: Share of each class held out for evaluation.
        seed: Seed of the split.

    Raises:
        DatasetError: the directory is missing, has fewer than two classes, or a class has fewer than two
            readable images.
    """
    if not root.is_dir():
        raise DatasetError(
            f"dataset directory {root} does not exist",
            "point dataset.source at a folder laid out DIR/<class>/*.jpg|png, or use 'demo'",
        )
    skipped: list[SkippedImage] = []
    per_class = {d.name: _read_class(d, input_size, skipped) for d in list_class_dirs(root)}
    labels = usable_labels(root, {name: len(images.pixels) for name, images in per_class.items()}, len(skipped))
    classes = [per_class[label] for label in labels]
    train_x, train_y, eval_x, eval_y = _split_classes(classes, eval_fraction, seed)
    return Dataset(
        labels=labels,
        train_x=train_x,
        train_y=train_y,
        eval_x=eval_x,
        eval_y=eval_y,
        fingerprint=_fingerprint(labels, classes),
        source=str(root),
        skipped=tuple(skipped),
    )


def usable_labels(root: Path, readable: Mapping[str, int], skipped: int) -> tuple[str, ...]:
    """The class names to train on (sorted: label id = index), given each class folder's readable image count.

    Pure: the classes with images must make a classifier, and every class folder needs enough images to
    train on one and hold one out (an empty folder too: remove it).

    Raises:
        DatasetError: no readable images at all, fewer than `MIN_CLASSES` classes with images, or a class with
            fewer than `MIN_IMAGES_PER_CLASS` (naming each such class and its count).
    """
    usable = sorted(name for name, count in readable.items() if count)
    if not usable:
        raise DatasetError(
            f"dataset {root} has no readable images ({len(readable)} class folders, "
            f"{skipped} unreadable files skipped)",
            "put images in one sub-folder per class: DIR/<class>/*.jpg|png",
        )
    if len(usable) < MIN_CLASSES:
        raise DatasetError(
            f"dataset {root} has only one class with images ({', '.join(usable)}): a classifier needs at "
            f"least {MIN_CLASSES}",
            "add a sub-folder of images for every other class the model should tell apart",
        )
    too_small = {name: count for name, count in readable.items() if count < MIN_IMAGES_PER_CLASS}
    if too_small:
        listing = ", ".join(f"{name} ({count})" for name, count in sorted(too_small.items()))
        raise DatasetError(
            f"dataset {root}: class folders with fewer than {MIN_IMAGES_PER_CLASS} readable images: "
            f"{listing}",
            "add images to those classes (one for training, one held out at the very least) or remove the "
            "folders",
        )
    return tuple(usable)


def _split_classes(
    classes: Sequence[_ClassImages], eval_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, eval_x, eval_y): every class split by `split_indices`; label id = position."""
    train_x: list[np.ndarray] = []
    train_y: list[np.ndarray] = []
    eval_x: list[np.ndarray] = []
    eval_y: list[np.ndarray] = []
    for class_index, images in enumerate(classes):
        pixels = np.stack(images.pixels)
        train_idx, eval_idx = split_indices(len(pixels), eval_fraction, seed, class_index)
        train_x.append(pixels[train_idx])
        train_y.append(np.full(len(train_idx), class_index, dtype=np.int64))
        eval_x.append(pixels[eval_idx])
        eval_y.append(np.full(len(eval_idx), class_index, dtype=np.int64))
    return np.concatenate(train_x), np.concatenate(train_y), np.concatenate(eval_x), np.concatenate(eval_y)


def _fingerprint(labels: Sequence[str], classes: Sequence[_ClassImages]) -> str:
    """sha256 over each class name and its files' `name:sha256` lines, in label order."""
    digest = hashlib.sha256()
    for label, images in zip(labels, classes, strict=True):
        digest.update(f"class:{label}\n".encode())
        for entry in images.digests:
            digest.update(f"{entry}\n".encode())
    return digest.hexdigest()
