"""The local stack's one way to supervise a child process: ready or named with its log, stopped for sure."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from edgefleet.kernel.errors import EdgefleetError
from edgefleet.local.processes import ManagedProcess, free_port, http_status, interruptible, port_is_free, wait_until


class ToolError(EdgefleetError):
    """What the owner of a process raises."""


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (its parent was killed; whoever adopted it reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _sh(script: str, tmp_path: Path, **options) -> ManagedProcess:
    return ManagedProcess("test tool", ["sh", "-c", script], log_path=tmp_path / "tool.log", error=ToolError,
                          **options)


def test_a_free_port_is_bindable_and_a_listening_one_is_not() -> None:
    port = free_port()
    assert port_is_free("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not port_is_free("127.0.0.1", port)
    assert http_status(f"http://127.0.0.1:{free_port()}/") is None  # nothing answers


def test_exit_before_ready_is_named_with_the_logs_tail(tmp_path: Path) -> None:
    process = _sh("echo 'bind: address in use'; exit 3", tmp_path).start()
    with pytest.raises(ToolError) as caught:
        process.wait_ready(lambda: False, timeout_s=60, interval_s=0.05, fix="is the port free?")
    assert "test tool exited with status 3 before it was ready" in caught.value.message
    assert "bind: address in use" in caught.value.message
    assert str(tmp_path / "tool.log") in caught.value.fix and "is the port free?" in caught.value.fix


def test_not_ready_by_the_deadline_is_an_error_and_ready_returns(tmp_path: Path) -> None:
    process = _sh("exec sleep 60", tmp_path).start()
    try:
        with pytest.raises(ToolError) as caught:
            process.wait_ready(lambda: False, timeout_s=0.3, interval_s=0.05, waiting_for="a greeting")
        assert "not ready within" in caught.value.message and "a greeting" in caught.value.message
        marker = tmp_path / "ready"
        marker.touch()
        process.wait_ready(marker.exists, timeout_s=60, interval_s=0.05)
        process.check_alive()
    finally:
        process.stop()


def test_stop_kills_what_ignores_sigterm_and_its_children(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    process = _sh(f"trap '' TERM; sleep 300 & echo $! > {child_pid}; echo started; wait", tmp_path,
                  stop_timeout_s=0.5).start()
    process.wait_ready(lambda: child_pid.is_file() and child_pid.read_text().strip() != "", 60, 0.05)
    assert process.stop() == -signal.SIGKILL
    assert not process.running
    with pytest.raises(ToolError) as caught:
        process.check_alive()
    assert f"exited with status {-signal.SIGKILL}" in caught.value.message and "started" in caught.value.message
    child = int(child_pid.read_text())
    assert wait_until(lambda: _gone(child), timeout_s=60, interval_s=0.05)  # the group went with it
    assert process.stop() == -signal.SIGKILL  # twice is fine


def test_a_one_shot_command_gives_its_status_or_is_stopped(tmp_path: Path) -> None:
    assert _sh("exit 5", tmp_path).start().wait(60) == 5
    slow = _sh("exec sleep 300", tmp_path)
    with pytest.raises(ToolError) as caught:
        slow.start().wait(0.2)
    assert "did not finish within" in caught.value.message
    assert not slow.running


def test_a_fresh_log_replaces_the_old_one(tmp_path: Path) -> None:
    _sh("echo first", tmp_path).start().wait(60)
    _sh("echo second", tmp_path).start().wait(60)
    assert (tmp_path / "tool.log").read_text() == "first\nsecond\n"
    _sh("echo third", tmp_path, append_log=False).start().wait(60)
    assert (tmp_path / "tool.log").read_text() == "third\n"


def test_interruptible_turns_sigterm_into_an_interrupt_and_stops_once(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    stopped = []
    with pytest.raises(KeyboardInterrupt), interruptible(lambda: stopped.append(signal.getsignal(signal.SIGINT))):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert stopped == [signal.SIG_IGN]  # a second Ctrl-C could not have cut the stop short
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_interpreter_runs_as_a_managed_process(tmp_path: Path) -> None:
    process = ManagedProcess("python", [sys.executable, "-c", "import os; print(os.getcwd())"],
                             log_path=tmp_path / "py.log", cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    assert process.start().wait(60) == 0
    assert (tmp_path / "py.log").read_text().strip() == str(tmp_path)


def test_the_local_stack_starts_processes_in_one_place() -> None:
    """Every long-running child of the local stack (emulators, Prefect, sshd) goes through ManagedProcess."""
    local = Path(__file__).resolve().parents[2] / "src/edgefleet/local"
    spawning = {path.name for path in local.rglob("*.py") if "Popen(" in path.read_text()}
    assert spawning == {"processes.py"}
