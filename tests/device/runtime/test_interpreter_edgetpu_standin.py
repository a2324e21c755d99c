"""The Edge TPU path (delegate loading, device selection, variant choice) against a libedgetpu stand-in.

libedgetpu and a TPU cannot exist here; `standin_libedgetpu.c` implements the real external-delegate ABI
(`tflite_plugin_create_delegate` with the "device" option) and fails like libedgetpu when no matching TPU
is attached (the `standin_library` fixture, tests/device/conftest.py). It claims no nodes, so the models
it "accelerates" run on the CPU kernels: the `edgetpu`
variant in these tests is therefore a plain CPU model file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefleet.device.runtime.config import RuntimeConfig
from edgefleet.device.runtime.engine import Engine, open_for_manifest
from edgefleet.device.runtime.interpreter import (
    edgetpu_present,
    holds_edgetpu,
    inspect_model,
    load_delegate,
    load_model,
)
from edgefleet.device.runtime.preprocess import load_image
from edgefleet.kernel.contracts.manifest import FileEntry, Manifest
from edgefleet.kernel.errors import ModelError, NoEdgeTpuError

MOBILENET_V2 = "mobilenet_v2_1.0_224_quant.tflite"


@pytest.fixture
def attached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Sets which stand-in TPUs are attached; returns a reader of the device options the stand-in got."""
    log = tmp_path / "standin.log"
    monkeypatch.setenv("STANDIN_EDGETPU_LOG", str(log))

    def attach(devices: str):
        monkeypatch.setenv("STANDIN_EDGETPU_DEVICES", devices)
        return lambda: log.read_text().splitlines() if log.exists() else []
    return attach


def test_presence_follows_the_attached_devices(standin_library, attached):
    attached("usb:0")
    assert edgetpu_present(library=standin_library)
    assert edgetpu_present("usb", library=standin_library)
    assert edgetpu_present("usb:0", library=standin_library)
    assert not edgetpu_present("pci", library=standin_library)
    assert not edgetpu_present("usb:1", library=standin_library)
    attached("")
    assert not edgetpu_present(library=standin_library)


def test_device_option_reaches_the_delegate_and_names_the_backend(standin_library, attached, coral_data):
    options = attached("pci:0,usb:0")
    config = RuntimeConfig(edgetpu_library=standin_library, top_k=1)
    with Engine.open(coral_data / MOBILENET_V2, device="usb:0", config=config) as engine:
        top = engine.infer(engine.prepare(load_image(coral_data / "cat.bmp"))).top
    assert engine.backend == "edgetpu:usb:0"
    assert options() == ["device=usb:0"]
    assert top.id == 286


def test_absent_device_is_no_edgetpu_error_with_the_delegate_message(standin_library, attached, coral_data):
    attached("usb:0")
    with pytest.raises(NoEdgeTpuError, match="device 'pci'") as caught:
        load_model(coral_data / MOBILENET_V2, device="pci", library=standin_library)
    assert isinstance(caught.value.__cause__, ValueError)
    assert "Failed to open device" in caught.value.message


def test_edgetpu_op_the_runtime_cannot_take_is_a_model_error(standin_library, attached, coral_data):
    attached("usb:0")
    with pytest.raises(ModelError, match="did not take its 'edgetpu-custom-op'") as caught:
        load_model(coral_data / "mobilenet_v1_0.25_128_quant_edgetpu.tflite", library=standin_library)
    assert "mobilenet_v1_0.25_128_quant.tflite" in caught.value.fix


def _two_variant_version(directory: Path, coral_data: Path) -> Manifest:
    for name in ("model_cpu.tflite", "model_edgetpu.tflite"):
        os.symlink(coral_data / MOBILENET_V2, directory / name)
    info = inspect_model(directory / "model_cpu.tflite")
    entry = {"sha256": info.sha256, "size": info.size}
    return Manifest(model="mnv2", version="2.0.0", labels_file=None,
                    files=(FileEntry(name="model_cpu.tflite", **entry),
                           FileEntry(name="model_edgetpu.tflite", **entry)),
                    variants={"cpu": "model_cpu.tflite", "edgetpu": "model_edgetpu.tflite"},
                    input=info.input, outputs=info.outputs)


def test_manifest_runs_the_edgetpu_variant_when_a_tpu_is_present(standin_library, attached, coral_data,
                                                                 tmp_path):
    options = attached("usb:0")
    manifest = _two_variant_version(tmp_path, coral_data)
    config = RuntimeConfig(edgetpu_library=standin_library)

    with open_for_manifest(tmp_path, manifest, device="auto", config=config) as engine:
        assert (engine.variant, engine.backend) == ("edgetpu", "edgetpu")
        assert engine.info.path.name == "model_edgetpu.tflite"
        assert engine.infer(engine.prepare(np.zeros((8, 8, 3), np.uint8))).results
    with open_for_manifest(tmp_path, manifest, device="usb:0", config=config) as engine:
        assert engine.backend == "edgetpu:usb:0"
    with open_for_manifest(tmp_path, manifest, device="cpu", config=config) as engine:
        assert (engine.variant, engine.backend) == ("cpu", "cpu")
    assert "device=usb:0" in options()


def _open_in_another_process(library: str) -> subprocess.CompletedProcess:
    """Loads the delegate (device usb:0) in a child Python, as a second process on the host would."""
    code = ("import sys\nfrom edgefleet.device.runtime.interpreter import load_delegate\n"
            "load_delegate(sys.argv[1], {'device': 'usb:0'})\n")
    return subprocess.run([sys.executable, "-c", code, library], capture_output=True, text=True, timeout=120)


def test_the_tpu_opens_in_one_process_at_a_time_like_the_real_one(standin_library, attached):
    attached("usb:0")
    held = load_delegate(standin_library, {"device": "usb:0"})
    shared = load_delegate(standin_library, {"device": "usb:0"})  # this process again: shared ownership

    second = _open_in_another_process(standin_library)
    assert second.returncode != 0
    assert f"Failed to load delegate from {standin_library}" in second.stderr  # the real (PCIe) error text
    assert f"is opening a node held by {os.getpid()}." in second.stderr  # the apex driver's kernel log line

    del held
    assert _open_in_another_process(standin_library).returncode != 0  # `shared` still holds it
    del shared
    after = _open_in_another_process(standin_library)
    assert after.returncode == 0, after.stderr  # the last delegate destroyed: the TPU is free again


def test_a_failed_load_releases_the_tpu_even_while_its_error_is_kept(standin_library, attached, coral_data):
    attached("usb:0")
    with pytest.raises(ModelError, match="did not take its 'edgetpu-custom-op'") as caught:
        load_model(coral_data / "mobilenet_v1_0.25_128_quant_edgetpu.tflite", library=standin_library)
    assert caught.value.__cause__ is not None  # the error and its cause are kept here, as a log or test keeps them
    assert not holds_edgetpu(standin_library)
    other = _open_in_another_process(standin_library)
    assert other.returncode == 0, other.stderr


def test_a_process_that_dies_holding_the_tpu_releases_it(standin_library, attached):
    attached("usb:0")
    code = ("import sys\nfrom edgefleet.device.runtime.interpreter import load_delegate\n"
            "held = load_delegate(sys.argv[1], {'device': 'usb:0'})\nprint('held', flush=True)\nsys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code, standin_library], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match="Failed to load delegate from"):  # this process is the second now
            load_delegate(standin_library, {"device": "usb:0"})
        assert not edgetpu_present("usb:0", library=standin_library)
    finally:
        holder.kill()  # SIGKILL: no destructor runs; the kernel drops the lock with the process
        holder.communicate(timeout=120)
    assert edgetpu_present("usb:0", library=standin_library)
