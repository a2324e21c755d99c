"""`edgefleet.flows.release.bundle.variants_of`: the manifest's variants for a directory's files (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.flows.release.bundle import variants_of
from edgefleet.kernel.errors import ModelError

DIR = Path("/builds/birds/1.2.0")


def test_the_default_names_the_cpu_model_and_the_edgetpu_model_when_it_is_there() -> None:
    assert variants_of(["labels.txt", "model_cpu.tflite"], None, DIR) == {"cpu": "model_cpu.tflite"}
    assert variants_of(["model_cpu.tflite", "model_edgetpu.tflite"], None, DIR) == {
        "cpu": "model_cpu.tflite", "edgetpu": "model_edgetpu.tflite"}


def test_given_variants_are_kept_as_given() -> None:
    assert variants_of(["a.tflite", "model_edgetpu.tflite"], {"cpu": "a.tflite"}, DIR) == {"cpu": "a.tflite"}


@pytest.mark.parametrize(("names", "variants"), [
    (["model_edgetpu.tflite"], None),
    (["model_cpu.tflite"], {"edgetpu": "model_cpu.tflite"}),
    (["model_cpu.tflite"], {"cpu": "other.tflite"}),
])
def test_a_version_without_its_cpu_model_is_refused_naming_the_directory_and_the_fix(names, variants) -> None:
    with pytest.raises(ModelError) as error:
        variants_of(names, variants, DIR)
    assert str(DIR) in error.value.message and "has no CPU model" in error.value.message
    assert "every version ships a CPU model" in error.value.fix
