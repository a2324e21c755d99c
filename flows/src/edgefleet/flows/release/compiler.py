"""Run Google's `edgetpu_compiler`, here or on a compile host over SSH, and read back what it made.

The compiler only runs on x86-64 Linux; it is called as `edgetpu_compiler -s -o OUT_DIR model.tflite` and
writes `OUT_DIR/model_edgetpu.tflite` and `OUT_DIR/model_edgetpu.log`. A `CompilerHost` runs it (a local
subprocess, or the project's one verified SSH connection); `compile_model` turns the run into a
`CompileOutcome`, its report parsed by `edgefleet.flows.release.compiler_output`.
"""

from __future__ import annotations

import getpass
import logging
import math
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from edgefleet.flows.fleet.connection import HostConnection
from edgefleet.flows.fleet.hosts import CompileHostSpec
from edgefleet.flows.release.compile_params import CompileLocal, CompileOff, CompileSsh
from edgefleet.flows.release.compiler_output import (
    CompileError,
    CompilerNotFound,
    parse_compiler_output,
    tail,
)
from edgefleet.flows.release.params import expand
from edgefleet.kernel.contracts.manifest import CompilerReport
from edgefleet.kernel.errors import EdgefleetError

log = logging.getLogger(__name__)

EDGETPU_SUFFIX = "_edgetpu"
LOG_SUFFIX = ".log"


class CompilerRun(NamedTuple):
    """What one compiler invocation produced (files already copied to the local output directory)."""

    returncode: int
    stdout: str
    stderr: str
    output_model: Path | None
    operation_log: str | None


class CompilerHost(Protocol):
    """Where the compiler runs."""

    @property
    def description(self) -> str:
        """Names the compiler and where it runs, for messages."""
        ...

    def available(self) -> bool:
        """True when the compiler can be run there."""
        ...

    @property
    def missing_reason(self) -> str:
        """Says where the compiler was looked for, when `available()` is False."""
        ...

    def run(self, model: Path, out_dir: Path) -> CompilerRun:
        """Compiles `model`; results land in local `out_dir`."""
        ...


def output_names(model: Path) -> tuple[str, str]:
    """('model_edgetpu.tflite', 'model_edgetpu.log') for 'model.tflite': the compiler's output names."""
    stem = f"{model.stem}{EDGETPU_SUFFIX}"
    return f"{stem}{model.suffix}", f"{stem}{LOG_SUFFIX}"


def _collect(out_dir: Path, model: Path, returncode: int, stdout: str, stderr: str) -> CompilerRun:
    model_name, log_name = output_names(model)
    output = out_dir / model_name
    log_path = out_dir / log_name
    return CompilerRun(
        returncode,
        stdout,
        stderr,
        output if output.is_file() else None,
        log_path.read_text(errors="replace") if log_path.is_file() else None,
    )


@dataclass(frozen=True)
class LocalCompiler:
    """`edgetpu_compiler` on this machine, run as a subprocess."""

    compiler: str
    timeout_s: float

    @property
    def description(self) -> str:
        return f"{self.compiler} on this machine"

    @property
    def missing_reason(self) -> str:
        return f"{self.compiler} was not found on this machine (not a file, not on PATH)"

    def executable(self) -> str | None:
        return shutil.which(str(expand(self.compiler)))

    def available(self) -> bool:
        return self.executable() is not None

    def run(self, model: Path, out_dir: Path) -> CompilerRun:
        executable = self.executable()
        if executable is None:
            raise CompilerNotFound(
                f"{self.compiler} not found", "install edgetpu_compiler or set compile.compiler"
            )
        command = [executable, "-s", "-o", str(out_dir), str(model)]
        log.info("Running %s", shlex.join(command))
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise CompileError(
                f"{self.compiler} did not finish within {self.timeout_s:.0f} s",
                "raise compile.timeout_s or compile a smaller model",
            ) from error
        return _collect(out_dir, model, done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class SshCompiler:
    """`edgetpu_compiler` on a compile host (x86-64 Linux) reached over SSH.

    The connection is the fleet's one (`edgefleet.flows.fleet.connection.HostConnection` of a `CompileHostSpec`):
    the compile host's key must be in `known_hosts`; an unknown or changed key is refused, so what an impostor
    returns is never signed (issue 11, finding 2).
    """

    host: str
    compiler: str
    user: str | None
    port: int
    key_file: str | None
    timeout_s: float
    connect_timeout_s: float
    known_hosts: str = "~/.ssh/known_hosts"

    @property
    def description(self) -> str:
        target = f"{self.user}@{self.host}" if self.user else self.host
        return f"{self.compiler} on {target}:{self.port}"

    def spec(self) -> CompileHostSpec:
        """The compile host as an SSH host (its key file required: devices and compile host log in with keys).

        Raises:
            CompileError: no compile.key_file.
        """
        if not self.key_file:
            raise CompileError(f"compile host {self.description}: no compile.key_file",
                               "set compile.key_file to the SSH private key the compile host accepts")
        return CompileHostSpec(host=self.host, port=self.port, user=self.user or getpass.getuser(),
                               key_file=expand(self.key_file), command_timeout_s=self.timeout_s,
                               connect_timeout_s=max(1, math.ceil(self.connect_timeout_s)))

    def _connection(self) -> HostConnection[CompileHostSpec]:
        return HostConnection(self.spec(), expand(self.known_hosts))

    @property
    def missing_reason(self) -> str:
        target = f"{self.user}@{self.host}" if self.user else self.host
        return f"{self.compiler} was not found on compile host {target}"

    def _refused(self, error: EdgefleetError) -> CompileError:
        return CompileError(f"{self.description}: {error.message}",
                            error.fix or "check compile.host/user/port/key_file/known_hosts")

    def available(self) -> bool:
        try:
            with self._connection() as connection:
                found = connection.run(f"command -v {shlex.quote(self.compiler)}", check=False)
        except CompileError:
            raise
        except EdgefleetError as error:
            raise self._refused(error) from error
        return found.exit_code == 0

    def run(self, model: Path, out_dir: Path) -> CompilerRun:
        model_name, log_name = output_names(model)
        try:
            with self._connection() as connection:
                remote_dir = connection.run("mktemp -d").stdout.strip()
                try:
                    connection.put(model, f"{remote_dir}/{model.name}")
                    command = (
                        f"{shlex.quote(self.compiler)} -s -o {shlex.quote(remote_dir)} "
                        f"{shlex.quote(f'{remote_dir}/{model.name}')}"
                    )
                    log.info("Running on %s: %s", self.host, command)
                    done = connection.run(command, check=False, timeout_s=self.timeout_s)
                    for name in (model_name, log_name):
                        remote = f"{remote_dir}/{name}"
                        if connection.run(f"test -f {shlex.quote(remote)}", check=False).exit_code == 0:
                            connection.get(remote, out_dir / name)
                finally:
                    connection.run(f"rm -rf {shlex.quote(remote_dir)}", check=False)
        except CompileError:
            raise
        except EdgefleetError as error:
            raise self._refused(error) from error
        return _collect(out_dir, model, done.exit_code, done.stdout, done.stderr)


def compiler_host(params: CompileLocal | CompileSsh | CompileOff) -> CompilerHost | None:
    """The host `params` asks for, or None when compilation is off."""
    if isinstance(params, CompileOff):
        return None
    if not isinstance(params, CompileSsh):
        return LocalCompiler(params.compiler, params.timeout_s)
    return SshCompiler(**params.model_dump(exclude={"mode", "require"}))


class CompileOutcome(NamedTuple):
    """The Edge TPU model and its report, or why there is none.

    Attributes:
        edgetpu_tflite: Bytes of the compiled model; None when not compiled.
        report: Parsed compiler report; None when not compiled.
        skipped_reason: Why the Edge TPU variant is absent (None when compiled).
        stdout: The compiler's stdout (for the release report).
    """

    edgetpu_tflite: bytes | None
    report: CompilerReport | None
    skipped_reason: str | None
    stdout: str = ""


def compile_model(
    host: CompilerHost | None, int8_tflite: bytes, model_file_name: str, require: bool = False
) -> CompileOutcome:
    """Compiles the int8 model for the Edge TPU on `host`.

    Args:
        host: Where to compile; None when compilation is off.
        int8_tflite: The full-integer model.
        model_file_name: Name given to the model file handed to the compiler (e.g. 'model.tflite').
        require: Raise instead of skipping when the compiler is not there.

    Returns:
        The compiled model and report, or a skipped outcome saying why.

    Raises:
        CompilerNotFound: the compiler is absent and `require` is set.
        CompileError: the compiler ran and failed (non-zero exit, no output model, unreadable report).
    """
    if host is None:
        return CompileOutcome(None, None, "compilation is off (compile.mode: off)")
    if not host.available():
        reason = host.missing_reason
        if require:
            raise CompilerNotFound(
                reason,
                "install the Edge TPU compiler (x86-64 Linux: apt-get install "
                "edgetpu-compiler from packages.cloud.google.com) or use compile.mode: "
                "ssh with a compile host; or set compile.require: false",
            )
        log.warning("%s: shipping the CPU model only", reason)
        return CompileOutcome(None, None, reason)
    with tempfile.TemporaryDirectory(prefix="edgefleet-compile-") as tmp:
        work = Path(tmp)
        model = work / model_file_name
        model.write_bytes(int8_tflite)
        out_dir = work / "out"
        out_dir.mkdir()
        run = host.run(model, out_dir)
        if run.returncode != 0:
            raise CompileError(
                f"{host.description} failed with exit status {run.returncode}:\n"
                f"{tail(run.stdout + run.stderr)}",
                "read the compiler's message above; a model must be fully int8 with static shapes "
                "(see g.co/coral/model-reqs)",
            )
        if run.output_model is None:
            raise CompileError(
                f"{host.description} exited 0 but wrote no {output_names(model)[0]}",
                "check the compiler installation (run it by hand on the model)",
            )
        report = parse_compiler_output(run.stdout, run.operation_log)
        return CompileOutcome(run.output_model.read_bytes(), report, None, run.stdout)
