"""`edgefleet.flows.release.candidate.trained_description`: how a trained or Keras model is described (pure)."""

from __future__ import annotations

from edgefleet.flows.release.candidate import trained_description
from edgefleet.flows.release.params import ReleaseParams
from edgefleet.flows.release.train import TrainedModel

TRAINED = TrainedModel(b"", 96, 3, 0.9, "trained:small_cnn", epochs_run=7, best_epoch=5)


def test_a_trained_model_names_its_schedule_what_ran_and_the_seed() -> None:
    params = ReleaseParams(model="birds", training={"architecture": "small_cnn", "epochs": 10, "seed": 3,
                                                    "input_size": 96})
    kind, description = trained_description(params, TRAINED)
    assert kind == "trained"
    assert description == "small_cnn from scratch, 10 epochs max (ran 7, kept epoch 5), seed 3, input 96x96x3"


def test_a_keras_model_is_named_by_its_path() -> None:
    params = ReleaseParams(model="birds", source={"kind": "keras", "path": "/models/birds.keras"},
                           training={"input_size": 96})
    assert trained_description(params, TRAINED._replace(epochs_run=None)) == (
        "keras", "Keras model /models/birds.keras, input 96x96x3")
