"""Where spooled telemetry goes: Pub/Sub, or a local JSONL file when none is configured.

Sinks share one method, `publish_batch(entries) -> PublishOutcome` (the acked seqs, and the error when some
failed); `edgefleet.device.telemetry.publisher.SpoolPublisher` is the thread that feeds them from the spool.

- `PubSubSink`: google-cloud-pubsub's PublisherClient with batching, an explicit per-call retry deadline
  (the client's default lets a publish future wait ~600 s while Pub/Sub is down) and a short gRPC reconnect
  backoff (gRPC's default grows to 120 s, so a returning emulator would be seen only tens of seconds later).
- `LocalSink`: appends one JSON message per line to a file and fsyncs each batch.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from edgefleet.device.telemetry.config import TelemetryConfig
from edgefleet.device.telemetry.spool import SpoolEntry
from edgefleet.kernel.errors import TelemetryError

if TYPE_CHECKING:
    import grpc

log = logging.getLogger(__name__)

_MS_PER_S = 1000


class _Transport(Protocol):
    def close(self) -> None: ...


class _Publisher(Protocol):
    """What `PubSubSink` uses of google-cloud-pubsub's `PublisherClient` (its `publish` is partly untyped)."""

    @property
    def transport(self) -> _Transport: ...

    def publish(self, topic: str, data: bytes, ordering_key: str = "", retry: Any = ..., timeout: Any = ...,
                **attrs: str) -> concurrent.futures.Future[str]: ...

    def stop(self) -> None: ...


class TopicMissingError(TelemetryError):
    """The Pub/Sub topic does not exist (retried slowly: somebody has to create it)."""


class PublishOutcome(NamedTuple):
    """What a sink did with one batch."""

    acked: list[int]
    error: TelemetryError | None = None


class Sink(Protocol):
    """Where spooled messages go."""

    destination: str
    """Human-readable target, for logs and stats ('pubsub projects/p/topics/t', 'file /x/telemetry.jsonl')."""
    max_batch_wait_s: float
    """Longest time one `publish_batch` call can take."""

    def publish_batch(self, entries: Sequence[SpoolEntry]) -> PublishOutcome:
        """Delivers what it can; returns the seqs that are safely delivered. Never raises for I/O."""
        ...

    def close(self) -> None:
        """Releases connections and files."""
        ...


# --- local sink ----------------------------------------------------------------------------------------
class LocalSink:
    """Appends messages to a JSONL file (one message per line, as on the wire), fsynced per batch.

    The embedded default when no Pub/Sub is configured. Past `max_bytes` the file is renamed to `<name>.1`
    (replacing the previous one) and a new file is started.

    Args:
        path: The JSONL file (created with its directory).
        max_bytes: Rotation threshold (None: never rotate).
    """

    def __init__(self, path: Path | str, max_bytes: int | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.destination = f"file {self.path}"
        self.max_batch_wait_s = 0.0  # local disk writes are not bounded by a deadline

    @classmethod
    def from_config(cls, config: TelemetryConfig, spool_path: Path) -> LocalSink:
        """The sink `config` asks for (its path defaults to `telemetry.jsonl` beside the spool)."""
        return cls(config.resolved_sink_path(spool_path), max_bytes=int(config.sink_max_mb * 1024 * 1024))

    def publish_batch(self, entries: Sequence[SpoolEntry]) -> PublishOutcome:
        if not entries:
            return PublishOutcome([])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rotate_if_needed()
            with open(self.path, "ab") as sink:
                sink.write(b"".join(entry.data + b"\n" for entry in entries))
                sink.flush()
                os.fsync(sink.fileno())
        except OSError as error:
            return PublishOutcome(
                [],
                TelemetryError(
                    f"local telemetry sink {self.path}: writing {len(entries)} message(s) failed: {error}",
                    f"free disk space or make {self.path.parent} writable; the messages wait in the spool",
                ),
            )
        return PublishOutcome([entry.seq for entry in entries])

    def _rotate_if_needed(self) -> None:
        if self.max_bytes is None:
            return
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size >= self.max_bytes:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            log.info("local telemetry sink %s rotated at %d bytes", self.path, size)

    def close(self) -> None:
        """Nothing stays open between batches."""


# --- Pub/Sub sink --------------------------------------------------------------------------------------
def _reconnect_options(reconnect_max_s: float) -> list[tuple[str, int]]:
    backoff_ms = max(1, int(reconnect_max_s * _MS_PER_S))
    return [
        ("grpc.initial_reconnect_backoff_ms", backoff_ms),
        ("grpc.min_reconnect_backoff_ms", backoff_ms),
        ("grpc.max_reconnect_backoff_ms", backoff_ms),
    ]


class PubSubSink:
    """Publishes batches to a Pub/Sub topic and reports exactly which messages Pub/Sub acknowledged.

    Args:
        config: The topic (`pubsub_project`, which must be set, and `pubsub_topic`); `publish_timeout_s`,
            the deadline of one publish, retries included (a future not resolved after twice this is
            counted as failed: the message stays spooled; if it did arrive, it arrives twice); the
            PublisherClient's batch (`publish_batch_size` messages, waiting `publish_batch_latency_s` to
            fill it); `reconnect_max_s`, the longest gRPC reconnect backoff; `backoff_initial_s`, the first
            in-call retry pause for transient errors.
        emulator_host: `host:port` of a Pub/Sub emulator; default: `PUBSUB_EMULATOR_HOST`, as Google's
            clients do (anonymous credentials).
        credentials_file: the device's credentials (agent config `credentials_file`,
            `edgefleet.device.credentials`); None: Application Default Credentials.

    Raises:
        TelemetryError: no credentials (as google-cloud-pubsub itself: `DefaultCredentialsError`), or the
            credentials file is unusable; the publisher retries opening the sink with backoff.
    """

    def __init__(self, config: TelemetryConfig, emulator_host: str | None = None, *,
                 credentials_file: Path | None = None) -> None:
        from edgefleet.device.grpc_fork import disable_grpc_fork_handlers

        disable_grpc_fork_handlers()  # in time unless grpc was imported before (the agent's CLI does it first)
        from google.api_core.retry import Retry, if_transient_error
        from google.cloud import pubsub_v1  # pyright: ignore[reportMissingTypeStubs] - no py.typed; see _Publisher

        if config.pubsub_project is None:
            raise ValueError("telemetry.pubsub_project is not set: use LocalSink")
        self.emulator_host = emulator_host or os.environ.get("PUBSUB_EMULATOR_HOST") or None
        self.topic_path = f"projects/{config.pubsub_project}/topics/{config.pubsub_topic}"
        endpoint = f"emulator {self.emulator_host}" if self.emulator_host else "pubsub.googleapis.com"
        self.destination = f"pubsub {self.topic_path} ({endpoint})"
        self.publish_timeout_s = publish_timeout_s = config.publish_timeout_s
        self.max_batch_wait_s = 2 * publish_timeout_s
        self._retry = Retry(
            predicate=if_transient_error,
            initial=min(config.backoff_initial_s, publish_timeout_s),
            maximum=publish_timeout_s,
            timeout=publish_timeout_s,
        )
        from google.auth.exceptions import DefaultCredentialsError

        try:
            transport = self._transport(config.reconnect_max_s, self._credentials(credentials_file))
        except DefaultCredentialsError as error:
            raise TelemetryError(
                f"no Google Cloud credentials to publish telemetry to {self.topic_path}: {error}",
                "on a device: set credentials_file in agent.yaml (deploy-agent installs it; the agent and "
                "`doctor` read the same file); locally: set PUBSUB_EMULATOR_HOST (`edgefleet local up` prints "
                "it); or unset telemetry.pubsub_project to write the local sink. Messages wait in the spool",
            ) from error
        self._client: _Publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(
                max_messages=config.publish_batch_size, max_latency=config.publish_batch_latency_s
            ),
            transport=transport,
        )

    def _credentials(self, credentials_file: Path | None) -> Any:
        """Anonymous on an emulator; the device's credentials file; else None (Application Default)."""
        from google.auth.credentials import AnonymousCredentials

        if self.emulator_host:
            return AnonymousCredentials()
        if credentials_file is None:
            return None
        from edgefleet.device.credentials import CredentialsError, load_device_credentials

        try:
            return load_device_credentials(credentials_file)
        except CredentialsError as error:
            raise TelemetryError(f"telemetry to {self.topic_path}: {error.message}", error.fix) from error

    def _transport(self, reconnect_max_s: float, credentials: Any) -> Any:
        import grpc
        from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport

        emulator_host = self.emulator_host
        extra_options = _reconnect_options(reconnect_max_s)

        def make_channel(
            host: str, *, options: Sequence[tuple[str, Any]] = (), **kwargs: Any
        ) -> grpc.Channel:
            # Called by the transport with its own options (message sizes, keepalive); ours are added.
            merged = [*options, *extra_options]
            if emulator_host:
                return grpc.insecure_channel(emulator_host, options=merged)
            # create_channel's own **kwargs are unannotated in google-cloud-pubsub
            return PublisherGrpcTransport.create_channel(  # pyright: ignore[reportUnknownMemberType]
                host, options=merged, **kwargs)

        return PublisherGrpcTransport(channel=make_channel, credentials=credentials)

    def publish_batch(self, entries: Sequence[SpoolEntry]) -> PublishOutcome:
        futures: list[tuple[int, concurrent.futures.Future[str]]] = []
        errors: list[BaseException] = []
        for entry in entries:
            try:
                future = self._client.publish(
                    self.topic_path,
                    entry.data,
                    retry=self._retry,
                    timeout=self.publish_timeout_s,
                    **entry.attributes,
                )
            except (RuntimeError, ValueError, TypeError) as error:  # client stopped, message too large
                errors.append(error)
                continue
            futures.append((entry.seq, future))
        done, _ = concurrent.futures.wait([future for _, future in futures], timeout=self.max_batch_wait_s)
        acked: list[int] = []
        for seq, future in futures:
            if future not in done:
                errors.append(TimeoutError(f"no answer within {self.max_batch_wait_s:.0f} s"))
                continue
            error = future.exception()
            if error is None:
                acked.append(seq)
            else:
                errors.append(error)
        return PublishOutcome(acked, self._describe(errors[0]) if errors else None)

    def _describe(self, error: BaseException) -> TelemetryError:
        from google.api_core import exceptions as google_errors

        cause = error
        if isinstance(error, google_errors.RetryError):
            last: object = error.cause  # pyright: ignore[reportUnknownMemberType] - api_core leaves it unannotated
            if isinstance(last, BaseException):
                cause = last
        where = f"publishing to {self.destination}"
        if isinstance(cause, google_errors.NotFound):
            return TopicMissingError(
                f"Pub/Sub topic {self.topic_path} does not exist ({where}: {cause.message})",
                "create it: locally `edgefleet local up` (with PUBSUB_EMULATOR_HOST pointing at that "
                "emulator), on GCP `pulumi up`; or set telemetry.pubsub_project / telemetry.pubsub_topic "
                "to an existing topic. Messages wait in the spool meanwhile",
            )
        if isinstance(cause, (google_errors.PermissionDenied, google_errors.Unauthenticated)):
            return TelemetryError(
                f"Pub/Sub refused {where}: {cause}",
                "give the device's service account roles/pubsub.publisher on the topic (`pulumi up` does) "
                "and check the device's credentials (credentials_file in agent.yaml; `edgefleet-agent doctor`)",
            )
        if isinstance(
            cause,
            (
                google_errors.RetryError,
                google_errors.ServiceUnavailable,
                google_errors.DeadlineExceeded,
                TimeoutError,
            ),
        ):
            return TelemetryError(
                f"Pub/Sub unreachable {where}: {cause}",
                "check the network, or that the emulator runs (`edgefleet local up`); messages wait in the "
                "spool and are sent when it is back",
            )
        return TelemetryError(
            f"Pub/Sub failed {where}: {type(cause).__name__}: {cause}",
            "see the agent log; messages wait in the spool and are retried",
        )

    def close(self) -> None:
        """Stops the client (unfinished publishes fail; their messages stay in the spool)."""
        try:
            self._client.stop()
        except RuntimeError:
            pass  # already stopped
        self._client.transport.close()
