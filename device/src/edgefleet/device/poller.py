"""Pull mode's thread: `ChannelPoller` runs `edgefleet.device.pull.pull_channel_once` every `interval_s` seconds.

Errors: registry and store problems that may pass (network down, emulator restarting, a lock held) are
*transient*: the poller logs them and tries again at the next interval. Anything else is *unexpected*: it
is logged with its traceback and counted, and polling continues.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import NamedTuple

from edgefleet.device.pull import PullResult, pull_channel_once
from edgefleet.device.registry.base import RegistryReader
from edgefleet.device.store import ModelStore
from edgefleet.device.window import MaintenanceWindow
from edgefleet.kernel.errors import EdgefleetError, RegistryError, StoreError
from edgefleet.kernel.trust.signatures import PublicKeyLike

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (RegistryError, StoreError, OSError)
"""Errors a poll may hit that can pass by themselves (the next poll tries again)."""


def poll_delay(interval_s: float, jitter: float, draw: float) -> float:
    """The wait before the next poll: `interval_s` times a factor spread evenly over [1 - jitter, 1 + jitter]
    (`draw` in [0, 1)), so a fleet started together does not poll together. Pure."""
    return interval_s * (1.0 + jitter * (2.0 * draw - 1.0))


class PollerStatus(NamedTuple):
    """Counters and the last result of a `ChannelPoller` (for the agent's status file)."""

    polls: int
    changes: int
    refusals: int
    transient_errors: int
    unexpected_errors: int
    last_result: PullResult | None
    last_error: str | None
    last_poll_at: datetime | None


class ChannelPoller:
    """Calls `pull_channel_once` on a background thread every `interval_s` seconds.

    Callbacks run on the poller thread; an exception in one is logged and does not stop polling.

    Args:
        registry, store, model, channel, public_key: as for `pull_channel_once`.
        interval_s: seconds between polls.
        on_change: called with the PullResult when a new version was activated.
        on_refusal: called with the PullResult when a version was refused, or when the channel pointer was
            refused or expired (`result.pointer_problem`; once per distinct problem, not at every poll).
        require_signed: refuse unsigned (schema 1) channel pointers (default; False: the transition setting).
        device_id: this device's id (chooses its side of a staged rollout's share).
        window: the maintenance window outside which nothing is activated (None: any time).
        jitter: each wait is `interval_s` times a random factor in [1 - jitter, 1 + jitter] (`poll_delay`).
        shadow: the agent runs shadow candidates: follow a staged rollout's shadow share (`pull_channel_once`);
            a refused candidate is reported through `on_refusal` as a refused version.
        on_error: called with (exception, transient) when a poll failed.
        stop_timeout_s: how long `stop()` waits for a running poll.

    Example:
        with ChannelPoller(registry, store, "birds", "stable", on_change=reload_model) as poller:
            ...  # polls until the block ends
    """

    def __init__(
        self,
        registry: RegistryReader,
        store: ModelStore,
        model: str,
        channel: str,
        public_key: PublicKeyLike | None = None,
        *,
        interval_s: float = 30.0,
        on_change: Callable[[PullResult], None] | None = None,
        on_refusal: Callable[[PullResult], None] | None = None,
        on_error: Callable[[BaseException, bool], None] | None = None,
        on_thread_start: Callable[[], None] | None = None,
        stop_timeout_s: float = 10.0,
        require_signed: bool = True,
        device_id: str | None = None,
        window: MaintenanceWindow | None = None,
        jitter: float = 0.0,
        shadow: bool = False,
    ) -> None:
        self.registry = registry
        self.device_id = device_id
        self.window = window
        self.jitter = jitter
        self.shadow = shadow
        self._random = random.Random()
        self.require_signed = require_signed
        self.store = store
        self.model = model
        self.channel = channel
        self.public_key = public_key
        self.interval_s = interval_s
        self.stop_timeout_s = stop_timeout_s
        self.on_change = on_change
        self.on_thread_start = on_thread_start  # e.g. the agent lowers the polling thread's priority
        self.on_refusal = on_refusal
        self.on_error = on_error
        self._status = PollerStatus(0, 0, 0, 0, 0, None, None, None)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ChannelPoller:
        """Starts polling (the first poll happens at once)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"pull-{self.model}-{self.channel}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops polling and waits for a running poll (up to `stop_timeout_s`)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.stop_timeout_s)
            if self._thread.is_alive():
                log.warning(
                    "pull poller for %s/%s still busy after %.0f s; left to finish in the background",
                    self.model,
                    self.channel,
                    self.stop_timeout_s,
                )

    def poll_now(self) -> None:
        """Wakes the poller for an immediate poll (instead of waiting for the interval)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> PollerStatus:
        """A snapshot of the counters and the last result."""
        with self._lock:
            return self._status

    def run_once(self) -> PullResult | None:
        """One poll with the poller's error handling; returns None when it failed."""
        try:
            result = pull_channel_once(
                self.registry,
                self.store,
                self.model,
                self.channel,
                self.public_key,
                require_signed=self.require_signed,
                device_id=self.device_id,
                window=self.window,
                shadow=self.shadow,
            )
        except TRANSIENT_ERRORS as error:
            message = error.message if isinstance(error, EdgefleetError) else str(error)
            log.warning(
                "pull %s/%s from %s failed (will retry in %.0f s): %s",
                self.model,
                self.channel,
                self.registry.uri,
                self.interval_s,
                message,
            )
            self._record(None, message, transient=True)
            self._callback(self.on_error, error, True)
            return None
        except Exception as error:  # noqa: BLE001 - a poller must survive bugs; they are logged and counted
            log.exception(
                "unexpected error pulling %s/%s from %s", self.model, self.channel, self.registry.uri
            )
            self._record(None, f"{type(error).__name__}: {error}", transient=False)
            self._callback(self.on_error, error, False)
            return None
        before = self.status().last_result
        self._record(result, None, transient=False)
        if result.changed:
            self._callback(self.on_change, result)
        elif result.refused:
            self._callback(self.on_refusal, result)
        if result.shadow is not None and result.shadow.refused:  # reported as a refused version, once
            self._callback(self.on_refusal, result._replace(
                version=result.shadow.version, reason=f"shadow candidate refused: {result.shadow.reason}",
                outcome="refused"))
        elif result.pointer_problem and (
            before is None or (before.outcome, before.reason) != (result.outcome, result.reason)
        ):
            self._callback(self.on_refusal, result)
        return result

    def _run(self) -> None:
        if self.on_thread_start is not None:
            self.on_thread_start()
        while not self._stop.is_set():
            self.run_once()
            self._wake.wait(poll_delay(self.interval_s, self.jitter, self._random.random()))
            self._wake.clear()

    def _record(self, result: PullResult | None, error: str | None, *, transient: bool) -> None:
        with self._lock:
            status = self._status._replace(polls=self._status.polls + 1, last_poll_at=datetime.now(timezone.utc),
                                           last_error=error)
            if result is not None:
                status = status._replace(last_result=result, changes=status.changes + result.changed,
                                         refusals=status.refusals + result.refused)
            elif transient:
                status = status._replace(transient_errors=status.transient_errors + 1)
            else:
                status = status._replace(unexpected_errors=status.unexpected_errors + 1)
            self._status = status

    def _callback(self, callback: Callable[..., None] | None, *args: object) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - a failing hook must not stop pulling
            log.exception("pull poller callback %r failed", callback)

    def __enter__(self) -> ChannelPoller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
