"""The Edge TPU delegate tried in a child process first, so that it cannot take the agent down.

Coral's packaged `libedgetpu1-std` (16.0) was built against TensorFlow 2.5; recent runtimes crash with it at
interpreter creation or at the first invoke, not at `load_delegate` (google-coral/edgetpu#731, #841,
tensorflow/tensorflow#62371; solved only by a libedgetpu rebuilt for the runtime). A segfault inside the agent
cannot be caught: under systemd it would crash-loop instead of running the CPU model. So before the agent loads
libedgetpu in-process, a child (`python -m edgefleet.device.runtime.probe`) creates the interpreter with the
delegate and the model it will serve and runs one invoke, under a timeout. A crash (signal), a hang or an error
there is an outcome, with its cause and a fix naming the library build that matches the installed runtime.

The Edge TPU opens in one process at a time, so the child cannot open a TPU the agent holds: the agent calls the
probe through `tpu_access.EdgeTpuAccess`, which never starts it while this process holds a delegate.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import json
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from edgefleet.device.runtime.config import DEFAULT_RUNTIME_CONFIG
from edgefleet.device.runtime.library_file import LIBRARY_DIRS, locate_library

Cause = Literal["ok", "crash", "hang", "error"]
DEFAULT_PROBE_TIMEOUT_S = 30.0
_ERROR_EXIT = 3
_STDERR_TAIL = 600
RUNTIME_PACKAGES = ("tflite-runtime", "ai-edge-litert")


class ProbeOutcome(BaseModel):
    """What happened when the child created the interpreter with the delegate and ran one invoke."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    cause: Cause
    detail: str
    fix: str | None = None
    library: str
    device: str | None = None
    runtime: str

    def summary(self) -> str:
        """One line for an event or a status: cause and detail."""
        return "Edge TPU usable" if self.ok else f"edgetpu_unavailable ({self.cause}): {self.detail}"


def runtime_version() -> str:
    """The interpreter package the device runs: 'tflite-runtime 2.5.0.post1' or 'ai-edge-litert 2.3.0'."""
    try:
        importlib.import_module("tflite_runtime")  # the same preference as edgefleet.device.runtime.interpreter
        names = RUNTIME_PACKAGES
    except ImportError:
        names = RUNTIME_PACKAGES[1:]
    for name in names:
        try:
            return f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "an unknown TensorFlow Lite runtime"


def matching_build_fix(library: str, runtime: str) -> str:
    """The fix for a libedgetpu that does not work with this runtime: which build goes with which."""
    return (f"install the libedgetpu built for {runtime} (Coral's libedgetpu1-std 16.0 goes only with "
            "tflite_runtime 2.5.0.post1 / TensorFlow 2.5; for newer runtimes use a libedgetpu rebuilt against "
            "the same TensorFlow version, e.g. the community builds named 'libedgetpu 16.0TF<version>'), "
            f"then point inference.edgetpu_library at it (now {library!r}); `edgefleet-agent doctor` re-checks")


def probe_edgetpu(model_path: str | Path, *, device: str | None = None,
                  library: str = DEFAULT_RUNTIME_CONFIG.edgetpu_library,
                  timeout_s: float = DEFAULT_PROBE_TIMEOUT_S) -> ProbeOutcome:
    """Creates the interpreter with the Edge TPU delegate and `model_path` in a child and runs one invoke.

    Never raises for what the delegate does: a crash, a hang (past `timeout_s`, then killed) or an error is a
    `ProbeOutcome` with ok=False, its cause and a fix.
    """
    runtime = runtime_version()
    command = [sys.executable, "-m", "edgefleet.device.runtime.probe", str(model_path), "--library", library]
    if device:
        command += ["--device", device]
    outcome = functools.partial(ProbeOutcome, library=library, device=device, runtime=runtime)
    if locate_library(library) is None:  # not installed: no child needed to know
        return outcome(
            ok=False, cause="error", detail=f"{library} not found (the loader's path, {', '.join(LIBRARY_DIRS[:2])}"
                                            ", ...)",
            fix=_error_fix({"stage": "load", "message": "cannot open shared object file"}, library, runtime))
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                               stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:  # subprocess.run has killed the child
        return outcome(
            ok=False, cause="hang",
            detail=f"{library} did not create an interpreter and run one invoke of {Path(model_path).name} "
                   f"within {timeout_s:g} s (killed)",
            fix=f"check the Edge TPU's connection and power (a USB Accelerator wants a USB 3 port), or "
                f"{matching_build_fix(library, runtime)}")
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        return outcome(
            ok=False, cause="crash",
            detail=f"{library} crashed the interpreter ({name}) with {runtime} creating it for "
                   f"{Path(model_path).name}",
            fix=matching_build_fix(library, runtime))
    report = _last_json_line(child.stdout)
    if child.returncode == 0 and report.get("ok"):
        return outcome(ok=True, cause="ok", detail=f"{report.get('backend', 'edgetpu')} ran one invoke")
    if report:
        return outcome(ok=False, cause="error", detail=str(report.get("message")),
                       fix=_error_fix(report, library, runtime))
    return outcome(
        ok=False, cause="error",
        detail=f"the probe exited {child.returncode}: {child.stderr.strip()[-_STDERR_TAIL:]}",
        fix=matching_build_fix(library, runtime))


def _error_fix(report: Mapping[str, object], library: str, runtime: str) -> str | None:
    """A library that does not load: missing (install it) or built for another system (the matching build)."""
    if report.get("stage") != "load":
        fix = report.get("fix")
        return fix if isinstance(fix, str) else None
    if "cannot open shared object file" in str(report.get("message")):
        return (f"install libedgetpu (Coral's apt package libedgetpu1-std, or the build for {runtime}), or set "
                f"inference.edgetpu_library to where it is (now {library!r})")
    return matching_build_fix(library, runtime)


def _last_json_line(text: str) -> dict[str, object]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return {}
    return {}


def _child(argv: list[str]) -> int:
    """In the child: the delegate, the interpreter, one invoke; one JSON line on stdout."""
    parser = argparse.ArgumentParser(prog="python -m edgefleet.device.runtime.probe")
    parser.add_argument("model")
    parser.add_argument("--library", default=DEFAULT_RUNTIME_CONFIG.edgetpu_library)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    import numpy as np

    from edgefleet.device.runtime.interpreter import load_model
    from edgefleet.kernel.errors import EdgefleetError

    try:
        loaded = load_model(args.model, args.device, library=args.library, edgetpu=True)
        interpreter = loaded.interpreter
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
    except EdgefleetError as error:
        stage = "load" if isinstance(error.__cause__, OSError) else "delegate"  # dlopen failed / no TPU, bad op
        _report({"ok": False, "stage": stage, "message": error.message, "fix": error.fix})
        return _ERROR_EXIT
    _report({"ok": True, "backend": loaded.backend})
    return 0


def _report(data: Mapping[str, object]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
