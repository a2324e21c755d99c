"""Child processes of the local stack, supervised one way: spawned in a session of their own with a log file,
waited for with a probe and a deadline, stopped with SIGTERM then SIGKILL, and named with their log's tail
when they fail.

Used by the emulators, the local Prefect stack (`edgefleet ui`, `make demo`), the sandbox and the browser
tests' fixtures:

    server = ManagedProcess("Prefect server", argv, log_path=logs / "server.log", error=UiError).start()
    server.wait_ready(lambda: http_status(health_url) == 200, timeout_s=180)
    ...
    server.stop()
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay, wait_fixed

from edgefleet.kernel.errors import EdgefleetError

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 30
LOOPBACK = "127.0.0.1"
T = TypeVar("T")


def free_port(host: str = LOOPBACK) -> int:
    """Returns a TCP port on `host` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def accepts_connections(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when something listens on host:port (a TCP connect succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        return sock.connect_ex((host, port)) == 0


def http_status(url: str, timeout_s: float = 2.0) -> int | None:
    """The HTTP status `url` answers with (an error status too), or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:  # URLError, refused, reset, timed out
        return None


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file (empty when there is none)."""
    if path is None or not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(probe: Callable[[], T], done: Callable[[T], bool] = bool, *, timeout_s: float,
               interval_s: float) -> T:
    """Calls `probe` every `interval_s` until `done(result)` holds or `timeout_s` has passed; returns the last
    result either way (the caller decides what a timeout means). An exception of `probe` ends the wait."""
    retrying = Retrying(stop=stop_after_delay(timeout_s), wait=wait_fixed(interval_s),
                        retry=retry_if_result(lambda result: not done(result)),
                        retry_error_callback=_last_result)
    return retrying(probe)


def _last_result(state: RetryCallState) -> object:
    """The last attempt's result (tenacity calls this only after an attempt, so there is one)."""
    assert state.outcome is not None
    return state.outcome.result()


def stop_process_group(process: subprocess.Popen, timeout_s: float, first: int = signal.SIGTERM) -> int | None:
    """`first` (SIGTERM) to the process group of `process`, SIGKILL after `timeout_s`; returns the exit status."""
    if process.poll() is not None:
        return process.returncode
    for signum in (first, signal.SIGKILL):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("process %d did not stop within %.0f s after signal %d", process.pid, timeout_s, signum)
    return process.poll()


@dataclass
class ManagedProcess:
    """One child process: its own session (Ctrl-C in the terminal reaches only its parent, which stops the
    group in order), stdout and stderr to `log_path`, errors of type `error` that quote the log's tail.

    `start()` spawns (again, after a stop), `wait_ready()` waits for a probe, `wait()` for the exit of a
    one-shot command, `check_alive()` raises when it has exited, `stop()` ends its group (safe twice).
    """

    name: str
    argv: Sequence[str]
    log_path: Path | None = None
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    stop_timeout_s: float = 20.0
    stop_signal: int = signal.SIGTERM
    append_log: bool = True
    error: type[EdgefleetError] = EdgefleetError
    popen: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited, else None (also when never started)."""
        return self.popen.poll() if self.popen is not None else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)

    def start(self) -> ManagedProcess:
        if self.running:
            return self
        out = open(self.log_path, "ab" if self.append_log else "wb") if self.log_path else None  # noqa: SIM115
        try:
            self.popen = subprocess.Popen(
                list(self.argv), env=dict(self.env) if self.env is not None else None, cwd=self.cwd,
                stdin=subprocess.DEVNULL, stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()  # the child has its own copy
        log.debug("started %s (pid %d): %s", self.name, self.popen.pid, " ".join(self.argv))
        return self

    def _failure(self, message: str, fix: str | None) -> EdgefleetError:
        tail = self.tail()
        where = f"see {self.log_path}" if self.log_path else "run it by hand to see its output"
        return self.error(f"{message}:\n{tail}" if tail else message, f"{where}; {fix}" if fix else where)

    def check_alive(self, fix: str | None = None) -> None:
        """Raises `error` (with the log's tail) when the process has exited or never started."""
        if self.popen is None:
            raise self._failure(f"the {self.name} never started", fix)
        if self.popen.poll() is not None:
            raise self._failure(f"the {self.name} exited with status {self.popen.returncode}", fix)

    def wait_ready(self, probe: Callable[[], bool], timeout_s: float, interval_s: float = 0.1,
                   waiting_for: str = "", fix: str | None = None) -> None:
        """Returns once `probe()` is true; raises `error` (with the log's tail) when the process exits first
        or `timeout_s` passes."""

        def alive_and_ready() -> bool:
            if self.popen is None or self.popen.poll() is not None:
                raise self._failure(f"the {self.name} exited with status {self.returncode} before it was ready",
                                    fix)
            return probe()

        if not wait_until(alive_and_ready, timeout_s=timeout_s, interval_s=interval_s):
            what = f" ({waiting_for})" if waiting_for else ""
            raise self._failure(f"the {self.name} was not ready within {timeout_s:.0f} s{what}", fix)
        log.info("%s ready (pid %d)", self.name, self.pid)

    def wait(self, timeout_s: float) -> int:
        """The exit status of a one-shot command; stops it and raises `error` when it runs past `timeout_s`
        (or when the wait is interrupted, re-raising that)."""
        assert self.popen is not None, "start() first"
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise self._failure(f"the {self.name} did not finish within {timeout_s:.0f} s", None) from None
        except BaseException:
            self.stop()
            raise

    def stop(self) -> int | None:
        """Ends the process group (`stop_signal`, SIGKILL after `stop_timeout_s`); returns the exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            log.info("stopping %s (pid %d)", self.name, self.popen.pid)
        return stop_process_group(self.popen, self.stop_timeout_s, self.stop_signal)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def interruptible(stop: Callable[[], object]):
    """Inside, SIGINT and SIGTERM raise KeyboardInterrupt (a shell that starts us in the background ignores
    SIGINT, and an ignored signal would be inherited by the children); on leaving, `stop()` runs with both
    ignored, so a second Ctrl-C cannot cut it short; then the previous handlers come back."""
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        try:
            stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
