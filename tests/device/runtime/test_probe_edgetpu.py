"""The Edge TPU probe: the delegate, an interpreter and one invoke in a child process, against stand-ins for a
libedgetpu that works, segfaults, hangs, fails to load, or is not there (tests/device/conftest.py).

The model is Coral's CPU MobileNet v1: the stand-in's delegate claims no nodes, so what the probe exercises is
exactly the path that crashes with a mismatched libedgetpu: delegate loaded, interpreter created with it
(the delegate's Prepare runs), one invoke.
"""

from __future__ import annotations

import os

from edgefleet.device.runtime.probe import locate_library, probe_edgetpu, runtime_version

MODEL = "mobilenet_v1_0.25_128_quant.tflite"
HANG_TIMEOUT_S = 3.0


def test_a_working_delegate_passes_the_probe(standin_library, tpu, coral_data):
    outcome = probe_edgetpu(coral_data / MODEL, device="usb:0", library=standin_library)

    assert (outcome.ok, outcome.cause, outcome.fix) == (True, "ok", None)
    assert outcome.detail == "edgetpu:usb:0 ran one invoke"


def test_a_delegate_that_segfaults_is_a_crash_with_the_matching_build_as_fix(standin_library, tpu,
                                                                             coral_data):
    tpu("segv")

    outcome = probe_edgetpu(coral_data / MODEL, library=standin_library)

    assert (outcome.ok, outcome.cause) == (False, "crash")
    assert "SIGSEGV" in outcome.detail and MODEL in outcome.detail
    assert runtime_version() in outcome.fix and "libedgetpu" in outcome.fix
    assert "inference.edgetpu_library" in outcome.fix
    assert outcome.summary().startswith("edgetpu_unavailable (crash): ")


def test_a_delegate_that_hangs_is_killed_after_the_timeout(standin_library, tpu, coral_data):
    tpu("hang")

    outcome = probe_edgetpu(coral_data / MODEL, library=standin_library, timeout_s=HANG_TIMEOUT_S)

    assert (outcome.ok, outcome.cause) == (False, "hang")
    assert "killed" in outcome.detail and f"{HANG_TIMEOUT_S:g} s" in outcome.detail
    assert "USB 3" in outcome.fix and runtime_version() in outcome.fix


def test_a_library_that_fails_to_load_is_an_error_naming_the_symbol(unloadable_library, tpu, coral_data):
    outcome = probe_edgetpu(coral_data / MODEL, library=unloadable_library)

    assert (outcome.ok, outcome.cause) == (False, "error")
    assert "undefined symbol: edgetpu_symbol_of_another_build" in outcome.detail
    assert runtime_version() in outcome.fix  # a build for another system: the matching build is the fix


def test_a_missing_library_is_an_error_that_says_install_it(tmp_path, coral_data):
    missing = str(tmp_path / "libedgetpu.so.1")

    outcome = probe_edgetpu(coral_data / MODEL, library=missing)

    assert (outcome.ok, outcome.cause) == (False, "error")
    assert "not found" in outcome.detail
    assert "libedgetpu1-std" in outcome.fix and missing in outcome.fix


def test_no_tpu_attached_is_an_error_with_the_delegates_message(standin_library, tpu, coral_data,
                                                                monkeypatch):
    monkeypatch.setenv("STANDIN_EDGETPU_DEVICES", "")

    outcome = probe_edgetpu(coral_data / MODEL, device="usb", library=standin_library)

    assert (outcome.ok, outcome.cause) == (False, "error")
    assert "Failed to open device" in outcome.detail and "device 'usb'" in outcome.detail
    assert "attach a Coral" in outcome.fix


def test_the_library_is_found_by_path_and_by_name_on_the_loader_path(standin_library, tmp_path, monkeypatch):
    assert str(locate_library(standin_library)) == standin_library
    assert locate_library(str(tmp_path / "libedgetpu.so.1")) is None
    monkeypatch.setenv("LD_LIBRARY_PATH", os.path.dirname(standin_library))
    assert str(locate_library("libedgetpu.so.1")) == standin_library
