"""Moves spooled telemetry to a sink (`edgefleet.device.telemetry.sinks`): the publishing thread.

`SpoolPublisher` is a background thread: it reads a batch from the spool (oldest first), hands it to a sink,
deletes from the spool exactly the messages the sink acknowledged, and backs off exponentially while the sink
fails. It never holds the spool while it waits on the network, so appending is never blocked by an outage.
Messages are deleted only after they were acknowledged, so a crash or a lost acknowledgement means a
duplicate (the fleet monitor dedupes on device_id + seq), never a gap.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from edgefleet.device.telemetry.config import TelemetryConfig
from edgefleet.device.telemetry.sinks import Sink, TopicMissingError
from edgefleet.device.telemetry.spool import Spool
from edgefleet.kernel.errors import TelemetryError

log = logging.getLogger(__name__)


def backoff_delay(failures: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait after `failures` consecutive failures: initial_s * 2**(failures-1), capped at max_s."""
    if failures < 1:
        return 0.0
    # Cap the exponent so a long outage cannot overflow the float.
    exponent = min(failures - 1, max(0, int(max_s / initial_s)).bit_length())
    return min(max_s, initial_s * 2.0**exponent)


def jittered(delay_s: float, jitter: float, rng: Callable[[], float] = random.random) -> float:
    """`delay_s` shortened by up to `jitter` (a fraction), at random."""
    return delay_s * (1.0 - jitter * rng())


# --- the publishing thread -----------------------------------------------------------------------------
class PublisherStats(NamedTuple):
    """What the publisher has done since it started."""

    destination: str
    published: int
    failed_batches: int
    consecutive_failures: int
    last_error: str | None
    last_error_time: float | None
    last_success_time: float | None
    sink_started: bool = True


SinkFactory = Callable[[], Sink]
"""Opens the sink (a Pub/Sub client needs credentials): called in the publisher's thread until it succeeds."""


class SpoolPublisher:
    """A background thread that drains a spool into a sink.

    Args:
        spool: Where messages wait.
        sink: Where they go: the sink, or a `SinkFactory` the thread calls until the sink opens (no credentials,
            no network yet: the failure is counted and retried with the same backoff as a failed publish, while
            the spool keeps filling; inference never waits on it).
        config: Batch size (`publish_batch_size`), backoff (`backoff_initial_s` doubling per consecutive
            failure up to `backoff_max_s`, which a missing topic waits straight away; pauses shortened by up
            to `backoff_jitter`, at random), `idle_poll_s` (longest wait on an empty spool) and
            `flush_interval_s` (the pause after a batch that emptied the spool: acks at most that often).
        destination: what the stats name until a `SinkFactory` opened its sink.
    """

    def __init__(self, spool: Spool, sink: Sink | SinkFactory, config: TelemetryConfig, *,
                 destination: str | None = None) -> None:
        self.spool = spool
        opened = hasattr(sink, "publish_batch")
        self.sink: Sink | None = sink if opened else None  # type: ignore[assignment]
        self._open_sink: SinkFactory | None = None if opened else sink  # type: ignore[assignment]
        self.config = config
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._last_error: TelemetryError | None = None
        where = self.sink.destination if self.sink is not None else destination or "a sink not opened yet"
        self._stats = PublisherStats(where, 0, 0, 0, None, None, None, sink_started=self.sink is not None)

    @property
    def last_error(self) -> TelemetryError | None:
        """The most recent failure (kept after recovery; see `stats().consecutive_failures`)."""
        return self._last_error

    def stats(self) -> PublisherStats:
        with self._lock:
            return self._stats

    def start(self) -> SpoolPublisher:
        if self._thread is not None:
            raise RuntimeError("SpoolPublisher.start() called twice")
        self._thread = threading.Thread(target=self._run, name="telemetry-publisher", daemon=True)
        self._thread.start()
        log.info("telemetry publisher started: %s -> %s", self.spool.path, self.stats().destination)
        return self

    def stop(self, drain_timeout_s: float) -> PublisherStats:
        """Publishes what it can within `drain_timeout_s`, then stops the thread and closes the sink.

        Messages not delivered stay in the spool for the next start.
        """
        self._deadline = time.monotonic() + drain_timeout_s
        self._stopping.set()
        self.spool.wake()
        if self._thread is not None:
            # A batch already on the wire may take its full publish deadline to resolve.
            max_batch_wait_s = self.sink.max_batch_wait_s if self.sink is not None else 0.0
            self._thread.join(drain_timeout_s + max_batch_wait_s + self.config.idle_poll_s)
            if self._thread.is_alive():
                log.warning(
                    "telemetry publisher did not stop in time; unsent messages stay in %s", self.spool.path
                )
        if self.sink is not None:
            self.sink.close()
        stats = self.stats()
        log.info(
            "telemetry publisher stopped: %d published, %d waiting in %s",
            stats.published,
            self.spool.depth,
            self.spool.path,
        )
        return stats

    def _run(self) -> None:
        while True:
            if self.spool.closed:
                log.warning("telemetry publisher: spool %s was closed under it; stopping", self.spool.path)
                return
            if self._stopping.is_set() and (self.spool.depth == 0 or time.monotonic() >= self._deadline):
                return
            if self.sink is None:
                error = self._try_open_sink()
                if error is not None:
                    if self._stopping.is_set():
                        return  # no sink to drain into: the messages wait in the spool for the next start
                    self._pause(self._record_failure(error))
                continue
            try:
                entries = self.spool.peek(self.config.publish_batch_size)
                if not entries:
                    if not self._stopping.is_set():
                        self.spool.wait_for_messages(self.config.idle_poll_s)
                    continue
                outcome = self.sink.publish_batch(entries)
                if outcome.acked:
                    self.spool.ack(outcome.acked)
                    self._record_success(len(outcome.acked))
                error = outcome.error
                if error is None and len(entries) < self.config.publish_batch_size:
                    # Caught up: the next batch waits one flush interval, so the spool sees at most one
                    # acknowledgement a second (an SD card write), not one per append. stop() cuts it short.
                    self._stopping.wait(self.config.flush_interval_s)
            except TelemetryError as spool_error:  # the spool failed (disk): same pause as a sink failure
                error = spool_error
            except Exception as unexpected:  # a bug must not silently end telemetry: log, pause, go on
                log.exception("telemetry publisher: unexpected error")
                error = TelemetryError(
                    f"telemetry publisher: unexpected {type(unexpected).__name__}: {unexpected}",
                    "report this bug with the agent log",
                )
            if error is not None:
                self._pause(self._record_failure(error))

    def _try_open_sink(self) -> TelemetryError | None:
        """Opens the sink (`SinkFactory`); returns why it could not, or None once it is open."""
        try:
            sink = self._open_sink()  # type: ignore[misc]
        except TelemetryError as error:
            return error
        except Exception as unexpected:  # noqa: BLE001 - a sink that cannot open must never end telemetry
            log.exception("telemetry publisher: the sink could not be opened")
            return TelemetryError(f"telemetry sink: unexpected {type(unexpected).__name__}: {unexpected}",
                                  "see the agent log; messages wait in the spool and the sink is retried")
        self.sink = sink
        with self._lock:
            self._stats = self._stats._replace(destination=sink.destination, sink_started=True,
                                               consecutive_failures=0)
        log.info("telemetry sink opened: %s -> %s", self.spool.path, sink.destination)
        return None

    def _record_success(self, count: int) -> None:
        with self._lock:
            stats = self._stats
            if stats.consecutive_failures:
                log.info(
                    "telemetry publishing to %s recovered after %d failed batch(es)",
                    stats.destination,
                    stats.consecutive_failures,
                )
            self._stats = stats._replace(
                published=stats.published + count, consecutive_failures=0, last_success_time=time.time()
            )

    def _record_failure(self, error: TelemetryError) -> float:
        """Counts the failure, logs it (first of a run, or when it changes) and returns the pause."""
        with self._lock:
            stats = self._stats
            changed = stats.last_error is None or str(error) != stats.last_error
            failures = stats.consecutive_failures + 1
            self._last_error = error
            self._stats = stats._replace(
                failed_batches=stats.failed_batches + 1,
                consecutive_failures=failures,
                last_error=str(error),
                last_error_time=time.time(),
            )
        if failures == 1 or changed:
            log.warning(
                "%s (retrying with backoff; %d message(s) wait in the spool)", error, self.spool.depth
            )
        config = self.config
        if isinstance(error, TopicMissingError):
            return config.backoff_max_s
        return jittered(
            backoff_delay(failures, config.backoff_initial_s, config.backoff_max_s), config.backoff_jitter
        )

    def _pause(self, delay_s: float) -> None:
        if not self._stopping.is_set():
            self._stopping.wait(delay_s)  # stop() cuts the pause short: draining starts at once
            return
        remaining = self._deadline - time.monotonic()
        if remaining > 0:
            time.sleep(min(delay_s, remaining))
