"""An Edge TPU delegate that crashes, hangs or fails cannot take the agent down (issue 12).

The agent probes the release's edgetpu variant in a child process before it loads libedgetpu itself; these
tests run the real agent loop with a libedgetpu stand-in that segfaults or hangs at interpreter creation
(tests/device/conftest.py). Were the library loaded in-process first, the segfault would kill this test run.
"""

from __future__ import annotations

import pytest

from edgefleet.device.agent.config import load_config
from edgefleet.device.agent.loop import Agent
from edgefleet.device.agent.swap import EdgeTpuUnavailableError, choose_device
from edgefleet.device.runtime.probe import ProbeOutcome
from edgefleet.kernel.contracts.manifest import FileEntry, Manifest, TensorSpec
from edgefleet.kernel.contracts.status import AgentStatus, read_status
from edgefleet.kernel.errors import ConfigError

from .test_loop import MODEL, running, wait_until

HANG_TIMEOUT_S = 3.0


def tpu_agent_config(releases, library: str, **inference: object):
    extra = "".join(f"  {key}: {value}\n" for key, value in inference.items())
    return load_config(releases.agent_config(f"inference:\n  edgetpu_library: {library}\n{extra}"
                                             "swap:\n  watch_interval_s: 0.1\nstatus:\n  interval_s: 0.2\n"))


def status_after_frames(releases, library: str, what: str) -> AgentStatus:
    """Installs 1.0.0 with an Edge TPU variant, runs the agent with `library` until it inferred 3 frames."""
    releases.install("1.0.0", edgetpu_variant=True)
    agent = Agent(tpu_agent_config(releases, library))
    with running(agent):
        wait_until(lambda: agent.stats.frames >= 3, what)
    return read_status(releases.root / "status.json")


def test_a_working_edgetpu_runs_the_edgetpu_variant(releases, standin_library, tpu):
    status = status_after_frames(releases, standin_library, "frames on the Edge TPU")
    assert (status.variant, status.backend, status.edgetpu_unavailable) == ("edgetpu", "edgetpu", None)


def test_a_delegate_that_segfaults_leaves_the_agent_running_the_cpu_variant(releases, standin_library, tpu):
    tpu("segv")
    status = status_after_frames(releases, standin_library, "frames on the CPU variant")
    assert (status.variant, status.backend, status.version) == ("cpu", "cpu", "1.0.0")
    assert "edgetpu_unavailable (crash)" in status.edgetpu_unavailable
    assert "SIGSEGV" in status.edgetpu_unavailable and "fix:" in status.edgetpu_unavailable
    assert releases.store.refusals(MODEL) == []


def test_a_hanging_delegate_with_the_tpu_required_idles_and_says_why(releases, standin_library, tpu):
    tpu("hang")
    releases.install("1.0.0", edgetpu_variant=True)
    agent = Agent(tpu_agent_config(releases, standin_library, require_edgetpu="true",
                                   probe_timeout_s=HANG_TIMEOUT_S))
    with running(agent):
        wait_until(lambda: "require_edgetpu" in (agent.status().last_error or ""), "the idle reason")
    status = read_status(releases.root / "status.json")
    assert status.frames == 0 and status.version is None
    assert "edgetpu_unavailable (hang)" in status.last_error
    assert "edgetpu_unavailable (hang)" in status.edgetpu_unavailable
    assert releases.store.refusals(MODEL) == []  # the release is fine: the host is not
    assert releases.store.current(MODEL).version == "1.0.0"


def test_a_library_that_fails_to_load_falls_back_to_the_cpu_variant(releases, unloadable_library, tpu):
    status = status_after_frames(releases, unloadable_library, "frames on the CPU variant")
    assert status.variant == "cpu"
    assert "undefined symbol" in status.edgetpu_unavailable


def _two_variant_manifest() -> Manifest:
    spec = TensorSpec(shape=(1, 8, 8, 3), dtype="uint8")
    files = tuple(FileEntry(name=name, sha256="0" * 64, size=1)
                  for name in ("model_cpu.tflite", "model_edgetpu.tflite"))
    return Manifest(model="m", version="1.0.0", labels_file=None, files=files,
                    variants={"cpu": "model_cpu.tflite", "edgetpu": "model_edgetpu.tflite"}, input=spec,
                    outputs=(spec,))


def _failed(*_: object, **__: object) -> ProbeOutcome:
    return ProbeOutcome(ok=False, cause="crash", detail="SIGSEGV", fix="the matching build", library="lib",
                        runtime="rt")


def test_an_unusable_tpu_falls_back_to_cpu_unless_required(releases, tmp_path):
    wanted = tpu_agent_config(releases, "libedgetpu.so.1").inference
    required = tpu_agent_config(releases, "libedgetpu.so.1", require_edgetpu="true").inference

    assert choose_device(wanted, tmp_path, _two_variant_manifest(), probe=_failed) == ("cpu", _failed())
    with pytest.raises(EdgeTpuUnavailableError, match="require_edgetpu is true") as caught:
        choose_device(required, tmp_path, _two_variant_manifest(), probe=_failed)
    assert caught.value.fix == "the matching build"


def test_the_cpu_device_never_probes(releases, tmp_path):
    inference = tpu_agent_config(releases, "libedgetpu.so.1", device="cpu").inference

    def must_not_probe(*_: object, **__: object) -> ProbeOutcome:
        raise AssertionError("probed although device is cpu")

    assert choose_device(inference, tmp_path, _two_variant_manifest(), probe=must_not_probe) == ("cpu", None)


def test_requiring_the_tpu_on_the_cpu_device_is_a_config_error(releases):
    with pytest.raises(ConfigError, match="require_edgetpu"):
        tpu_agent_config(releases, "libedgetpu.so.1", device="cpu", require_edgetpu="true")
