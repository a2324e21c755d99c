"""The demo's deliberately bad model: a Keras model trained on shuffled labels.

It converts, quantizes, compiles and passes the device's smoke test like any model (its golden outputs are
its own), so only the canary analysis can tell that it answers wrong: the demo releases it through the
ordinary `source: {kind: keras, path}` release (no fault switch in the release parameters) and shows the rollout's
first wave catch it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np


def train_shuffled_labels_model(workdir: Path, samples_per_class: int, epochs: int, seed: int = 3) -> Path:
    """Trains the release flow's own default architecture on the demo dataset with its training labels
    shuffled; returns the `.keras` file."""
    from edgefleet.flows.release.dataset import load_dataset
    from edgefleet.flows.release.demo_dataset import generate_demo_dataset
    from edgefleet.flows.release.params import DatasetParams, TrainingParams
    from edgefleet.flows.release.train import train

    dataset_params = DatasetParams(source="demo", demo_samples_per_class=samples_per_class)
    training = TrainingParams(epochs=epochs, seed=seed)
    root = generate_demo_dataset(workdir / "datasets", samples_per_class, dataset_params.demo_image_size,
                                 dataset_params.seed)
    dataset = load_dataset(root, training.input_size, dataset_params.eval_fraction, dataset_params.seed)
    shuffled = np.random.default_rng(seed).permutation(dataset.train_y)
    trained = train(dataclasses.replace(dataset, train_y=shuffled), training)
    path = workdir / "shuffled-labels.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(trained.keras_bytes)
    return path
