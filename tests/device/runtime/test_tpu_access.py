"""When the Edge TPU probe runs (issue 22): never while this process holds the TPU; an outcome kept per
(libedgetpu file + mtime, runtime version, device). Fast: a recorded probe and a set "held" flag."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgefleet.device.runtime.probe import ProbeOutcome, runtime_version
from edgefleet.device.runtime.tpu_access import EdgeTpuAccess, decide, probe_key


def outcome(cause: str = "ok") -> ProbeOutcome:
    return ProbeOutcome(ok=cause == "ok", cause=cause, detail=cause, library="lib", runtime="rt")


class Probe:
    """Records the probe children it is asked to start and answers `answer`."""

    def __init__(self, answer: ProbeOutcome) -> None:
        self.answer = answer
        self.calls: list[str] = []

    def __call__(self, model_path, **_: object) -> ProbeOutcome:
        self.calls.append(str(model_path))
        return self.answer


@pytest.fixture
def library(tmp_path: Path) -> str:
    path = tmp_path / "libedgetpu.so.1"
    path.write_bytes(b"\x7fELF")
    return str(path)


def test_the_decision():
    assert decide(True, None) == "in-process"  # never a child while this process holds the TPU
    assert decide(True, outcome("crash")) == "in-process"
    assert decide(False, None) == "probe"
    assert decide(False, outcome("ok")) == "kept"
    assert decide(False, outcome("crash")) == "kept" and decide(False, outcome("hang")) == "kept"
    assert decide(False, outcome("error")) == "probe"  # no TPU attached, or another process held it: may change


def test_while_the_tpu_is_held_no_child_is_started(library):
    probe, held = Probe(outcome("ok")), {"now": False}
    access = EdgeTpuAccess(probe, holds=lambda _: held["now"])
    first = access.outcome("v1.tflite", device=None, library=library, timeout_s=1)
    held["now"] = True
    for version in range(2, 22):
        assert access.outcome(f"v{version}.tflite", device=None, library=library, timeout_s=1) == first
    assert probe.calls == ["v1.tflite"] and access.probes == 1


def test_held_without_a_proof_is_usable_and_still_not_probed(library):
    probe = Probe(outcome("ok"))
    access = EdgeTpuAccess(probe, holds=lambda _: True)
    result = access.outcome("m.tflite", device="usb:0", library=library, timeout_s=1)
    assert result.ok and "holds the Edge TPU" in result.detail and probe.calls == []


def test_a_crash_is_kept_until_the_library_file_changes(library):
    probe = Probe(outcome("crash"))
    access = EdgeTpuAccess(probe, holds=lambda _: False)
    for _ in range(3):
        assert access.outcome("m.tflite", device=None, library=library, timeout_s=1).cause == "crash"
    assert len(probe.calls) == 1
    stat = os.stat(library)
    os.utime(library, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a new build installed
    access.outcome("m.tflite", device=None, library=library, timeout_s=1)
    assert len(probe.calls) == 2


def test_an_error_is_probed_again_once_nothing_holds_the_tpu(library):
    probe = Probe(outcome("error"))
    access = EdgeTpuAccess(probe, holds=lambda _: False)
    access.outcome("m.tflite", device=None, library=library, timeout_s=1)
    access.outcome("m.tflite", device=None, library=library, timeout_s=1)
    assert len(probe.calls) == 2


def test_the_key_names_the_file_its_mtime_the_runtime_and_device(library, tmp_path):
    link = tmp_path / "libedgetpu.so"
    link.symlink_to(library)
    key = probe_key(str(link), "usb:0", runtime_version())
    assert key is not None and key.library == library and key.device == "usb:0"
    assert key.mtime_ns == os.stat(library).st_mtime_ns and key.runtime == runtime_version()
    assert probe_key(str(tmp_path / "absent.so"), None, "rt") is None


def test_a_library_changed_since_this_process_loaded_it_means_a_restart():
    """Review of issue 22: a new build installed without a restart is not probed (this process would run the
    build it loaded); while this process holds a delegate of the loaded build, that build keeps serving."""
    assert decide(False, None, changed=True) == "restart"
    assert decide(False, outcome("ok"), changed=True) == "restart"  # an ok kept for the new file: not for us
    assert decide(True, None, changed=True) == "in-process"
