"""A libedgetpu installed while the agent runs (review of issue 22, item 1).

The agent loads libedgetpu at start (`Agent.__init__` -> `edgetpu_present`), and a process keeps the build it
loaded: dlopen of the same name returns the library already mapped, whatever file is at that path now. The
probe's outcomes are kept per (file, mtime), so after a crashing build is replaced by the matched one, the next
version is probed in a child that loads the NEW file; when it passes, opening the TPU in this process would run
the OLD build, the one that crashed. The stand-ins here are two real builds of the stand-in libedgetpu: one
with a compiled-in segfault (a build for another runtime) and one without, installed over it as apt does
(a new file renamed over the old).

The scenario runs in a child Python (on the unfixed code that child dies of SIGSEGV, which must not take
pytest with it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

MODEL = "mobilenet_v2_1.0_224_quant.tflite"
CHILD_TIMEOUT_S = 600  # generous: loaded CI machines; nothing here is timed

AGENT_WITHOUT_RESTART = r"""
import json, os, sys
from edgefleet.device.runtime.interpreter import edgetpu_present, load_model
from edgefleet.device.runtime.tpu_access import EdgeTpuAccess
from edgefleet.kernel.errors import NoEdgeTpuError

library, model, new_build = sys.argv[1:4]
result = {"present": edgetpu_present(library=library)}  # what Agent.__init__ does: this build is now loaded
access = EdgeTpuAccess()
result["first"] = access.outcome(model, device=None, library=library, timeout_s=300).cause
os.replace(new_build, library)  # the matched build installed; the agent not restarted
second = access.outcome(model, device=None, library=library, timeout_s=300)
result["second"] = second.model_dump()
result["probes"] = access.probes
try:
    load_model(model, library=library, edgetpu=True)  # in this process: the build it loaded at start
    result["opened_in_process"] = True
except NoEdgeTpuError as error:
    result["refused"] = error.message
result["present_after"] = edgetpu_present(library=library)
print(json.dumps(result))
"""

RESTARTED_AGENT = r"""
import json, sys
from edgefleet.device.runtime.interpreter import edgetpu_present, load_model
library, model = sys.argv[1:3]
present = edgetpu_present(library=library)
loaded = load_model(model, library=library, edgetpu=True)
print(json.dumps({"present": present, "backend": loaded.backend}))
"""


def _run(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                          timeout=CHILD_TIMEOUT_S, stdin=subprocess.DEVNULL)


@pytest.fixture
def upgrade(tmp_path: Path, build_standin, monkeypatch: pytest.MonkeyPatch):
    """The crashing build installed, the matched build ready to go over it, one TPU attached, one lock dir."""
    monkeypatch.delenv("STANDIN_EDGETPU_FAULT", raising=False)
    (tmp_path / "installed").mkdir()
    (tmp_path / "matched").mkdir()
    crashing = build_standin(tmp_path / "installed", "-DSTANDIN_BUILD_FAULT=\"segv\"")
    matched = build_standin(tmp_path / "matched")
    env = {**os.environ, "STANDIN_EDGETPU_DEVICES": "usb:0", "STANDIN_EDGETPU_LOCK_DIR": str(tmp_path)}
    env.pop("STANDIN_EDGETPU_FAULT", None)
    return crashing, matched, env


def test_a_build_installed_without_a_restart_is_not_opened_in_the_process_that_loaded_the_old(upgrade,
                                                                                             coral_data):
    library, matched, env = upgrade
    done = _run(AGENT_WITHOUT_RESTART, library, str(coral_data / MODEL), matched, env=env)

    assert done.returncode != -signal.SIGSEGV, "the process opened the TPU with the crashing build it loaded"
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["present"] is True and result["first"] == "crash"
    second = result["second"]
    assert second["ok"] is False and "restart" in second["fix"] and "deploy-agent" in second["fix"]
    assert "changed since this process loaded it" in second["detail"]
    assert result["probes"] == 1  # no child for a build this process cannot use
    assert "opened_in_process" not in result and "restart" in result["refused"]
    assert result["present_after"] is False


def test_a_restart_takes_the_new_build(upgrade, coral_data):
    library, matched, env = upgrade
    os.replace(matched, library)
    done = _run(RESTARTED_AGENT, library, str(coral_data / MODEL), env=env)

    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"present": True, "backend": "edgetpu"}
