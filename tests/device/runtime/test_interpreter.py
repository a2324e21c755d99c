"""Opening models: inspection, the Edge TPU decision, and the errors of bad models."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.device.runtime.interpreter import (
    check_device,
    cpu_twin_name,
    edgetpu_present,
    inspect_model,
    load_model,
    make_interpreter,
)
from edgefleet.device.runtime.tflite_file import (
    BUILTIN_CUSTOM,
    FlatbufferError,
    custom_ops,
    read_operator_codes,
)
from edgefleet.kernel.errors import ConfigError, ModelError, NoEdgeTpuError

MOBILENET_V2 = "mobilenet_v2_1.0_224_quant.tflite"
EDGETPU_MODEL = "mobilenet_v1_0.25_128_quant_edgetpu.tflite"


def test_inspect_reports_the_input_spec_and_output(coral_data):
    info = inspect_model(coral_data / MOBILENET_V2)

    assert info.input.shape == (1, 224, 224, 3)
    assert info.input.dtype == "uint8"
    assert info.input.quantization.scale == pytest.approx(1 / 128)
    assert info.input.quantization.zero_point == 128
    assert [o.shape for o in info.outputs] == [(1, 1001)]
    assert info.needs_edgetpu is False and info.custom_ops == ()
    assert info.size == (coral_data / MOBILENET_V2).stat().st_size
    assert len(info.sha256) == 64


def test_edgetpu_model_is_detected_from_its_operator_codes(coral_data):
    assert inspect_model(coral_data / EDGETPU_MODEL).needs_edgetpu is True
    assert inspect_model(coral_data / "mobilenet_v1_0.25_128_quant.tflite").needs_edgetpu is False


@pytest.mark.parametrize("name", [MOBILENET_V2, EDGETPU_MODEL, "model_invoking_error.tflite",
                                  "mobilenet_v2_1.0_224_inat_bird_quant.tflite"])
def test_operator_code_reader_agrees_with_the_litert_schema(coral_data, name):
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    data = (coral_data / name).read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    expected = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        custom = code.CustomCode()
        expected.append((max(code.DeprecatedBuiltinCode(), code.BuiltinCode()),
                         custom.decode() if custom else None, code.Version()))

    assert [tuple(c) for c in read_operator_codes(data)] == expected


def test_custom_ops_are_only_custom_codes(coral_data):
    codes = read_operator_codes((coral_data / "model_invoking_error.tflite").read_bytes())
    assert custom_ops(codes) == ("fake-op-double",)
    assert all(c.builtin_code == BUILTIN_CUSTOM for c in codes if c.custom_code)


def test_reader_refuses_offsets_outside_the_buffer(coral_data):
    data = (coral_data / EDGETPU_MODEL).read_bytes()
    with pytest.raises(FlatbufferError):
        read_operator_codes(data[:64])


def test_edgetpu_model_without_tpu_names_both_fixes(coral_data):
    with pytest.raises(NoEdgeTpuError) as caught:
        load_model(coral_data / EDGETPU_MODEL, library="libedgetpu-not-installed.so.1")

    error = caught.value
    assert "No Edge TPU detected" in error.message and EDGETPU_MODEL in error.message
    assert "attach a Coral USB Accelerator" in error.fix
    assert "mobilenet_v1_0.25_128_quant.tflite" in error.fix
    assert isinstance(error.__cause__, OSError)


def test_edgetpu_model_on_forced_cpu_is_refused(coral_data):
    with pytest.raises(NoEdgeTpuError, match="CPU was asked for"):
        load_model(coral_data / EDGETPU_MODEL, device="cpu")


def test_asking_for_an_edge_tpu_that_is_absent_fails_even_for_a_cpu_model(coral_data):
    with pytest.raises(NoEdgeTpuError, match="device 'usb:0'") as caught:
        load_model(coral_data / MOBILENET_V2, device="usb:0", library="libedgetpu-not-installed.so.1")
    assert "device 'cpu'" in caught.value.fix


def test_no_edgetpu_library_means_no_tpu():
    assert edgetpu_present(library="libedgetpu-not-installed.so.1") is False


def test_cpu_model_runs_on_the_cpu(coral_data):
    loaded = load_model(coral_data / MOBILENET_V2)
    assert loaded.backend == "cpu"
    interpreter = make_interpreter(coral_data / MOBILENET_V2)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.zeros((1, 224, 224, 3), np.uint8))
    interpreter.invoke()
    assert interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).shape == (1, 1001)


def test_model_with_unresolved_op_names_it(coral_data):
    with pytest.raises(ModelError) as caught:
        load_model(coral_data / "model_invoking_error.tflite")
    assert "fake-op-double" in caught.value.message
    assert "model_invoking_error.tflite" in caught.value.message
    assert "fake-op-double" in caught.value.fix
    assert isinstance(caught.value.__cause__, RuntimeError)


# Keep the cut before the last ~22 kB: that is a zip of labels appended after the flatbuffer (TFLite
# metadata), which the interpreter never reads, so cutting into it leaves a model that runs correctly.
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_truncated_model_is_a_model_error_naming_the_file(coral_data, tmp_path, keep):
    data = (coral_data / MOBILENET_V2).read_bytes()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(data[: int(len(data) * keep)])

    with pytest.raises(ModelError) as caught:
        load_model(truncated)
    assert str(truncated) in caught.value.message
    assert "re-download" in caught.value.fix
    assert caught.value.__cause__ is not None


def test_random_bytes_are_a_model_error(tmp_path):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError, match="garbage.tflite"):
        inspect_model(garbage)


def test_missing_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        inspect_model(tmp_path / "nope.tflite")


@pytest.mark.parametrize("device, expected", [(None, None), ("auto", None), ("cpu", "cpu"), ("usb", "usb"),
                                              ("usb:1", "usb:1"), ("pci:0", "pci:0"), (":0", ":0")])
def test_device_names(device, expected):
    assert check_device(device) == expected


@pytest.mark.parametrize("device", ["gpu", "usb0", "usb:", "pci:x", ""])
def test_unknown_device_is_a_config_error(device):
    with pytest.raises(ConfigError, match="unknown inference device"):
        check_device(device)


def test_cpu_twin_name(tmp_path):
    assert cpu_twin_name(tmp_path / "ssd_edgetpu.tflite") == "ssd.tflite"
    assert cpu_twin_name(tmp_path / "plain.tflite") == "plain.tflite"
