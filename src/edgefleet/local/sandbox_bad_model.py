"""`make sandbox-bad-model`: a deliberately bad Keras model (trained on shuffled labels) and how to release it
from release-model's form in the Prefect UI, as the form is: the model is a source of kind keras
(`source: {kind: keras, path: ...}`), whose form labels are read from the release parameters' own schema.
"""

from __future__ import annotations

from pathlib import Path

BAD_MODEL_SAMPLES, BAD_MODEL_EPOCHS = 80, 6  # as `make demo`'s bad release
KERAS_KIND = "keras"


def bad_model_instructions(path: Path) -> str:
    """What to enter in release-model's form to release the Keras model at `path` (labels from the schema)."""
    from edgefleet.flows.release.params import ReleaseParams

    schema = ReleaseParams.model_json_schema()
    keras = schema["$defs"]["KerasSource"]
    training = schema["$defs"]["TrainingParams"]["properties"]
    source, channel = schema["properties"]["source"]["title"], schema["properties"]["channel"]["title"]
    input_size = training["input_size"]
    return (f"a model trained on shuffled labels (it converts, compiles and passes the device's smoke test, but "
            f"answers wrong): {path}\n"
            f"In release-model's form: {source} = {keras['title']} with {keras['properties']['path']['title']} = "
            f"that path (in YAML: source: {{kind: {KERAS_KIND}, path: {path}}}), Training > "
            f"{input_size['title']} = {input_size['default']}, {channel} empty; then run rollout with Version = "
            "the released version: the canary analysis halts it in the first wave")


def train_bad_model(workdir: Path) -> str:
    """Trains the bad model under `workdir` (TensorFlow's native log lines to its tensorflow.log) and returns
    what to tell the user."""
    from edgefleet.flows.release.native_logs import native_logs_to

    with native_logs_to(workdir / "bad-model" / "tensorflow.log"):
        from edgefleet.demo_models import train_shuffled_labels_model

        path = train_shuffled_labels_model(workdir / "bad-model", BAD_MODEL_SAMPLES, BAD_MODEL_EPOCHS)
    return bad_model_instructions(path)
