"""`make sandbox-bad-model` tells the user how to release its model from release-model's form as the form is
(it said "Training > Keras Model", `training.keras_model`, which the release refuses since the model moved to
`source: {kind: keras}`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from edgefleet.flows.release.params import ReleaseParams, TrainingParams
from edgefleet.local.sandbox_bad_model import bad_model_instructions

MODEL = Path("/tmp/sandbox/bad-model/shuffled-labels.keras")


def test_the_instructions_name_the_forms_fields_as_they_are() -> None:
    told = bad_model_instructions(MODEL)

    assert "keras_model" not in told and "Keras Model" not in told
    schema = ReleaseParams.model_json_schema()
    keras = schema["$defs"]["KerasSource"]
    assert f"{schema['properties']['source']['title']} = {keras['title']} with Path = that path" in told
    assert f"Input Size = {TrainingParams().input_size}" in told and "Channel empty" in told


def test_the_instructions_yaml_is_a_release_that_validates() -> None:
    told = bad_model_instructions(MODEL)
    (snippet,) = re.findall(r"source: \{[^}]*\}", told)

    params = ReleaseParams.model_validate({"model": "shapes", **yaml.safe_load(snippet), "channel": None})
    assert params.source.kind == "keras" and params.source.path == str(MODEL)


def test_the_old_instruction_is_refused_by_the_release() -> None:
    with pytest.raises(ValidationError, match="source: {kind: keras"):
        ReleaseParams.model_validate({"model": "shapes", "training": {"keras_model": str(MODEL)}})
