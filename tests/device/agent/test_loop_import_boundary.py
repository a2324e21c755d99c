"""The device/pipeline boundary, as the running agent sees it: `edgefleet-agent run` in pull mode, started the way
a device starts it (the console script), follows a registry channel, pulls and runs a model, and exits on SIGTERM.

What the process had loaded when it exited is read from its own `sys.modules` (an `atexit` hook around the real
console script), and must hold none of the pipeline side: no `edgefleet.flows.*` (the registry writer, the
bundle builder, the flows), `edgefleet.monitor`, `edgefleet.infra`, `edgefleet.local`, `edgefleet.cli`; and no
loaded module may define a registry write operation (publishing, moving or signing a channel, writing records
or device keys), wherever it lives.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgefleet.flows.registry import open_registry_writer
from edgefleet.kernel.contracts.status import read_status

AGENT = Path(sys.executable).with_name("edgefleet-agent")
MODEL = "imagenet"
PIPELINE_PACKAGES = ("edgefleet.flows", "edgefleet.monitor", "edgefleet.infra", "edgefleet.local", "edgefleet.cli")
REGISTRY_WRITE_NAMES = frozenset({
    "publish_version", "promote", "set_channel", "resign_channel", "put_json", "register_device_key",
    "sign_pointer", "next_counter", "open_registry_writer",
})
"""Names the registry's write side defines (methods and functions); none may be defined by a loaded module."""
WAIT_S = 180

# Runs the real console script in this process, and at exit writes what the process loaded: every module, and
# every name (function, class, class attribute) defined by a loaded edgefleet module.
RECORDER = """
import atexit, json, runpy, sys

out, script = sys.argv[1], sys.argv[2]

def record():
    defined = {}
    for name, module in sorted(sys.modules.items()):
        if not name.startswith("edgefleet") or module is None:
            continue
        names = set()
        for attribute, value in list(vars(module).items()):
            if getattr(value, "__module__", None) != name:
                continue
            names.add(attribute)
            if isinstance(value, type):
                names.update(vars(value))
        defined[name] = sorted(names)
    with open(out, "w") as handle:
        json.dump({"modules": sorted(sys.modules), "defined": defined}, handle)

atexit.register(record)
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
"""


def _agent_config(releases, registry: Path) -> Path:
    return releases.agent_config(f"registry:\n  uri: {registry}\n  channel: stable\n  poll_interval_s: 0.2\n"
                                 "status:\n  interval_s: 0.2\ntelemetry:\n  mode: every\n  summary_interval_s: 1.0\n")


def _run_agent_until_it_runs_the_pulled_model(releases, config: Path, record: Path) -> None:
    log = releases.tmp / "agent.log"  # a file, not a pipe: an unread pipe that fills would block the agent
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", RECORDER, str(record), str(AGENT), "run", "--config",
                                    str(config)], stdout=out, stderr=subprocess.STDOUT)
    status_file = releases.root / "status.json"
    try:
        deadline = time.monotonic() + WAIT_S
        status = None
        while time.monotonic() < deadline and process.poll() is None:
            status = read_status(status_file) if status_file.exists() else None
            if status is not None and status.version == "1.0.0" and status.frames > 3:
                break
            time.sleep(0.2)
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        assert status is not None and status.version == "1.0.0" and status.frames > 3, status
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT_S) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_running_agent_loads_nothing_of_the_pipeline_side(releases):
    registry_dir = releases.tmp / "registry"
    registry = open_registry_writer(registry_dir, create=True)
    registry.publish_version(MODEL, "1.0.0", releases.build("1.0.0"))
    registry.promote(MODEL, "1.0.0", "stable", by="test", signing_key=releases.private_key)
    record = releases.tmp / "loaded.json"

    _run_agent_until_it_runs_the_pulled_model(releases, _agent_config(releases, registry_dir), record)

    loaded = json.loads(record.read_text())
    modules = set(loaded["modules"])
    # the agent really ran in pull mode on the registry reader (else the rest proves nothing)
    assert {"edgefleet.device.agent.loop", "edgefleet.device.pull", "edgefleet.device.registry.local"} <= modules
    pipeline = sorted(name for name in modules if name.startswith(PIPELINE_PACKAGES))
    assert pipeline == [], f"the agent loaded pipeline modules: {pipeline}"
    writers = {name: sorted(REGISTRY_WRITE_NAMES.intersection(names))
               for name, names in loaded["defined"].items() if REGISTRY_WRITE_NAMES.intersection(names)}
    assert writers == {}, f"the agent loaded the registry's write side: {writers}"
