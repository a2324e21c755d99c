"""Classification on real models: Coral's known answers, int8 and float inputs, labels."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.device.runtime.adapters.classify import Class, get_classes, get_classes_from_scores
from edgefleet.device.runtime.adapters.common import input_size, set_input
from edgefleet.device.runtime.adapters.labels import check_label_count, parse_labels, read_label_file
from edgefleet.device.runtime.config import RuntimeConfig
from edgefleet.device.runtime.engine import Engine
from edgefleet.device.runtime.interpreter import make_interpreter
from edgefleet.device.runtime.preprocess import load_image, resize
from edgefleet.kernel.errors import LabelsError, ModelError

MOBILENET_V2 = "mobilenet_v2_1.0_224_quant.tflite"
INAT_BIRD = "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
# The README's answers were computed with an exact LANCZOS resize.
README_RESIZE = RuntimeConfig(resample="lanczos", reducing_gap=None)
QUANT_STEP = 1 / 256  # output scale of both classifiers
# Pillow 11 (the last release for Python 3.9) resizes LANCZOS a little differently from Pillow 13: on the bird
# model that moves the top score by 3 quantization steps (0.785 instead of 0.797), the class stays.
SCORE_TOLERANCE = 3 * QUANT_STEP + 1e-3


# (model, labels, image, top-1 id, top-1 label, README score)
KNOWN_ANSWERS = [
    (MOBILENET_V2, "imagenet_labels.txt", "cat.bmp", 286, "Egyptian cat", 0.746),
    (MOBILENET_V2, "imagenet_labels.txt", "parrot.jpg", 89, "macaw", 0.996),
    (MOBILENET_V2, "imagenet_labels.txt", "grace_hopper.bmp", 653, "military uniform", 0.918),
    (INAT_BIRD, "inat_bird_labels.txt", "parrot.jpg", 923, "Ara macao (Scarlet Macaw)", 0.797),
]


@pytest.mark.parametrize("model, labels, image, top_id, top_label, score", KNOWN_ANSWERS)
def test_known_answers_with_the_readme_resize(coral_data, model, labels, image, top_id, top_label, score):
    with Engine.open(coral_data / model, labels_path=coral_data / labels, top_k=3,
                     config=README_RESIZE) as engine:
        result = engine.infer(engine.prepare(load_image(coral_data / image)))

    top = result.results[0]
    assert (top.id, top.label) == (top_id, top_label)
    assert top.score == pytest.approx(score, abs=SCORE_TOLERANCE)
    assert [r.score for r in result.results] == sorted((r.score for r in result.results), reverse=True)
    assert result.latency_ms > 0


@pytest.mark.parametrize("model, labels, image, top_id, top_label, score", KNOWN_ANSWERS)
def test_known_answers_with_the_fast_default_resize(coral_data, model, labels, image, top_id, top_label,
                                                     score):
    """The loop's cheap filter changes scores a little, never the answer."""
    with Engine.open(coral_data / model, labels_path=coral_data / labels) as engine:
        top = engine.infer(engine.prepare(load_image(coral_data / image))).results[0]
    assert (top.id, top.label) == (top_id, top_label)
    assert top.score == pytest.approx(score, abs=0.15)


def test_coral_cat_test_through_pycoral_style_adapters(coral_data):
    """Coral's own test: class 286 with score >= 0.7, via make_interpreter/set_input/get_classes."""
    interpreter = make_interpreter(coral_data / MOBILENET_V2)
    image = resize(load_image(coral_data / "cat.bmp"), input_size(interpreter), README_RESIZE)
    set_input(interpreter, image)
    interpreter.invoke()

    classes = get_classes(interpreter, top_k=1, score_threshold=0.7)
    assert [c.id for c in classes] == [286]
    assert classes[0].score >= 0.7


def _solid(width: int, height: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)).copy()


COLOUR_IMAGES = [((230, 20, 10), 0), ((15, 200, 40), 1), ((10, 30, 250), 2), ((200, 60, 240), 2)]


@pytest.mark.parametrize("kind", ["classifier_float", "classifier_int8"])
@pytest.mark.parametrize("rgb, expected", COLOUR_IMAGES)
def test_int8_and_float_inputs_classify_through_set_input(tiny_models, kind, rgb, expected):
    interpreter = make_interpreter(getattr(tiny_models, kind))
    dtype = interpreter.get_input_details()[0]["dtype"]
    assert dtype == (np.int8 if kind == "classifier_int8" else np.float32)

    set_input(interpreter, _solid(*input_size(interpreter), rgb))
    interpreter.invoke()

    classes = get_classes(interpreter, top_k=3)
    assert classes[0].id == expected
    assert sum(c.score for c in classes) == pytest.approx(1.0, abs=0.02)  # dequantized softmax


@pytest.mark.parametrize("kind", ["classifier_float", "classifier_int8"])
def test_int8_and_float_inputs_through_the_engine_from_any_frame_size(tiny_models, kind):
    with Engine.open(getattr(tiny_models, kind), labels_path=tiny_models.colour_labels, top_k=1) as engine:
        tensor = engine.prepare(_solid(64, 48, (20, 30, 220)))
        assert tensor.dtype == np.dtype(engine.info.input.dtype)
        result = engine.infer(tensor)
    assert [(r.id, r.label) for r in result.results] == [(2, "blue")]


def test_unquantized_pixels_would_misclassify_int8(tiny_models):
    """Guards the conversion: feeding raw pixel bytes reinterpreted as int8 gives a different answer."""
    interpreter = make_interpreter(tiny_models.classifier_int8)
    raw = _solid(*input_size(interpreter), (230, 20, 10)).view(np.int8)  # 230 -> -26: "not red"
    set_input(interpreter, raw)
    interpreter.invoke()
    assert get_classes(interpreter, top_k=1)[0].id != 0


def test_get_classes_from_scores_orders_and_thresholds():
    scores = np.array([0.1, 0.5, 0.05, 0.3, 0.05], np.float32)
    assert get_classes_from_scores(scores, top_k=3) == [Class(1, 0.5), Class(3, pytest.approx(0.3)),
                                                        Class(0, pytest.approx(0.1))]
    assert [c.id for c in get_classes_from_scores(scores, top_k=5, score_threshold=0.2)] == [1, 3]
    assert len(get_classes_from_scores(scores, top_k=50)) == 5


def test_labels_id_is_line_index(coral_data):
    labels = read_label_file(coral_data / "imagenet_labels.txt")
    assert len(labels) == 1001
    assert labels[0] == "background" and labels[286] == "Egyptian cat"


def test_labels_accept_pycoral_id_lines():
    assert parse_labels("0  person\n2 car\n5: dog\n") == {0: "person", 2: "car", 5: "dog"}
    # A file that is not entirely "id label" lines keeps line indices (labels may start with digits).
    assert parse_labels("cat\n7 eleven\n") == {0: "cat", 1: "7 eleven"}


def test_labels_count_mismatch_names_both_numbers_and_the_file(coral_data):
    with pytest.raises(LabelsError) as caught:
        Engine.open(coral_data / MOBILENET_V2, labels_path=coral_data / "inat_bird_labels.txt")
    message = caught.value.message
    assert "965" in message and "1001" in message and "inat_bird_labels.txt" in message


def test_labels_with_gaps_do_not_match(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("0 a\n1 b\n3 d\n")
    with pytest.raises(LabelsError, match="3 labels"):
        check_label_count(read_label_file(path), 3, path)


@pytest.mark.parametrize("content, match", [(b"0 a\n0 b\n", "appears twice"),
                                            (b"\xff\xfe\x00bad", "cannot be read"),
                                            (b"", "empty")])
def test_bad_labels_files(tmp_path, content, match):
    path = tmp_path / "labels.txt"
    path.write_bytes(content)
    with pytest.raises(LabelsError, match=match):
        read_label_file(path)


def test_missing_labels_file(tmp_path):
    with pytest.raises(LabelsError, match="does not exist"):
        read_label_file(tmp_path / "labels.txt")


def test_wrong_tensor_is_a_model_error(coral_data):
    with Engine.open(coral_data / MOBILENET_V2) as engine:
        with pytest.raises(ModelError, match="does not fit"):
            engine.infer(np.zeros((1, 128, 128, 3), np.uint8))
        assert engine.labels is None
        assert engine.infer(engine.prepare(np.zeros((10, 10, 3), np.uint8))).results[0].label == ""


def test_closed_engine_refuses_to_run(coral_data):
    engine = Engine.open(coral_data / MOBILENET_V2)
    tensor = engine.prepare(np.zeros((10, 10, 3), np.uint8))
    engine.close()
    engine.close()
    with pytest.raises(ModelError, match="closed"):
        engine.infer(tensor)
