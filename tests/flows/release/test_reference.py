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
