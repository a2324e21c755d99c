"""systemd's service notifications, fed by the inference loop (issue 22): READY=1 once the agent runs, then
WATCHDOG=1 only while inference makes progress.

A hung inference (an Edge TPU `invoke()` that never returns) used to leave the agent "running": its status and
telemetry heartbeats went on. With `WatchdogSec=` in the unit, systemd restarts a service that stops pinging;
the agent pings only when a frame was inferred since the last ping, or when the inference stage is not inside
an inference (waiting for frames or for a model): a stalled invoke stops the pings.

The protocol (sd_notify(3)): one datagram of `KEY=VALUE` lines to the unix socket in `$NOTIFY_SOCKET` (a path,
or `@name` for the abstract namespace); `$WATCHDOG_USEC` the watchdog interval, `$WATCHDOG_PID` the process
it is meant for. Without `$NOTIFY_SOCKET` (the process manager, tests) nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

PINGS_PER_INTERVAL = 4  # a ping at most every WATCHDOG_USEC / 4 (sd_watchdog_enabled(3) advises below half)
USEC_PER_S = 1_000_000


def should_ping(progress: int, progress_at_last_ping: int | None, inferring: bool) -> bool:
    """Whether the loop is alive: frames were inferred since the last ping, or no inference is under way.

    Args:
        progress: frames inferred plus frames failed so far.
        progress_at_last_ping: `progress` at the last ping (None: none yet).
        inferring: the inference stage is inside an inference now.
    """
    return not inferring or progress_at_last_ping is None or progress > progress_at_last_ping


def send(socket_address: str, message: str) -> None:
    """One notification datagram to `socket_address` (`@name`: the abstract namespace).

    Raises:
        OSError: the socket is not there or refuses the datagram.
    """
    address = "\0" + socket_address[1:] if socket_address.startswith("@") else socket_address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(message.encode(), address)


@dataclass
class SystemdNotifier:
    """Notifications of one agent process; every method is a no-op without a notify socket."""

    socket_address: str | None
    watchdog_interval_s: float | None = None
    _last_ping: float | None = field(default=None, init=False)
    _progress_at_last_ping: int | None = field(default=None, init=False)
    _failed: bool = field(default=False, init=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> SystemdNotifier:
        """The notifier systemd's environment describes (`WATCHDOG_PID` of another process: no watchdog)."""
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        interval = int(usec) / USEC_PER_S if usec.isdigit() and int(usec) > 0 and mine else None
        return cls(environ.get("NOTIFY_SOCKET") or None, interval)

    def _send(self, message: str) -> None:
        if self.socket_address is None:
            return
        try:
            send(self.socket_address, message)
        except OSError as error:  # never fatal: systemd's timeout says the rest
            if not self._failed:
                log.warning("cannot notify systemd at %s: %s", self.socket_address, error)
            self._failed = True

    def ready(self) -> None:
        """The agent runs (its first model loaded, when there is one): `systemctl start` returns."""
        self._send("READY=1\nSTATUS=running")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def tick(self, progress: int, inferring: bool, now: float | None = None) -> bool:
        """Pings the watchdog when the loop is alive (`should_ping`) and a ping is due; returns whether it did."""
        if self.socket_address is None or self.watchdog_interval_s is None:
            return False
        now = time.monotonic() if now is None else now
        due = self._last_ping is None or now - self._last_ping >= self.watchdog_interval_s / PINGS_PER_INTERVAL
        if not due or not should_ping(progress, self._progress_at_last_ping, inferring):
            return False
        self._send("WATCHDOG=1")
        self._last_ping, self._progress_at_last_ping = now, progress
        return True
