"""A stand-in for `DeviceConnection` that runs deploy-agent's device commands on this machine with `sh -c`, as
SSH would on a device (exit codes, stdout and stderr as they are), for the steps that need no remote login."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from edgefleet.flows.fleet.connection import CommandResult, RemoteCommandError
from edgefleet.flows.fleet.inventory import DeviceSpec

COMMAND_TIMEOUT_S = 600  # creating a venv and installing wheels on a loaded machine


class LocalConnection:
    """`run`, `write_text` and `put` here; `path` first on PATH, `env` added to the environment."""

    def __init__(self, path: str | None = None, env: dict[str, str] | None = None) -> None:
        self.device = DeviceSpec(id="local-1", host="localhost", user="root", key_file=Path("/nonexistent/key"))
        self._env = {**os.environ, **(env or {})}
        if path:
            self._env["PATH"] = f"{path}:{self._env['PATH']}"
        self.commands: list[str] = []

    def run(self, command: str, *, check: bool = True, timeout_s: float | None = None) -> CommandResult:
        self.commands.append(command)
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=self._env, check=False,
                              timeout=timeout_s or COMMAND_TIMEOUT_S)
        if check and done.returncode != 0:
            raise RemoteCommandError(f"{command!r} exited {done.returncode}: {done.stderr.strip()[-500:]}",
                                     "see stderr", exit_code=done.returncode, stdout=done.stdout,
                                     stderr=done.stderr)
        return CommandResult(done.stdout, done.stderr, done.returncode)

    def write_text(self, remote: str, text: str, mode: int = 0o644) -> None:
        Path(remote).write_text(text)
        Path(remote).chmod(mode)

    def put(self, local: str | Path, remote: str) -> int:
        shutil.copyfile(local, remote)
        return Path(remote).stat().st_size
