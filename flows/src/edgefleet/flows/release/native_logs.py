"""TensorFlow's native log lines, kept out of a terminal: `native_logs_to(path)`.

TensorFlow 2.19+ logs through C++ absl before anything calls `absl::InitializeLog()`, so every message goes to
stderr whatever TF_CPP_MIN_LOG_LEVEL says (tensorflow/tensorflow#100442): at import ("oneDNN custom operations
are on"), while training ("NodeDef mentions attribute ..."), converting ("fully_quantize: 0, ..."), and
LiteRT's "Created TensorFlow Lite XNNPACK delegate". Inside `native_logs_to(path)` the process's stderr (file
descriptor 2, where C++ writes) goes through a filter: those lines go to `path`, every other line (Python
tracebacks, Prefect's and edgefleet's logs) to the terminal as before. absl-py's Python logger is held to
errors as well.

`native_line` (which lines are TensorFlow's) is a pure function; the rest is the plumbing.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STDERR_FD = 2
READ_CHUNK = 65536
DRAIN_TIMEOUT_S = 5.0  # longest wait for the lines written inside to reach the terminal
_NATIVE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] "  # absl / glog: I0000 00:00:17.1 123 port.cc:153]
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\] "  # TensorFlow's own format (older builds)
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|fully_quantize: \d"  # the TFLite converter's quantizer
    rb"|INFO: Created TensorFlow Lite \w+ delegate)"  # LiteRT
)


def native_line(line: bytes) -> bool:
    """Whether `line` is one of TensorFlow's (or LiteRT's) native log lines."""
    return _NATIVE.match(line) is not None


class _Splitter:
    """Reads the pipe that stands in for stderr; native lines to the log, the rest to the real stderr. It owns
    both ends it reads and writes: a child process started inside may hold the pipe past the block, and its
    lines still reach the terminal until it ends."""

    def __init__(self, read_fd: int, terminal_fd: int, log: Path, marker: bytes) -> None:
        self.read_fd, self.terminal_fd, self.log, self.marker = read_fd, terminal_fd, log, marker
        self.drained = threading.Event()  # set when the marker came through: everything before it is out

    def run(self) -> None:
        pending = b""
        with self.log.open("ab") as log:
            while chunk := os.read(self.read_fd, READ_CHUNK):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._route(line + b"\n", log)
            if pending:
                self._route(pending, log)
        os.close(self.read_fd)
        os.close(self.terminal_fd)
        self.drained.set()

    def _route(self, line: bytes, log) -> None:  # noqa: ANN001 - a binary file
        if line == self.marker:
            self.drained.set()
        elif native_line(line):
            log.write(line)
            log.flush()
        else:
            os.write(self.terminal_fd, line)


@contextmanager
def native_logs_to(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Inside: TensorFlow's native log lines go to `path` (appended), the rest of stderr where it went."""
    log = Path(path)
    log.parent.mkdir(parents=True, exist_ok=True)
    absl_logger = logging.getLogger("absl")
    absl_level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    sys.stderr.flush()
    terminal_fd = os.dup(STDERR_FD)
    read_fd, write_fd = os.pipe()
    marker = f"edgefleet-native-logs-drained-{os.getpid()}-{read_fd}\n".encode()
    splitter = _Splitter(read_fd, terminal_fd, log, marker)
    threading.Thread(target=splitter.run, name="native-logs", daemon=True).start()
    os.dup2(write_fd, STDERR_FD)
    os.close(write_fd)
    try:
        yield log
    finally:
        sys.stderr.flush()
        os.write(STDERR_FD, marker)  # after everything written inside, through the same pipe
        os.dup2(terminal_fd, STDERR_FD)
        splitter.drained.wait(DRAIN_TIMEOUT_S)
        absl_logger.setLevel(absl_level)
