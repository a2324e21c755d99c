"""The built-in demo dataset: coloured shapes drawn with Pillow, deterministic for a given seed.

Four classes (circle, square, triangle, cross), each with its own colour family, drawn at a random place
and size on a noisy background. A small CNN learns it to high accuracy in a few epochs on a laptop CPU,
which makes it a quick end-to-end check of the pipeline without downloading anything.

The images are written as PNG files in the layout of a user dataset (`DIR/<class>/*.png`) so they go
through the same loader as real data.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete"


class ShapeStyle(NamedTuple):
    """How one demo class looks: a shape and a base colour (RGB) jittered per image."""

    name: str
    color: tuple[int, int, int]


DEMO_CLASSES: tuple[ShapeStyle, ...] = (
    ShapeStyle("circle", (220, 60, 50)),
    ShapeStyle("square", (50, 170, 70)),
    ShapeStyle("triangle", (50, 90, 220)),
    ShapeStyle("cross", (230, 200, 40)),
)
COLOR_JITTER = 35
BACKGROUND_RANGE = (40, 200)
NOISE_AMPLITUDE = 20
MIN_SHAPE_FRACTION = 0.35
MAX_SHAPE_FRACTION = 0.7


def _jitter(rng: np.random.Generator, color: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = (
        min(255, max(0, c + int(rng.integers(-COLOR_JITTER, COLOR_JITTER, endpoint=True)))) for c in color
    )
    return (r, g, b)


def _draw_circle(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], fill: tuple[int, int, int]
) -> None:
    draw.ellipse(box, fill=fill)


def _draw_square(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], fill: tuple[int, int, int]
) -> None:
    draw.rectangle(box, fill=fill)


def _draw_triangle(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], fill: tuple[int, int, int]
) -> None:
    x0, y0, x1, y1 = box
    draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def _draw_cross(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], fill: tuple[int, int, int]
) -> None:
    x0, y0, x1, y1 = box
    bar = max(2, (x1 - x0) // 4)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    draw.rectangle((cx - bar // 2, y0, cx + bar // 2, y1), fill=fill)
    draw.rectangle((x0, cy - bar // 2, x1, cy + bar // 2), fill=fill)


_DRAWERS: dict[
    str, Callable[[ImageDraw.ImageDraw, tuple[int, int, int, int], tuple[int, int, int]], None]
] = {
    "circle": _draw_circle,
    "square": _draw_square,
    "triangle": _draw_triangle,
    "cross": _draw_cross,
}


def render_sample(style: ShapeStyle, size: int, rng: np.random.Generator) -> Image.Image:
    """Draws one demo image of class `style` (pure: same generator state, same image)."""
    shade = int(rng.integers(*BACKGROUND_RANGE, endpoint=True))
    noise = rng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE, size=(size, size), endpoint=True) + shade
    background = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), mode="L").convert("RGB")
    draw = ImageDraw.Draw(background)
    side = int(rng.integers(int(size * MIN_SHAPE_FRACTION), int(size * MAX_SHAPE_FRACTION), endpoint=True))
    x0 = int(rng.integers(0, size - side - 1, endpoint=True))
    y0 = int(rng.integers(0, size - side - 1, endpoint=True))
    _DRAWERS[style.name](draw, (x0, y0, x0 + side, y0 + side), _jitter(rng, style.color))
    return background


def demo_dataset_dir(root: Path, samples_per_class: int, image_size: int, seed: int) -> Path:
    """Directory where the demo dataset with these settings lives (one per distinct setting)."""
    return root / f"demo-{len(DEMO_CLASSES)}c-{samples_per_class}n-{image_size}px-s{seed}"


def generate_demo_dataset(root: Path, samples_per_class: int, image_size: int, seed: int) -> Path:
    """Writes the demo dataset under `root` unless already there; returns its directory.

    Written into a temporary sibling then renamed, so an interrupted run never leaves a half dataset that
    a later run would take for complete.

    Args:
        root: Parent directory (the release work directory's `datasets/`).
        samples_per_class: Images per class.
        image_size: Side of each square image in pixels.
        seed: Seed; the same seed gives byte-identical files.
    """
    target = demo_dataset_dir(root, samples_per_class, image_size, seed)
    if (target / COMPLETE_MARKER).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    try:
        for class_index, style in enumerate(DEMO_CLASSES):
            class_dir = staging / style.name
            class_dir.mkdir()
            rng = np.random.default_rng([seed, class_index])  # PCG64: the same images on every platform
            for sample in range(samples_per_class):
                render_sample(style, image_size, rng).save(class_dir / f"{style.name}-{sample:04d}.png")
        (staging / COMPLETE_MARKER).write_text("")
        if target.exists():
            shutil.rmtree(target)  # an incomplete leftover from an interrupted run
        try:
            staging.rename(target)
        except OSError:
            if not (target / COMPLETE_MARKER).is_file():
                raise
            shutil.rmtree(staging)  # a concurrent run finished the same dataset first
            return target
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "Generated the demo dataset (%d classes x %d images) in %s",
        len(DEMO_CLASSES),
        samples_per_class,
        target,
    )
    return target
