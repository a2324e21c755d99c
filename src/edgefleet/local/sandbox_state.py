"""What a running sandbox leaves on disk for `make sandbox-down`: `<workdir>/sandbox.json` names the sandbox's
main process, the process groups it started (emulator, Prefect server, worker) and the pids (each device's
sshd) and pid files (each device's agent). `down` stops the sandbox through it, and also cleans up after a
sandbox that was killed; it only kills a recorded pid while it still is what was recorded (its command line
says so), never a process that reused the number.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from edgefleet.device.doctor.agent_tpu import process_alive
from edgefleet.local.processes import wait_until

DOWN_WAIT_S = 90.0
SANDBOX_MODULE = "edgefleet.local.sandbox"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def down(workdir: Path, wait_s: float = DOWN_WAIT_S) -> list[str]:
    """Stops the sandbox recorded in `<workdir>/sandbox.json`: SIGTERM to its main process (which stops
    everything in order), then SIGKILL to whatever it recorded and is still alive (a killed sandbox leaves
    its devices, server and emulator behind). Returns what it had to kill."""
    state_file = workdir / "sandbox.json"
    if not state_file.is_file():
        return []
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        state = {}  # half-written: nothing we can trust to kill
    main = int(state.get("pid") or 0)
    if main and main != os.getpid() and process_alive(main) and SANDBOX_MODULE in _cmdline(main):
        os.kill(main, signal.SIGTERM)
        wait_until(lambda: not process_alive(main), timeout_s=wait_s, interval_s=0.2)
    killed = []
    for name, pgid in state.get("groups", {}).items():
        # Only a group whose leader is still the process recorded (not another that reused its pid).
        expected = "pubsub" if name == "pubsub-emulator" else "prefect"
        if process_alive(int(pgid)) and expected in _cmdline(int(pgid)):
            try:
                os.killpg(int(pgid), signal.SIGKILL)
                killed.append(name)
            except (ProcessLookupError, PermissionError):
                pass
    candidates = dict(state.get("pids", {}))
    for pid_file in state.get("agent_pid_files", []):
        try:
            candidates[f"agent {Path(pid_file).parent.parent.name}"] = int(Path(pid_file).read_text().strip())
        except (OSError, ValueError):
            pass
    for name, pid in candidates.items():
        # Only the process recorded, not another that reused its pid.
        expected = "sshd" if name.startswith("sshd") else "edgefleet-agent"
        if process_alive(int(pid)) and expected in _cmdline(int(pid)):
            os.kill(int(pid), signal.SIGKILL)
            killed.append(name)
    state_file.unlink(missing_ok=True)
    return killed


def running_sandbox(workdir: Path) -> int | None:
    """The pid of a sandbox running on `workdir` (recorded and alive), else None."""
    try:
        main = int(json.loads((workdir / "sandbox.json").read_text()).get("pid") or 0)
    except (OSError, ValueError, AttributeError):
        return None
    alive = main and main != os.getpid() and process_alive(main) and SANDBOX_MODULE in _cmdline(main)
    return main if alive else None
