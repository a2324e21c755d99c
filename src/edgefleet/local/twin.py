"""The local twin of the cloud stack: the same topics, schema, subscriptions and registry on the emulators.

Built from the same definitions as the Pulumi program: Pub/Sub names from
`edgefleet.kernel.contracts.layout`, the Avro schema from `edgefleet.kernel.contracts.telemetry`, retention,
ack deadline and dead-letter attempts from `edgefleet.infra.config.TelemetrySettings` defaults. What the
emulators cannot have (IAM, monitoring, bucket hardening) is left out. `twin_up` is idempotent: what
exists and matches is kept; what exists but differs is reported, never silently changed. `twin_down` removes
what `twin_up` created (a local registry directory only when empty: it may hold models).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from google.api_core import exceptions as google_errors
from google.protobuf import duration_pb2
from pydantic import BaseModel, ConfigDict, Field

from edgefleet.infra.config import TelemetrySettings
from edgefleet.kernel.contracts import layout
from edgefleet.kernel.contracts.telemetry import telemetry_schema_revisions
from edgefleet.kernel.errors import ConfigError

if TYPE_CHECKING:
    from google.cloud.pubsub_v1 import PublisherClient, SchemaServiceClient, SubscriberClient
    from google.cloud.storage import Client as StorageClient
    from google.pubsub_v1.types import Subscription, Topic

log = logging.getLogger(__name__)
T = TypeVar("T")

PUBSUB_EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"
STORAGE_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


class TwinSettings(BaseModel):
    """What the twin creates and where."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field(default="edgefleet-local", min_length=6, description="emulator project id")
    bucket: str = Field(
        default="edgefleet-local-registry", min_length=3, description="registry bucket on the GCS emulator"
    )
    registry_dir: Path = Field(
        default=Path("~/.edgefleet/registry"),
        description="registry directory used when no GCS emulator is configured",
    )
    telemetry: TelemetrySettings = TelemetrySettings()
    request_timeout_s: float = Field(default=30.0, gt=0, description="deadline of each emulator request")


DEFAULT_SETTINGS = TwinSettings()


class TwinState(NamedTuple):
    """What the twin provides (full resource paths), as the agent and the monitor need them."""

    project: str
    topic: str
    dead_letter_topic: str
    monitor_subscription: str
    dead_letter_subscription: str
    schema: str | None
    registry_uri: str


class TwinClients(NamedTuple):
    """Clients of the emulators. `storage` is None when the registry is a local directory."""

    publisher: PublisherClient
    subscriber: SubscriberClient
    schemas: SchemaServiceClient
    storage: StorageClient | None


def emulator_clients(project: str) -> TwinClients:
    """Clients pointed at the emulators named by PUBSUB_EMULATOR_HOST (required) and STORAGE_EMULATOR_HOST.

    Raises:
        ConfigError: when PUBSUB_EMULATOR_HOST is not set (the twin never touches real Google Cloud).
    """
    if not os.environ.get(PUBSUB_EMULATOR_ENV):
        raise ConfigError(
            f"{PUBSUB_EMULATOR_ENV} is not set: the local twin only creates resources on the emulators",
            "start the Pub/Sub emulator (`gcloud beta emulators pubsub start --host-port=127.0.0.1:8085`) and "
            f"export {PUBSUB_EMULATOR_ENV}=127.0.0.1:8085; for the cloud, use `pulumi up` (infra/README.md)",
        )
    from google.cloud import pubsub_v1

    storage_client = None
    if os.environ.get(STORAGE_EMULATOR_ENV):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        storage_client = storage.Client(project=project, credentials=AnonymousCredentials())
    return TwinClients(
        pubsub_v1.PublisherClient(),
        pubsub_v1.SubscriberClient(),
        pubsub_v1.SchemaServiceClient(),
        storage_client,
    )


class TwinPaths(NamedTuple):
    """The full resource paths of the twin's Pub/Sub topics, subscriptions and schema in one project."""

    topic: str
    dead_letter_topic: str
    monitor_subscription: str
    dead_letter_subscription: str
    schema: str


def twin_paths(project: str) -> TwinPaths:
    return TwinPaths(
        topic=f"projects/{project}/topics/{layout.TELEMETRY_TOPIC}",
        dead_letter_topic=f"projects/{project}/topics/{layout.TELEMETRY_DEAD_LETTER_TOPIC}",
        monitor_subscription=f"projects/{project}/subscriptions/{layout.MONITOR_SUBSCRIPTION}",
        dead_letter_subscription=f"projects/{project}/subscriptions/{layout.DEAD_LETTER_SUBSCRIPTION}",
        schema=f"projects/{project}/schemas/{layout.TELEMETRY_SCHEMA}",
    )


def _whole_seconds(seconds: float) -> int:
    """google-cloud-storage's timeouts are whole seconds (rounded up, never shorter than asked)."""
    return math.ceil(seconds)


def _duration(seconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds)


def _differs(what: str, detail: str) -> ConfigError:
    return ConfigError(
        f"{what} already exists on the emulator but differs from the twin's definition ({detail})",
        "run `edgefleet local down` then `edgefleet local up` (the emulator keeps no data worth it)",
    )


def topic_request(name: str, telemetry: TelemetrySettings, schema_path: str | None = None) -> dict[str, object]:
    """The create request of a telemetry topic: the retention, and the Avro schema (JSON encoded) when given."""
    from google.pubsub_v1.types import Encoding

    request: dict[str, object] = {
        "name": name,
        "message_retention_duration": _duration(telemetry.message_retention_seconds),
    }
    if schema_path:
        request["schema_settings"] = {"schema": schema_path, "encoding": Encoding.JSON}
    return request


def subscription_request(
    name: str, topic: str, telemetry: TelemetrySettings, dead_letter_topic: str | None = None
) -> dict[str, object]:
    """The create request of a subscription: ack deadline and retention; with `dead_letter_topic`, the
    dead-letter policy (after `dead_letter_max_attempts`) and the retry back-off the monitor's has."""
    request: dict[str, object] = {
        "name": name,
        "topic": topic,
        "ack_deadline_seconds": telemetry.ack_deadline_seconds,
        "message_retention_duration": _duration(telemetry.subscription_retention_seconds),
    }
    if dead_letter_topic is not None:
        request["dead_letter_policy"] = {
            "dead_letter_topic": dead_letter_topic,
            "max_delivery_attempts": telemetry.dead_letter_max_attempts,
        }
        request["retry_policy"] = {
            "minimum_backoff": _duration(telemetry.retry_minimum_backoff_seconds),
            "maximum_backoff": _duration(telemetry.retry_maximum_backoff_seconds),
        }
    return request


def schema_difference(found: str, expected: str | None) -> str | None:
    """How an existing topic's schema (`found`, "" for none) differs from the twin's, None when it does not."""
    if (found or None) == expected:
        return None
    return f"schema {found or 'none'}, expected {expected or 'none'}"


def dead_letter_difference(found_topic: str, found_attempts: int, expected_topic: str,
                           expected_attempts: int) -> str | None:
    """How an existing subscription's dead-letter policy differs from the twin's, None when it does not."""
    if (found_topic, found_attempts) == (expected_topic, expected_attempts):
        return None
    return f"dead-letter policy {found_topic or 'none'} after {found_attempts} attempts"


def twin_up(clients: TwinClients, settings: TwinSettings = DEFAULT_SETTINGS) -> TwinState:
    """Creates the telemetry topic (with its Avro schema when enforced), the dead-letter topic, the monitor
    subscription with its dead-letter policy, the dead-letter subscription, and the registry.

    Raises:
        ConfigError: when something exists with another definition.
    """
    paths = twin_paths(settings.project)
    telemetry = settings.telemetry
    schema_path = _ensure_schema(clients, settings, paths.schema) if telemetry.enforce_schema else None
    topic = _ensure_topic(clients, settings, paths.topic, schema_path)
    difference = schema_difference(topic.schema_settings.schema, schema_path)
    if difference is not None:
        raise _differs(f"topic {paths.topic}", difference)
    _ensure_topic(clients, settings, paths.dead_letter_topic)
    monitor = _ensure_subscription(clients, settings, paths.monitor_subscription, paths.topic,
                                   dead_letter_topic=paths.dead_letter_topic)
    policy = monitor.dead_letter_policy
    difference = dead_letter_difference(policy.dead_letter_topic, policy.max_delivery_attempts,
                                        paths.dead_letter_topic, telemetry.dead_letter_max_attempts)
    if difference is not None:
        raise _differs(f"subscription {paths.monitor_subscription}", difference)
    _ensure_subscription(clients, settings, paths.dead_letter_subscription, paths.dead_letter_topic)
    state = TwinState(settings.project, paths.topic, paths.dead_letter_topic, paths.monitor_subscription,
                      paths.dead_letter_subscription, schema_path, _ensure_registry(clients, settings))
    log.info("local twin up: %s", state)
    return state


def _ensure_topic(clients: TwinClients, settings: TwinSettings, name: str, schema_path: str | None = None) -> Topic:
    request = topic_request(name, settings.telemetry, schema_path)
    timeout = settings.request_timeout_s
    return _create_or_get(lambda: clients.publisher.create_topic(request=request, timeout=timeout),
                          lambda: clients.publisher.get_topic(topic=name, timeout=timeout))


def _ensure_subscription(clients: TwinClients, settings: TwinSettings, name: str, topic: str, *,
                         dead_letter_topic: str | None = None) -> Subscription:
    request = subscription_request(name, topic, settings.telemetry, dead_letter_topic)
    timeout = settings.request_timeout_s
    return _create_or_get(lambda: clients.subscriber.create_subscription(request=request, timeout=timeout),
                          lambda: clients.subscriber.get_subscription(subscription=name, timeout=timeout))


def _create_or_get(create: Callable[[], T], get: Callable[[], T]) -> T:
    try:
        return create()
    except google_errors.AlreadyExists:
        return get()


def _ensure_schema(clients: TwinClients, settings: TwinSettings, schema_path: str) -> str | None:
    """Creates the Avro schema with every revision of the telemetry contract (oldest first), committing the
    ones missing from an existing schema; returns its path, or None when this emulator has no schema service.

    The topic names no revision range, so it accepts a message valid against any revision: agents still on
    telemetry schema 1 keep publishing while the others send 2.
    """
    from google.pubsub_v1.types import Schema

    revisions = telemetry_schema_revisions()
    timeout = settings.request_timeout_s
    try:
        clients.schemas.create_schema(
            request={
                "parent": f"projects/{settings.project}",
                "schema_id": layout.TELEMETRY_SCHEMA,
                "schema": Schema(name=schema_path, type_=Schema.Type.AVRO, definition=revisions[0]),
            },
            timeout=timeout,
        )
        present: list[str] = [revisions[0]]
    except google_errors.AlreadyExists:
        listed = clients.schemas.list_schema_revisions(request={"name": schema_path, "view": "FULL"},
                                                       timeout=timeout)
        present = [revision.definition for revision in listed]
        known = [json.loads(definition) for definition in revisions]
        if any(json.loads(definition) not in known for definition in present):
            raise _differs(f"schema {schema_path}", "another Avro definition") from None
    except (google_errors.MethodNotImplemented, google_errors.NotFound) as error:
        log.warning(
            "this Pub/Sub emulator has no schema service (%s): the topic will not validate messages", error
        )
        return None
    have = [json.loads(definition) for definition in present]
    for definition in revisions[1:]:
        if json.loads(definition) not in have:
            clients.schemas.commit_schema(
                request={"name": schema_path,
                         "schema": Schema(name=schema_path, type_=Schema.Type.AVRO, definition=definition)},
                timeout=timeout)
    return schema_path


def _ensure_registry(clients: TwinClients, settings: TwinSettings) -> str:
    if clients.storage is None:
        directory = settings.registry_dir.expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        return str(directory)
    try:
        clients.storage.create_bucket(settings.bucket, timeout=_whole_seconds(settings.request_timeout_s))
    except google_errors.Conflict:
        pass  # already there: the registry keeps its models
    return f"gs://{settings.bucket}"


def twin_down(clients: TwinClients, settings: TwinSettings = DEFAULT_SETTINGS) -> list[str]:
    """Removes what `twin_up` created; returns what it removed. Missing pieces are fine (idempotent)."""
    paths = twin_paths(settings.project)
    timeout = settings.request_timeout_s
    removed = []
    steps = [
        (
            paths.monitor_subscription,
            lambda: clients.subscriber.delete_subscription(subscription=paths.monitor_subscription, timeout=timeout),
        ),
        (
            paths.dead_letter_subscription,
            lambda: clients.subscriber.delete_subscription(
                subscription=paths.dead_letter_subscription, timeout=timeout
            ),
        ),
        (paths.topic, lambda: clients.publisher.delete_topic(topic=paths.topic, timeout=timeout)),
        (
            paths.dead_letter_topic,
            lambda: clients.publisher.delete_topic(topic=paths.dead_letter_topic, timeout=timeout),
        ),
        (paths.schema, lambda: clients.schemas.delete_schema(name=paths.schema, timeout=timeout)),
    ]
    for name, delete in steps:
        try:
            delete()
            removed.append(name)
        except (google_errors.NotFound, google_errors.MethodNotImplemented):
            continue
    if clients.storage is not None:
        try:
            bucket = clients.storage.bucket(settings.bucket)
            bucket.delete(force=True, timeout=_whole_seconds(settings.request_timeout_s))
            removed.append(f"gs://{settings.bucket}")
        except google_errors.NotFound:
            pass
    else:
        directory = settings.registry_dir.expanduser()
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
            removed.append(str(directory))
        elif directory.is_dir():
            log.warning(
                "kept registry directory %s: it holds models (remove it yourself if you mean to)", directory
            )
    log.info("local twin down: removed %s", removed)
    return removed
