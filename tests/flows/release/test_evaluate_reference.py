"""The release's reference distributions: what the canary analysis compares the field with."""

from __future__ import annotations

import numpy as np

from edgefleet.flows.release.evaluate import reference_distributions
from edgefleet.kernel.contracts import distributions as d


def test_the_reference_is_the_int8_models_class_mix_and_scores_on_the_held_out_split() -> None:
    predicted = np.array([0, 0, 1, 2, 2, 2])
    scores = np.array([0.99, 0.97, 0.51, 0.88, 0.9, 0.2])
    reference = reference_distributions(predicted, scores)
    assert reference.samples == 6 and reference.split == "held-out"
    assert reference.distributions.class_counts() == {0: 2, 1: 1, 2: 3}
    assert reference.distributions.score_counts() == {
        d.score_bucket(0.99): 2, d.score_bucket(0.51): 1, d.score_bucket(0.88): 1, d.score_bucket(0.9): 1,
        d.score_bucket(0.2): 1}
    assert reference.distributions.latency == []  # the release machine is not a device


def test_the_calibration_counts_the_int8_models_right_answers_per_telemetry_score_bucket() -> None:
    from edgefleet.flows.release.evaluate import calibration_counts

    predicted = np.array([0, 0, 1, 2, 2, 2])
    truth = np.array([0, 1, 1, 2, 2, 0])
    scores = np.array([0.99, 0.97, 0.51, 0.98, 0.52, 0.2])
    table = calibration_counts(predicted, scores, truth)
    high, middle, low = d.score_bucket(0.99), d.score_bucket(0.51), d.score_bucket(0.2)
    assert (table.images[high], table.correct[high]) == (3, 2)  # 0.97, 0.98, 0.99 share the top bucket
    assert (table.images[middle], table.correct[middle]) == (2, 2)
    assert (table.images[low], table.correct[low]) == (1, 0)
    assert sum(table.images) == 6


def _manifest(**fields):  # noqa: ANN202
    from edgefleet.kernel.contracts.manifest import Manifest, TensorSpec

    spec = TensorSpec(name="in", shape=(1, 2), dtype="uint8")
    return Manifest(model="birds", version="1.0.3", files=(), variants={"cpu": "model_cpu.tflite"}, input=spec,
                    outputs=(spec,), labels_file=None, **fields)


def test_manifest_schema_3_carries_the_calibration_and_readers_still_take_schema_2() -> None:
    import pytest
    from pydantic import ValidationError

    from edgefleet.kernel.contracts.manifest import MANIFEST_SCHEMA, MANIFEST_SCHEMA_V3, Calibration, Manifest

    table = Calibration(images=(0,) * 19 + (10,), correct=(0,) * 19 + (9,))
    plain = _manifest()
    assert plain.schema_ == MANIFEST_SCHEMA  # without a table a release stays readable by schema 2 agents
    calibrated = plain.with_calibration(table)
    assert calibrated.schema_ == MANIFEST_SCHEMA_V3
    assert Manifest.model_validate_json(calibrated.to_json_bytes()).calibration == table
    assert Manifest.model_validate_json(plain.to_json_bytes()) == plain
    with pytest.raises(ValidationError, match="calibration needs schema edgefleet.manifest/3"):
        _manifest(calibration=table)
    with pytest.raises(ValidationError, match="0 <= correct <= images"):
        Calibration(images=(1,) * 20, correct=(2,) + (0,) * 19)
