"""The evaluation's accuracy maths: overall and per class, float and int8."""

from __future__ import annotations

from edgefleet.flows.release.evaluate import ClassAccuracy, accuracy, per_class_accuracy


def test_accuracy_maths() -> None:
    import numpy as np

    truth = np.array([0, 0, 1, 1])
    assert accuracy(np.array([0, 1, 1, 1]), truth) == 0.75
    rows = per_class_accuracy(("x", "y"), truth, np.array([0, 0, 1, 0]), np.array([1, 0, 1, 1]))
    assert rows == (ClassAccuracy("x", 2, 1.0, 0.5), ClassAccuracy("y", 2, 0.5, 1.0))
