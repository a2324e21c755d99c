"""The fleet monitor service: streaming pull from the fleet-monitor subscription into the fleet state.

Pub/Sub I/O only; what a message does is `edgefleet.monitor.ingest.handle`. The subscriber's callback
threads put messages on a queue; one thread (the caller of `run_monitor`) takes them in batches, applies
them to SQLite, commits, and only then acks (or nacks the malformed, so Pub/Sub redelivers them and,
after the subscription's max delivery attempts, dead-letters them). A crash between commit and ack means
redelivery, which dedupe absorbs.

Errors are told apart: a stop request ends the run cleanly (the batch in hand is committed and acked,
new deliveries are nacked, the stream is cancelled); transient errors (Pub/Sub unavailable, deadline,
SQLite locked) resubscribe after an exponential back-off; anything else (subscription gone, permission
denied, a corrupt store) ends the run with an error naming the thing and the fix.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import tenacity
from google.api_core import exceptions as google_exceptions
from google.auth import exceptions as google_auth_exceptions
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.futures import StreamingPullFuture
from google.cloud.pubsub_v1.subscriber.message import Message

from edgefleet.monitor.batch import process_batch
from edgefleet.monitor.calibrations import CalibrationSource, source_for
from edgefleet.monitor.cloud_metrics import (
    CloudMetricsWriter,
    MetricServiceClientLike,
    PeriodAggregator,
    build_time_series,
    default_client,
)
from edgefleet.monitor.config import MonitorConfig
from edgefleet.monitor.drift_watch import tick as drift_tick
from edgefleet.monitor.errors import MonitorError
from edgefleet.monitor.ingest import Outcome
from edgefleet.monitor.query import device_statuses
from edgefleet.monitor.run_report import MonitorReport, Tally, batch_counts
from edgefleet.monitor.store import FleetStore, from_epoch, open_fleet_store
from edgefleet.monitor.store_engine import transient_store_errors
from edgefleet.monitor.telemetry_verifier import TelemetryVerifier
from edgefleet.monitor.windows import prune

log = logging.getLogger(__name__)

# Errors after which resubscribing later can work. The subscriber client already reopens the stream on
# most of these by itself; they reach us when they happen outside the stream (get_subscription) or the
# client gives up.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    google_exceptions.ServiceUnavailable,
    google_exceptions.DeadlineExceeded,
    google_exceptions.Aborted,
    google_exceptions.InternalServerError,
    google_exceptions.ResourceExhausted,
    google_exceptions.GatewayTimeout,
    google_exceptions.Unknown,
    google_exceptions.RetryError,
    # SQLite locked / busy / disk momentarily full, PostgreSQL connection lost or deadlock: the batch was
    # rolled back and nacked
    *transient_store_errors(),
)


@dataclass
class _Inbox:
    """Where the subscriber's callback threads leave messages; once closing, new deliveries are nacked."""

    messages: queue.Queue[Message] = field(default_factory=queue.Queue)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closing: bool = False

    def receive(self, message: Message) -> None:
        with self.lock:
            if not self.closing:
                self.messages.put(message)
                return
        message.nack()  # stopping: let another monitor (or our next start) have it now

    def close(self) -> None:
        with self.lock:
            self.closing = True

    def take(self, max_messages: int, max_wait_s: float) -> list[Message]:
        """Up to `max_messages`: waits at most `max_wait_s` for the first, then takes what is there."""
        batch: list[Message] = []
        try:
            batch.append(self.messages.get(timeout=max_wait_s))
            while len(batch) < max_messages:
                batch.append(self.messages.get_nowait())
        except queue.Empty:
            pass
        return batch


def _check_subscription(subscriber: pubsub_v1.SubscriberClient, path: str, timeout_s: float) -> None:
    try:
        # No client-side retry: run_monitor's own back-off retries transient failures, and stops on request.
        subscriber.get_subscription(request={"subscription": path}, retry=None, timeout=timeout_s)
    except google_exceptions.NotFound as error:
        raise MonitorError(f"Pub/Sub subscription {path} does not exist",
                           "create it (`pulumi up` creates the fleet-monitor subscription; locally "
                           "`edgefleet local up`), or pass the right --project / --subscription") from error
    except (google_exceptions.PermissionDenied, google_exceptions.Unauthenticated) as error:
        raise MonitorError(f"not allowed to read Pub/Sub subscription {path}: {error.message}",
                           "grant the monitor's service account roles/pubsub.subscriber and roles/pubsub.viewer "
                           "(for this check: pubsub.subscriptions.get) on it; `pulumi up` does") from error


def _stream_error(error: BaseException, path: str) -> BaseException:
    """Turns a terminal stream error into what run_monitor raises (transient ones pass through)."""
    if isinstance(error, TRANSIENT_ERRORS):
        return error
    if isinstance(error, google_exceptions.NotFound):
        return MonitorError(f"Pub/Sub subscription {path} disappeared while the monitor read it",
                            "recreate it (`pulumi up`) and restart the monitor")
    if isinstance(error, google_exceptions.GoogleAPICallError):
        return MonitorError(f"Pub/Sub ended the stream from {path}: {error}",
                            "check the subscription and the monitor's permissions, then restart it")
    return error


@dataclass
class _Session:
    """One streaming pull: subscribe, then batches until stopped or the stream fails."""

    config: MonitorConfig
    store: FleetStore
    subscriber: pubsub_v1.SubscriberClient
    path: str
    stop_event: threading.Event
    tally: Tally
    on_batch: Callable[[Sequence[Outcome]], None] | None
    metrics: _MetricsTick | None
    clock: Callable[[], float]
    verifier: TelemetryVerifier | None = None
    calibration: CalibrationSource | None = None

    def run(self) -> None:
        if self.stop_event.is_set():
            return  # a stop request cut the back-off short
        ingest = self.config.ingest
        _check_subscription(self.subscriber, self.path, ingest.request_timeout_s)
        inbox = _Inbox()
        flow_control = pubsub_v1.types.FlowControl(
            max_messages=ingest.flow_control_max_messages, max_bytes=ingest.flow_control_max_bytes,
            max_duration_per_lease_extension=ingest.max_lease_extension_s)
        stream = self.subscriber.subscribe(self.path, callback=inbox.receive, flow_control=flow_control)
        log.info("monitor reading %s into %s", self.path, self.store.path)
        stopped = False
        next_prune = self.clock() + self.config.prune_interval_s  # not at start: a restart prunes nothing early
        next_drift = self.clock()
        try:
            while not self.stop_event.is_set():
                self._process(inbox.take(ingest.batch_max_messages, ingest.batch_max_wait_s))
                if self.clock() >= next_prune:
                    deleted = prune(self.store, self.clock() - self.config.retention_s)
                    next_prune = self.clock() + self.config.prune_interval_s
                    if any(deleted.values()):
                        log.info("pruned what is older than %.0f s: %s", self.config.retention_s, deleted)
                if self.config.drift.enabled and self.clock() >= next_drift:
                    self._drift_tick()
                    next_drift = self.clock() + self.config.drift.interval_s
                if self.metrics is not None:
                    self.metrics.tick(self.store, self.clock())
                if stream.done():
                    error = stream.exception()
                    if error is None:
                        raise MonitorError(f"the stream from {self.path} ended without an error",
                                           "restart the monitor; report this if it repeats")
                    raise _stream_error(error, self.path) from error
            stopped = True
        finally:
            self._shutdown(inbox, stream, commit_in_hand=stopped)

    def _shutdown(self, inbox: _Inbox, stream: StreamingPullFuture,
                  commit_in_hand: bool) -> None:
        """Stops new deliveries (nacked from now on), commits and acks what is in hand on a clean stop or
        nacks it after an error, then cancels the stream while its dispatcher can still send the acks."""
        ingest = self.config.ingest
        inbox.close()
        try:
            while not inbox.messages.empty():
                batch = inbox.take(ingest.batch_max_messages, 0.0)
                if commit_in_hand:
                    self._process(batch)
                else:
                    for message in batch:
                        message.nack()
        finally:
            stream.cancel()
            try:
                stream.result(timeout=ingest.shutdown_timeout_s)
            except TimeoutError:
                log.warning("the stream from %s did not shut down within %.0f s", self.path,
                            ingest.shutdown_timeout_s)
            except Exception:  # noqa: BLE001 - whatever ended the stream was raised from run() already
                log.debug("stream from %s ended with an error during shutdown", self.path, exc_info=True)

    def _drift_tick(self) -> None:
        """One drift tick; a store error that can pass is raised (resubscribe), anything else is logged and
        ingest goes on (the drift watch is advice: it never stops the fleet state from being written)."""
        try:
            drift_tick(self.store, self.config.drift, self.clock(), self.calibration)
        except TRANSIENT_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - logged with its traceback; the next tick tries the same range again
            log.exception("drift tick failed (ingest goes on; the next tick reads the same buckets again)")

    def _process(self, batch: list[Message]) -> None:
        if not batch:
            return
        outcomes = process_batch(self.store, batch, self.clock(), self.verifier)
        self.tally.count(**batch_counts(outcomes))
        if self.metrics is not None:
            self.metrics.aggregator.record(outcomes)
        if self.on_batch is not None:
            self.on_batch(outcomes)


@dataclass
class _MetricsTick:
    """Closes a reporting period when it is over and hands its series to the writer."""

    config: MonitorConfig
    writer: CloudMetricsWriter
    aggregator: PeriodAggregator
    tally: Tally

    def tick(self, store: FleetStore, now: float) -> None:
        if not self.aggregator.due(now):
            return
        period_messages = self.aggregator.close_period(now)
        if not period_messages:
            return
        moment = from_epoch(now)
        devices = device_statuses(store, {device_id for device_id, _, _ in period_messages},
                                  self.config.status.stale_after_s, moment, rules=self.config.status)
        self.writer.submit(build_time_series(self.config.project, moment, period_messages, devices))
        self.tally.count(metric_periods=1)


def _log_retry(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    delay = state.next_action.sleep if state.next_action else 0.0
    log.warning("monitor: transient error (%s: %s); resubscribing in %.1f s", type(error).__name__, error, delay)


def run_monitor(config: MonitorConfig, stop_event: threading.Event, *,
                subscriber: pubsub_v1.SubscriberClient | None = None,
                metrics_client: MetricServiceClientLike | None = None,
                on_batch: Callable[[Sequence[Outcome]], None] | None = None,
                clock: Callable[[], float] = time.time) -> MonitorReport:
    """Runs the fleet monitor until `stop_event` is set; a plain callable (a Prefect flow may wrap it).

    Args:
        config: the monitor configuration (project, subscription, store, batching, metrics).
        stop_event: set it (e.g. from a SIGTERM handler) to stop cleanly.
        subscriber: the Pub/Sub subscriber client; default a new one (honours PUBSUB_EMULATOR_HOST).
        metrics_client: the Cloud Monitoring client when `config.cloud_metrics.enabled`; default the real one.
        on_batch: called with each committed batch's outcomes (progress reporting, benchmarks).
        clock: epoch seconds (receive times and metric periods).

    Returns:
        What this run did.

    Raises:
        ConfigError: signatures are to be checked (strict, the default) and `identity.registry` is not set;
            `drift.public_key` names no readable release key.
        MonitorError: the device keys cannot be read (naming where and the IAM fix); the subscription is missing
            or unreadable, or the stream ended for good.
        FleetStateError: the store cannot be opened.
    """
    verifier = TelemetryVerifier.from_config(config.identity)  # a config without a key registry stops here
    if verifier is not None:
        verifier.load_now()  # keys that cannot be read stop the start here, never dead-letter all telemetry
    registry = config.drift.registry or config.identity.registry
    calibration = source_for(config.drift, registry) if config.drift.enabled and registry else None  # key read now
    tally = Tally()
    own_subscriber = subscriber is None
    subscriber, metrics_client = _clients(config, subscriber, metrics_client)
    path = subscriber.subscription_path(config.project, config.subscription)
    store = open_fleet_store(config)
    metrics = _metrics_tick(config, metrics_client, tally, clock())
    session = _Session(config, store, subscriber, path, stop_event, tally, on_batch, metrics, clock, verifier,
                       calibration)
    if verifier is not None:
        verifier.start_refreshing()  # the keys are re-read in the background, never on the message path
    try:
        _resubscribing(config, stop_event, tally)(session.run)
    finally:
        if verifier is not None:
            verifier.stop_refreshing()
        if metrics is not None:
            metrics.writer.close()
        if own_subscriber:
            subscriber.close()
        store.close()
    report = tally.report
    log.info("monitor stopped: %s", report)
    return report


def _clients(config: MonitorConfig, subscriber: pubsub_v1.SubscriberClient | None,
             metrics_client: MetricServiceClientLike | None,
             ) -> tuple[pubsub_v1.SubscriberClient, MetricServiceClientLike | None]:
    """The Pub/Sub subscriber and (with `cloud_metrics.enabled`) the Cloud Monitoring client: those given, else
    new ones, so missing credentials stop the start here.

    Raises:
        MonitorError: no Google Cloud credentials (naming the project and how to log in).
    """
    try:
        subscriber = subscriber or pubsub_v1.SubscriberClient()
        if config.cloud_metrics.enabled and metrics_client is None:
            metrics_client = default_client()
    except google_auth_exceptions.DefaultCredentialsError as error:
        raise MonitorError(f"no Google Cloud credentials for project {config.project}: {error}",
                           "run `gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS); "
                           "locally, set PUBSUB_EMULATOR_HOST and leave cloud_metrics.enabled off") from error
    return subscriber, metrics_client


def _metrics_tick(config: MonitorConfig, metrics_client: MetricServiceClientLike | None, tally: Tally,
                  now: float) -> _MetricsTick | None:
    """The Cloud Monitoring writer and its reporting periods from `now` (None with `cloud_metrics` off)."""
    if not config.cloud_metrics.enabled or metrics_client is None:  # enabled: `_clients` set the default client
        return None
    writer = CloudMetricsWriter(metrics_client, config.project, config.cloud_metrics)
    return _MetricsTick(config, writer, PeriodAggregator(config.cloud_metrics.period_s, now), tally)


def _resubscribing(config: MonitorConfig, stop_event: threading.Event, tally: Tally) -> tenacity.Retrying:
    """Retries a session after a transient error, exponentially backed off; a stop request cuts the back-off
    short (the session then returns at once). Each retry counts as a resubscribe."""

    def back_off(seconds: float) -> None:
        stop_event.wait(seconds)

    def before_resubscribe(state: tenacity.RetryCallState) -> None:
        tally.count(resubscribes=1)
        _log_retry(state)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TRANSIENT_ERRORS),
        wait=tenacity.wait_exponential(multiplier=config.ingest.resubscribe_initial_s,
                                       max=config.ingest.resubscribe_max_s),
        sleep=back_off,
        before_sleep=before_resubscribe,
        reraise=True,
    )
