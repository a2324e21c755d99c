"""The telemetry facade the agent's loop uses: record, and forget.

What the agent's loop calls (from its inference stage; every `record_*` call is one non-blocking append):

    service = TelemetryService(config.telemetry, root / SPOOL_FILE, device_id,
                               health_provider=lambda: read_health(tpu_present=runtime_has_tpu))
    service.start()                      # opens the spool, starts two threads, records a `started` event
    service.record_inference(model_ref, latency_ms, results)          # per inference (ResultItem list)
    service.record_inference(model_ref, 0.0, error="invoke failed: ...")  # a failed inference
    service.record_event("swap", "1.0.0 -> 1.1.0", model_version="1.1.0", model=new_model_ref)
    service.stats()                      # depth, dropped, published, last_error... for the status file
    service.stop(drain_timeout_s=5.0)    # records `stopped`, spools what is queued, publishes what it can

Behind it: a writer thread turns records into messages (`TelemetryBuilder`), adds health, and appends them to
the SQLite spool in batches, at most once per `flush_interval_s` (plus once per full `append_batch_size`):
on an SD card every transaction is a flash write, and a power cut takes at most the last `flush_interval_s`
of messages, not yet spooled. A `SpoolPublisher` thread sends the spool to Pub/Sub (or the local JSONL sink
when `pubsub_project` is unset). Neither thread is ever waited on by `record_*`: when the buffer is full the
record is dropped and counted (`queue_dropped`), so inference keeps its speed whatever the disk or network do.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from edgefleet.device.telemetry.batching import FlushClock, RecordBuffer
from edgefleet.device.telemetry.builder import EventRecord, InferenceRecord, MessageDraft, ResultLike, TelemetryBuilder
from edgefleet.device.telemetry.config import TelemetryConfig
from edgefleet.device.telemetry.health import read_health
from edgefleet.device.telemetry.publisher import SpoolPublisher
from edgefleet.device.telemetry.sinks import LocalSink, PubSubSink, Sink
from edgefleet.device.telemetry.spool import MessageSigner, Spool
from edgefleet.kernel.contracts.telemetry import EventKind, Health, ModelRef, ShadowSummary
from edgefleet.kernel.errors import TelemetryError

log = logging.getLogger(__name__)

HealthProvider = Callable[[], Health]
"""Returns the device's health now; the service fills in the spool counters."""

_BYTES_PER_MB = 1024 * 1024


class TelemetryStats(NamedTuple):
    """Telemetry counters for the status file and `edgefleet-agent status`.

    Attributes:
        destination: Where messages go ('pubsub projects/.../topics/...' or 'file ...').
        depth: Messages waiting in the spool.
        dropped: Messages the spool dropped because it was full (persisted across restarts).
        published: Messages delivered since start.
        last_seq: The last seq given out.
        queue_dropped: Records dropped before reaching the spool (queue full, or recorded after stop).
        spool_errors: Spool append batches that failed (disk full, SQLite errors); their records are lost.
        last_error: The most recent telemetry error (text with its fix), or None.
        last_success_time: Wall-clock time of the last delivery, or None.
        failing: True while publishing keeps failing (or the sink cannot open).
        sink_started: False while the sink could not open yet (no credentials, say): retried with backoff,
            messages wait in the spool.
    """

    destination: str
    depth: int
    dropped: int
    published: int
    last_seq: int
    queue_dropped: int
    spool_errors: int
    last_error: str | None
    last_success_time: float | None
    failing: bool
    sink_started: bool = True


class TelemetryService:
    """Telemetry for one device: records in, spooled and published messages out.

    Args:
        config: The agent config's `telemetry:` section.
        spool_path: The SQLite spool file (layout.SPOOL_FILE under the agent root).
        device_id: This device's id (goes in every message and its attributes).
        health_provider: Returns current health; default `read_health()` (no TPU).
        sink: Where messages go; default from `config` (Pub/Sub when `pubsub_project` is set, else the local
            JSONL sink), opened by the publisher's thread and retried with backoff until it opens (a device
            without credentials keeps inferring and spooling). Tests and the benchmarks pass their own.
        credentials_file: the device's Google credentials (the agent config's `credentials_file`) for Pub/Sub;
            None: Application Default Credentials.
        shadow: (summary mode) the shadow candidate's summary of a closing window (`TelemetryBuilder`).
    """

    def __init__(
        self,
        config: TelemetryConfig,
        spool_path: Path | str,
        device_id: str,
        health_provider: HealthProvider | None = None,
        *,
        sink: Sink | None = None,
        signer: MessageSigner | None = None,
        credentials_file: Path | None = None,
        shadow: Callable[[int], ShadowSummary | None] | None = None,
    ) -> None:
        if not device_id:
            raise ValueError("device_id must not be empty")
        self.config = config
        self.spool_path = Path(spool_path)
        self.device_id = device_id
        self._health_provider = health_provider or read_health
        self._sink = sink
        self._credentials_file = credentials_file
        self._shadow = shadow  # the shadow candidate's window summaries (issue 25), summary mode
        self._signer = signer  # signs each message with the device's own key (issue 11)
        self._records: RecordBuffer[InferenceRecord | EventRecord] = RecordBuffer(
            config.queue_max, min(config.append_batch_size, config.queue_max)
        )
        self._spool: Spool | None = None
        self._publisher: SpoolPublisher | None = None
        self._writer: threading.Thread | None = None
        self._accepting = False
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._queue_dropped = 0
        self._spool_errors = 0
        self._last_spool_error: TelemetryError | None = None
        self._spool_error_time = 0.0
        self._health: Health | None = None
        self._health_time = float("-inf")

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> TelemetryService:
        """Opens the spool, starts the writer and publisher threads, and records a `started` event.

        A sink that cannot open (no credentials, say) does not fail the start: the publisher retries it with
        backoff while the spool fills (see `stats().sink_started`).

        Raises:
            TelemetryError: the spool cannot be opened (the agent runs on without telemetry).
        """
        if self._writer is not None:
            raise RuntimeError("TelemetryService.start() called twice")
        config = self.config
        self._spool = Spool(
            self.spool_path,
            config.spool_max_messages,
            max_bytes=int(config.spool_max_mb * _BYTES_PER_MB),
            synchronous=config.spool_synchronous,
            signer=self._signer,
        )
        destination = self._sink.destination if self._sink is not None else self._default_destination()
        self._publisher = SpoolPublisher(self._spool, self._sink or self._default_sink, config,
                                         destination=destination)
        builder = TelemetryBuilder(
            config.mode,
            config.summary_interval_s,
            sample_results=config.sample_results,
            max_results=config.max_results,
            start_time=time.time(),
            shadow=self._shadow,
        )
        self._accepting = True
        self.record_event("started", f"telemetry to {destination}")
        self._writer = threading.Thread(
            target=self._write_loop, args=(builder,), name="telemetry-writer", daemon=True
        )
        self._writer.start()
        self._publisher.start()
        return self

    def stop(self, drain_timeout_s: float) -> TelemetryStats:
        """Records `stopped`, spools every queued record, publishes what it can within `drain_timeout_s`.

        What is not delivered stays in the spool and goes out after the next start. Safe to call twice.
        """
        deadline = time.monotonic() + drain_timeout_s
        with self._lock:
            was_running, self._accepting = self._accepting, False
        if not was_running:
            return self.stats()
        self._stopping.set()
        self._records.wake()
        if self._writer is not None:
            self._writer.join(max(0.0, deadline - time.monotonic()))
            if self._writer.is_alive():
                log.warning(
                    "telemetry writer did not finish within %.1f s; queued records are lost", drain_timeout_s
                )
        if self._publisher is not None:
            self._publisher.stop(max(0.0, deadline - time.monotonic()))
        stats = self.stats()
        if self._spool is not None:
            self._spool.close()
        return stats

    def __enter__(self) -> TelemetryService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(self.config.publish_timeout_s)

    # --- recording (non-blocking) ---------------------------------------------------------------------
    def record_inference(
        self,
        model: ModelRef | None,
        latency_ms: float,
        results: Sequence[ResultLike] = (),
        *,
        error: str | None = None,
        time_s: float | None = None,
        detector: bool = False,
    ) -> bool:
        """Queues one inference (never blocks).

        Args:
            model: The model that ran.
            latency_ms: Its latency (ignored when `error` is set).
            results: Its top results, best first.
            error: Why it failed, when it did.
            time_s: Wall-clock time of the result (default: now).
            detector: The model is a detector (an empty result is then a frame with no detection).

        Returns:
            False when the record was dropped (queue full or service stopped), counted in `queue_dropped`.
        """
        record = InferenceRecord(
            time.time() if time_s is None else time_s, model, latency_ms, tuple(results), error, detector
        )
        return self._offer(record)

    def record_event(
        self,
        kind: EventKind,
        detail: str = "",
        *,
        model_version: str | None = None,
        model: ModelRef | None = None,
        from_version: str | None = None,
    ) -> bool:
        """Queues one event: 'swap', 'swap_failed', 'rollback' or 'error' ('started' and 'stopped' are sent
        by `start` and `stop`). Never blocks; returns False when dropped. An event is not dropped because the
        buffer is full of inference records (a stalled writer): events have room of their own."""
        return self._offer(EventRecord(time.time(), kind, detail, model_version, model, from_version))

    def _offer(self, record: InferenceRecord | EventRecord) -> bool:
        with self._lock:  # put never blocks; the lock orders puts against stop() and each other
            if self._accepting and self._records.put(record, reserved=isinstance(record, EventRecord)):
                return True
            self._queue_dropped += 1
            dropped = self._queue_dropped
        if dropped == 1 or dropped % self.config.queue_max == 0:
            log.warning(
                "telemetry: %d record(s) dropped before the spool (queue full or service stopped)", dropped
            )
        return False

    # --- stats ----------------------------------------------------------------------------------------
    def stats(self) -> TelemetryStats:
        """Counters for the status file (cheap: no I/O)."""
        spool = self._spool.stats() if self._spool is not None else None
        publisher = self._publisher.stats() if self._publisher is not None else None
        with self._lock:
            queue_dropped, spool_errors = self._queue_dropped, self._spool_errors
            # The most recent of the publisher's and the spool's errors.
            errors = [(self._spool_error_time, str(self._last_spool_error))] if self._last_spool_error else []
        if publisher is not None and publisher.last_error is not None:
            errors.append((publisher.last_error_time or 0.0, publisher.last_error))
        return TelemetryStats(
            destination=publisher.destination if publisher else "",
            depth=spool.depth if spool else 0,
            dropped=spool.dropped if spool else 0,
            published=publisher.published if publisher else 0,
            last_seq=spool.last_seq if spool else 0,
            queue_dropped=queue_dropped,
            spool_errors=spool_errors,
            last_error=max(errors)[1] if errors else None,
            last_success_time=publisher.last_success_time if publisher else None,
            failing=bool(publisher and publisher.consecutive_failures),
            sink_started=publisher.sink_started if publisher else False,
        )

    # --- the writer thread ----------------------------------------------------------------------------
    def _write_loop(self, builder: TelemetryBuilder) -> None:
        clock = FlushClock(self.config.flush_interval_s, self.config.append_batch_size)
        pending: list[MessageDraft] = []
        while True:
            # Checked before draining: once set, no record can enter the buffer after this drain.
            stopping = self._stopping.is_set()
            if not stopping:
                wait_s = min(clock.wait_s(time.monotonic()), builder.next_deadline() - time.time())
                if wait_s > 0:
                    self._records.wait(wait_s)
            records = self._records.drain()
            try:
                pending.extend(self._drafts(builder, records, final=stopping))
            except Exception:  # a bug in building must not end telemetry: log and keep going
                log.exception("telemetry writer: unexpected error; %d record(s) lost", len(records))
            batches, pending = clock.take(pending, time.monotonic(), final=stopping)
            for batch in batches:
                try:
                    self._append(batch)
                except Exception:  # a bug in building a message must not end telemetry either
                    log.exception("telemetry writer: unexpected error; %d message(s) lost", len(batch))
            if stopping:
                return

    @staticmethod
    def _drafts(builder: TelemetryBuilder, records: list[InferenceRecord | EventRecord], *,
                final: bool) -> list[MessageDraft]:
        """The messages `records` complete; with `final`, also the last summary window and `stopped`."""
        drafts: list[MessageDraft] = []
        for record in records:
            if isinstance(record, EventRecord):
                drafts.extend(builder.add_event(record))
            else:
                drafts.extend(builder.add_inference(record))
        now = time.time()
        if final:
            drafts.extend(builder.flush(now))
            drafts.extend(builder.add_event(EventRecord(now, "stopped")))
        else:
            drafts.extend(builder.tick(now))
        return drafts

    def _append(self, drafts: list[MessageDraft]) -> None:
        spool = self._spool
        if spool is None:
            return
        health = self._current_health(spool)
        builds = [functools.partial(draft.build, device_id=self.device_id, health=health) for draft in drafts]
        try:
            spool.append_many(builds)
        except TelemetryError as error:
            with self._lock:
                self._spool_errors += 1
                first = self._spool_errors == 1 or str(error) != str(self._last_spool_error)
                self._last_spool_error = error
                self._spool_error_time = time.time()
            if first:
                log.error("%s (%d message(s) lost; the agent keeps running)", error, len(drafts))

    def _current_health(self, spool: Spool) -> Health:
        now = time.monotonic()
        if self._health is None or now - self._health_time >= self.config.health_interval_s:
            try:
                self._health = self._health_provider()
            except Exception:  # a broken health probe must not stop telemetry
                log.exception("telemetry: health provider failed; sending uptime only")
                self._health = Health(uptime_s=0.0)
            self._health_time = now
        counters = spool.stats()
        return self._health.model_copy(
            update={"spool_depth": counters.depth, "spool_dropped": counters.dropped}
        )

    def _default_destination(self) -> str:
        topic = self.config.topic_path()
        return f"pubsub {topic}" if topic else f"file {self.config.resolved_sink_path(self.spool_path)}"

    def _default_sink(self) -> Sink:
        """The sink `config` asks for; called by the publisher's thread (retried until it opens)."""
        if self.config.pubsub_project is None:
            return LocalSink.from_config(self.config, self.spool_path)
        return PubSubSink(self.config, credentials_file=self._credentials_file)
