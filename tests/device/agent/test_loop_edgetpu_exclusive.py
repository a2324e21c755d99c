"""The agent and the Edge TPU that opens in one process at a time (issue 22, item 1).

The libedgetpu stand-in is exclusive like the real part (tests/device/conftest.py): while the running agent
holds the TPU, a probe child cannot open it. A hot swap must therefore open the new version in-process on the
delegate already proven there, and a preflight `doctor` must read the agent's recorded outcome, not probe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgefleet.device.agent.config import load_config
from edgefleet.device.agent.loop import Agent
from edgefleet.kernel.contracts.status import read_status

from .test_loop import MODEL, running, sink_messages, wait_until

HOT_SWAPS = 20
FRAMES_PER_VERSION = 3


def exclusive_tpu_config(releases, library: str, *, require_edgetpu: bool = False):
    return load_config(releases.agent_config(
        f"inference:\n  edgetpu_library: {library}\n  require_edgetpu: {str(require_edgetpu).lower()}\n"
        "swap:\n  watch_interval_s: 0.1\nstatus:\n  interval_s: 0.2\n"
        "telemetry:\n  mode: every\n  summary_interval_s: 1.0\n"))


def swap_to(agent: Agent, releases, version: str, swaps: int) -> None:
    """Installs `version` (with an edgetpu variant), waits for the swap and a few frames on it."""
    releases.install(version, edgetpu_variant=True)
    wait_until(lambda: agent.watcher.swaps == swaps and agent.status().version == version, f"the swap to {version}")
    frames = agent.stats.frames
    wait_until(lambda: agent.stats.frames >= frames + FRAMES_PER_VERSION, f"frames on {version}")


def test_a_hot_swap_keeps_the_tpu_the_agent_holds(releases, standin_library, tpu):
    releases.install("1.0.0", edgetpu_variant=True)
    agent = Agent(exclusive_tpu_config(releases, standin_library))
    with running(agent):
        wait_until(lambda: agent.stats.frames >= FRAMES_PER_VERSION, "frames on 1.0.0")
        assert agent.status().backend == "edgetpu"
        swap_to(agent, releases, "1.1.0", 1)
        status = agent.status()
    assert (status.version, status.variant, status.backend) == ("1.1.0", "edgetpu", "edgetpu")
    assert status.edgetpu_unavailable is None


def test_twenty_hot_swaps_all_run_on_the_tpu_without_losing_a_frame(releases, standin_library, tpu):
    versions = ["1.0.0"] + [f"1.{minor}.0" for minor in range(1, HOT_SWAPS + 1)]
    releases.install(versions[0], edgetpu_variant=True)
    agent = Agent(exclusive_tpu_config(releases, standin_library))
    with running(agent):
        wait_until(lambda: agent.stats.frames >= FRAMES_PER_VERSION, "frames on 1.0.0")
        for swaps, version in enumerate(versions[1:], start=1):
            swap_to(agent, releases, version, swaps)
    status = read_status(releases.root / "status.json")
    assert (status.version, status.swaps, status.swap_failures, status.errors) == (versions[-1], HOT_SWAPS, 0, 0)
    inferences = [m for m in sink_messages(releases) if m.kind == "inference"]
    assert len(inferences) == status.frames == agent.captured  # 0 frames lost
    assert {m.model.version for m in inferences} == set(versions)
    assert {(m.model.variant, m.model.backend) for m in inferences} == {("edgetpu", "edgetpu")}
    assert [m.event.kind for m in sink_messages(releases) if m.kind == "event"].count("edgetpu_unavailable") == 0
    assert agent.watcher.tpu.probes == 1  # at start only, when nothing held the TPU


def doctor_in_another_process(config_path) -> dict:
    """`edgefleet-agent doctor --json` as the rollout's preflight runs it: another process on the host."""
    code = "import sys\nfrom edgefleet.device.cli import app\nsys.argv[0] = 'edgefleet-agent'\napp()\n"
    result = subprocess.run([sys.executable, "-c", code, "doctor", "--config", str(config_path), "--json"],
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    return {check["name"]: check for check in json.loads(result.stdout)["checks"]}


def test_a_preflight_doctor_during_inference_reads_the_agents_outcome_and_changes_nothing(
        releases, standin_library, tpu):
    releases.install("1.0.0", edgetpu_variant=True)
    config = exclusive_tpu_config(releases, standin_library)
    agent = Agent(config)
    with running(agent):
        wait_until(lambda: agent.stats.frames >= FRAMES_PER_VERSION, "frames on 1.0.0")
        wait_until(lambda: (read_status(config.status_path).backend or "").startswith("edgetpu"), "the status")
        libedgetpu = doctor_in_another_process(releases.tmp / "agent.yaml")["libedgetpu"]
        frames = agent.stats.frames
        wait_until(lambda: agent.stats.frames >= frames + FRAMES_PER_VERSION, "frames after the doctor run")
        status = agent.status()
    assert libedgetpu["status"] == "ok", libedgetpu
    assert f"held by the running agent (pid {os.getpid()})" in libedgetpu["detail"]
    assert "ran one invoke" in libedgetpu["detail"]  # the agent's own probe outcome, as it recorded it
    assert (status.backend, status.swaps, status.errors, status.edgetpu_unavailable) == ("edgetpu", 0, 0, None)
    assert agent.watcher.tpu.probes == 1

    stopped = doctor_in_another_process(releases.tmp / "agent.yaml")["libedgetpu"]  # nothing holds the TPU
    assert stopped["status"] == "ok" and "held by" not in stopped["detail"] and "ran one invoke" in stopped["detail"]


def test_a_tpu_another_process_took_since_the_probe_is_reported_not_claimed(releases, standin_library, tpu):
    from edgefleet.device.agent.swap import EdgeTpuUnavailableError, prepare_model
    from edgefleet.device.runtime.probe import ProbeOutcome
    from edgefleet.device.runtime.tpu_access import EdgeTpuAccess

    releases.install("1.0.0", edgetpu_variant=True)
    proven = ProbeOutcome(ok=True, cause="ok", detail="edgetpu ran one invoke", library=standin_library,
                          runtime="rt")
    access = EdgeTpuAccess(lambda *_, **__: proven)
    code = ("import sys\nfrom edgefleet.device.runtime.interpreter import load_delegate\n"
            "held = load_delegate(sys.argv[1], {'device': 'usb:0'})\nprint('held', flush=True)\nsys.stdin.read()\n")
    other = subprocess.Popen([sys.executable, "-c", code, standin_library], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    required = exclusive_tpu_config(releases, standin_library, require_edgetpu=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(EdgeTpuUnavailableError, match="another process may hold it"):
            prepare_model(required, releases.store.current(MODEL), probe=access.outcome)
        config = exclusive_tpu_config(releases, standin_library)
        active = prepare_model(config, releases.store.current(MODEL), probe=access.outcome)
    finally:
        other.kill()
        other.communicate(timeout=120)
    with active.engine:
        assert (active.engine.variant, active.edgetpu.ok, active.edgetpu.cause) == ("cpu", False, "error")
        assert "another process may hold it" in active.edgetpu.detail
