"""systemd's watchdog is fed by inference progress (issue 22): a hung invoke() used to keep the agent "running"
(status and telemetry heartbeats went on), so systemd never restarted it.

The notify socket is a real unix datagram socket, as systemd's; the agent finds it through NOTIFY_SOCKET and
WATCHDOG_USEC as under a `Type=notify` unit with `WatchdogSec=`.
"""

from __future__ import annotations

import os
import socket
import threading

import pytest

from edgefleet.device.agent.loop import Agent
from edgefleet.device.agent.watchdog import SystemdNotifier, should_ping

from .test_loop import agent_config, wait_until

WATCHDOG_USEC = 1_000_000  # a ping at most every 0.25 s: the loop's status check interval
FRAMES_BEFORE_STALL = 5
QUIET_WAIT_S = 3.0  # how long a stalled agent is watched: a dozen ping intervals, each ping a failure


class NotifySocket:
    """A datagram socket like systemd's notify socket, recording every message received."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self._sock.settimeout(0.1)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                self.messages.append(self._sock.recv(4096).decode())
            except socket.timeout:
                continue

    def count(self, line: str) -> int:
        return sum(line in message.splitlines() for message in list(self.messages))

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    sock = NotifySocket(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    yield sock
    sock.close()


def test_a_stalled_invoke_stops_the_watchdog_pings_and_they_resume_with_frames(releases, notify_socket,
                                                                             monkeypatch):
    from edgefleet.device.runtime.engine import Engine

    releases.install("1.0.0", "mobilenet_v1_0.25_128_quant.tflite")
    real_infer = Engine.infer
    calls, stalled, release = [], threading.Event(), threading.Event()

    def infer_then_hang(self, tensor, image_size=None):  # the Edge TPU's invoke() that does not return
        calls.append(1)
        if len(calls) == FRAMES_BEFORE_STALL + 1:
            stalled.set()
            release.wait()
        return real_infer(self, tensor, image_size)

    monkeypatch.setattr(Engine, "infer", infer_then_hang)
    agent = Agent(agent_config(releases))
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_until(lambda: notify_socket.count("READY=1") == 1, "READY=1")
        wait_until(stalled.is_set, "the stalled invoke")
        wait_until(lambda: notify_socket.count("WATCHDOG=1") >= 1, "a ping while frames progressed")
        pings_at_stall = notify_socket.count("WATCHDOG=1")
        threading.Event().wait(QUIET_WAIT_S)
        # At most one ping for the frames inferred just before the stall; none after, while heartbeats go on.
        assert notify_socket.count("WATCHDOG=1") <= pings_at_stall + 1
        assert agent.stats.frames == FRAMES_BEFORE_STALL
        pings_stalled = notify_socket.count("WATCHDOG=1")
        release.set()
        wait_until(lambda: notify_socket.count("WATCHDOG=1") > pings_stalled, "pings once frames progress again")
    finally:
        release.set()
        stop.set()
        runner.join(30)
    assert notify_socket.count("STOPPING=1") == 1


def test_an_agent_waiting_for_frames_or_a_model_keeps_pinging():
    assert should_ping(progress=7, progress_at_last_ping=7, inferring=False)
    assert should_ping(progress=8, progress_at_last_ping=7, inferring=True)
    assert should_ping(progress=0, progress_at_last_ping=None, inferring=True)
    assert not should_ping(progress=7, progress_at_last_ping=7, inferring=True)


def test_pings_are_spaced_within_the_interval_and_only_for_this_process(tmp_path):
    sock = NotifySocket(str(tmp_path / "n.sock"))
    try:
        notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": sock.path, "WATCHDOG_USEC": "4000000"})
        assert [notifier.tick(1, False, now) for now in (0.0, 0.5, 1.0, 1.9, 2.0)] == [True, False, True, False, True]
        wait_until(lambda: sock.count("WATCHDOG=1") == 3, "3 pings")
        other = SystemdNotifier.from_environment({"NOTIFY_SOCKET": sock.path, "WATCHDOG_USEC": "4000000",
                                                  "WATCHDOG_PID": str(os.getpid() + 1)})
        assert other.watchdog_interval_s is None and not other.tick(1, False, 0.0)
    finally:
        sock.close()


def test_without_a_notify_socket_nothing_is_sent_and_a_vanished_socket_is_not_fatal(tmp_path):
    assert not SystemdNotifier.from_environment({}).tick(1, False, 0.0)
    gone = SystemdNotifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "absent.sock"), "WATCHDOG_USEC": "1"})
    gone.ready()
    assert gone.tick(1, False, 0.0)  # sent as far as the agent knows: systemd's own timeout acts
