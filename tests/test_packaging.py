"""The device install stays light: no TensorFlow, Prefect, Pulumi or Fabric, and the agent runs without them.

Checked two ways: the declared dependencies of the `device` extra (from the installed metadata), and a real
import of every device module plus `edgefleet-agent --help` in a Python where those packages cannot be
imported at all.
"""

from __future__ import annotations

import importlib.metadata
import pkgutil
import re
import subprocess
import sys

import edgefleet.device
import edgefleet.kernel

HEAVY = ("tensorflow", "tensorflow-cpu", "keras", "prefect", "pulumi", "pulumi-gcp", "fabric", "torch")

BLOCKER = r"""
import importlib.abc, sys
HEAVY = {heavy!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{{name}} must not be needed on a device")
sys.meta_path.insert(0, Block())
"""


def _requirement_names(extra: str | None) -> set[str]:
    names = set()
    for requirement in importlib.metadata.requires("edgefleet") or []:
        marker = re.search(r'extra\s*==\s*"([^"]+)"', requirement)
        if (marker.group(1) if marker else None) == extra:
            names.add(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower())
    return names


def test_the_device_extra_declares_nothing_heavy():
    device = _requirement_names("device") | _requirement_names(None)
    assert {"ai-edge-litert", "google-cloud-pubsub", "pydantic-settings", "cryptography"} <= device
    assert not device & set(HEAVY)


def test_every_device_module_imports_and_the_agent_cli_runs_without_heavy_packages():
    modules = [info.name for package in (edgefleet.kernel, edgefleet.device)
               for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
    assert "edgefleet.device.agent.loop" in modules and "edgefleet.device.telemetry.service" in modules
    script = BLOCKER.format(heavy=tuple(name.replace("-", "_") for name in HEAVY)) + f"""
import importlib
for name in {modules!r}:
    importlib.import_module(name)
from edgefleet.device.cli import app
app(["--help"], prog_name="edgefleet-agent", standalone_mode=False)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "edgefleet-agent" in result.stdout
