"""Real model outputs for the scene-change benchmark (`bench.drift_scenes`): photographs (and the demo's shapes)
rendered under each scene condition and run through the real TFLite interpreter, as the agent runs them.

For every scene image and condition, `VARIANTS` frames are rendered with the jitter of a live camera (a random
crop of 80-100% of the image, brightness x N(1, 0.08), sensor noise SD 4), then the condition:

| condition | what the camera sees                                                                     |
|-----------|------------------------------------------------------------------------------------------|
| normal    | the jittered frame                                                                       |
| night     | darkened to 20% of its brightness, with the sensor noise of a dark frame (SD 6)          |
| fog       | 60% of a uniform light grey (200) over the frame, blurred (Gaussian radius 2)            |
| moved     | the camera moved and zoomed: a crop of 35-50% of the image from one of its corners         |

Each frame goes through the device runtime's preprocessing (`Preprocessor`: resize to the model's input,
its quantization) and its CPU interpreter (`load_model`, ai-edge-litert / tflite_runtime, whichever the
runtime picks), and the top-1 class and score are read as the classification adapter reads them
(`get_scores`): what the agent's telemetry accumulates. A shuffled-labels model is the normal condition's
outputs with the class ids permuted (its scores are the good model's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from edgefleet.device.runtime.adapters.classify import get_scores
from edgefleet.device.runtime.adapters.common import set_input
from edgefleet.device.runtime.interpreter import load_model
from edgefleet.device.runtime.preprocess import Preprocessor

CONDITIONS = ("normal", "night", "fog", "moved")
PHOTOS = ("parrot.jpg", "grace_hopper.bmp", "bird.bmp", "cat.bmp")
MODEL_FILE = "mobilenet_v1_0.25_128_quant.tflite"
DEFAULT_DATA = Path("/work/shared/coral-test-data")
VARIANTS = 200
DEMO_SIZE = 224
SCENE_SIDE = 256
CROP_RANGE = (0.8, 1.0)
MOVED_CROP_RANGE = (0.35, 0.5)
BRIGHTNESS_SD = 0.08
NOISE_SD = 4.0
NIGHT_LEVEL = 0.2
NIGHT_NOISE_SD = 6.0
FOG_SHARE = 0.6
FOG_GREY = 200.0
FOG_BLUR = 2.0


@dataclass(frozen=True)
class Bank:
    """Top-1 outputs: `classes` and `scores` of shape (scenes, conditions, VARIANTS); `brightness` (the jitter's
    factor of each variant) orders the variants by light level."""

    scenes: tuple[str, ...]
    classes: np.ndarray
    scores: np.ndarray
    brightness: np.ndarray
    model: str


def data_dir() -> Path:
    return Path(os.environ.get("EDGEFLEET_CORAL_TEST_DATA", DEFAULT_DATA))


def scene_images(kind: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The scenes: the real photographs, or one image of each demo shape (`flows.release.demo_dataset`)."""
    if kind == "photos":
        images = {name: Image.open(data_dir() / name).convert("RGB") for name in PHOTOS}
        for image in images.values():
            image.thumbnail((SCENE_SIDE, SCENE_SIDE))  # the camera's frame size: rendering cost, not the model's
        return {name: np.asarray(image) for name, image in images.items()}
    from edgefleet.flows.release.demo_dataset import DEMO_CLASSES, render_sample

    return {style.name: np.asarray(render_sample(style, DEMO_SIZE, rng)) for style in DEMO_CLASSES}


def _crop(rng: np.random.Generator, image: np.ndarray, low: float, high: float, corner: bool) -> np.ndarray:
    height, width = image.shape[:2]
    share = rng.uniform(low, high)
    h, w = max(8, int(height * share)), max(8, int(width * share))
    if corner:
        y0, x0 = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w)][int(rng.integers(4))]
    else:
        y0, x0 = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    return image[y0:y0 + h, x0:x0 + w]


def render(rng: np.random.Generator, image: np.ndarray, condition: str, brightness: float) -> np.ndarray:
    """One camera frame of `image` under `condition` (uint8 RGB)."""
    moved = condition == "moved"
    frame = _crop(rng, image, *(MOVED_CROP_RANGE if moved else CROP_RANGE), corner=moved).astype(float)
    frame = frame * brightness + rng.normal(0, NOISE_SD, frame.shape)
    if condition == "night":
        frame = frame * NIGHT_LEVEL + rng.normal(0, NIGHT_NOISE_SD, frame.shape)
    elif condition == "fog":
        frame = FOG_SHARE * FOG_GREY + (1 - FOG_SHARE) * frame
    out = np.clip(frame, 0, 255).astype(np.uint8)
    if condition == "fog":
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(FOG_BLUR)))
    return out


def make_bank(rng: np.random.Generator, kind: str, variants: int = VARIANTS, model: str = MODEL_FILE) -> Bank:
    """Every scene under every condition, `variants` frames each, through the real interpreter."""
    loaded = load_model(data_dir() / model, device="cpu")
    preprocess = Preprocessor(loaded.info.input)
    images = scene_images(kind, rng)
    shape = (len(images), len(CONDITIONS), variants)
    classes, scores = np.zeros(shape, dtype=np.int64), np.zeros(shape)
    brightness = rng.normal(1.0, BRIGHTNESS_SD, shape)
    for s, image in enumerate(images.values()):
        for c, condition in enumerate(CONDITIONS):
            for v in range(variants):
                set_input(loaded.interpreter, preprocess(render(rng, image, condition, brightness[s, c, v])))
                loaded.interpreter.invoke()
                out = get_scores(loaded.interpreter)
                classes[s, c, v] = int(np.argmax(out))
                scores[s, c, v] = float(out[classes[s, c, v]])
    return Bank(tuple(images), classes, scores, brightness, model)
