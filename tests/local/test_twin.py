"""The local twin on the real emulators: the same names, schema and dead-letter policy as the cloud stack."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.api_core import exceptions as google_errors
from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1, storage
from google.pubsub_v1.types import Encoding
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.infra.config import TelemetrySettings
from edgefleet.kernel.contracts import layout
from edgefleet.kernel.contracts.telemetry import (
    Health,
    ModelRef,
    TelemetryMessage,
    decode_telemetry,
    encode_telemetry,
    telemetry_avro_definition,
)
from edgefleet.kernel.errors import ConfigError
from edgefleet.local.twin import (
    TwinSettings,
    dead_letter_difference,
    emulator_clients,
    schema_difference,
    subscription_request,
    topic_request,
    twin_down,
    twin_paths,
    twin_up,
)

TIMEOUT_S = 30.0
MAX_PULLS = 50
POLL_S = 0.5


def _message(seq: int) -> TelemetryMessage:
    return TelemetryMessage(
        device_id="cam-01",
        seq=seq,
        time=datetime(2025, 1, 1, tzinfo=UTC),
        kind="summary",
        model=ModelRef(name="mobilenet", version="1.0.0", variant="cpu", backend="cpu"),
        health=Health(uptime_s=10.0, cpu_temp_c=48.0),
    )


@pytest.fixture
def settings(unique_name: str, tmp_path: Path) -> TwinSettings:
    """Twin settings in a project of the test's own on the shared emulators."""
    return TwinSettings(
        project=f"twin-{unique_name}",
        bucket=f"twin-registry-{unique_name}",
        registry_dir=tmp_path / "registry",
    )


def _pull(subscriber: pubsub_v1.SubscriberClient, subscription: str, count: int) -> list:
    received = []
    for _ in range(MAX_PULLS):
        response = subscriber.pull(subscription=subscription, max_messages=count, timeout=TIMEOUT_S)
        received += response.received_messages
        if len(received) >= count:
            return received
    raise AssertionError(f"{len(received)} of {count} messages arrived on {subscription}")


def test_local_up_creates_the_cloud_stack_on_the_emulators(
    pubsub_env, gcs_env, settings: TwinSettings
) -> None:
    state = twin_up(emulator_clients(settings.project), settings)
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    defaults = TelemetrySettings()

    topic = publisher.get_topic(topic=state.topic, timeout=TIMEOUT_S)
    assert topic.name == f"projects/{settings.project}/topics/{layout.TELEMETRY_TOPIC}"
    assert topic.schema_settings.schema == f"projects/{settings.project}/schemas/{layout.TELEMETRY_SCHEMA}"
    schema = pubsub_v1.SchemaServiceClient().get_schema(name=state.schema, timeout=TIMEOUT_S)
    assert json.loads(schema.definition) == json.loads(telemetry_avro_definition())

    monitor = subscriber.get_subscription(subscription=state.monitor_subscription, timeout=TIMEOUT_S)
    assert monitor.name.endswith(f"/subscriptions/{layout.MONITOR_SUBSCRIPTION}")
    assert monitor.topic == state.topic
    assert monitor.dead_letter_policy.dead_letter_topic == state.dead_letter_topic
    assert monitor.dead_letter_policy.max_delivery_attempts == defaults.dead_letter_max_attempts
    assert monitor.ack_deadline_seconds == defaults.ack_deadline_seconds
    dead_letters = subscriber.get_subscription(subscription=state.dead_letter_subscription, timeout=TIMEOUT_S)
    assert dead_letters.topic == f"projects/{settings.project}/topics/{layout.TELEMETRY_DEAD_LETTER_TOPIC}"

    client = storage.Client(project=settings.project, credentials=AnonymousCredentials())
    assert state.registry_uri == f"gs://{settings.bucket}"
    assert client.get_bucket(settings.bucket, timeout=TIMEOUT_S).name == settings.bucket
    twin_down(emulator_clients(settings.project), settings)


def test_the_twin_carries_agent_telemetry_and_refuses_malformed(pubsub_env, settings: TwinSettings) -> None:
    state = twin_up(emulator_clients(settings.project), settings)
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    message = _message(1)
    publisher.publish(state.topic, encode_telemetry(message), **message.attributes()).result(
        timeout=TIMEOUT_S
    )
    with pytest.raises(google_errors.InvalidArgument):
        publisher.publish(state.topic, b'{"device_id": "cam-01"}').result(timeout=TIMEOUT_S)
    [received] = _pull(subscriber, state.monitor_subscription, 1)
    assert decode_telemetry(received.message.data) == message
    assert received.message.attributes["device_id"] == "cam-01"
    twin_down(emulator_clients(settings.project), settings)


def test_local_up_twice_keeps_what_is_there(pubsub_env, gcs_env, settings: TwinSettings) -> None:
    clients = emulator_clients(settings.project)
    first = twin_up(clients, settings)
    pubsub_v1.PublisherClient().publish(first.topic, encode_telemetry(_message(1))).result(timeout=TIMEOUT_S)
    registry = storage.Client(project=settings.project, credentials=AnonymousCredentials()).bucket(
        settings.bucket
    )
    registry.blob("models/m/channels/stable.json").upload_from_string(b"{}", timeout=TIMEOUT_S)

    assert twin_up(clients, settings) == first
    [kept] = _pull(pubsub_v1.SubscriberClient(), first.monitor_subscription, 1)
    assert decode_telemetry(kept.message.data).seq == 1
    assert registry.blob("models/m/channels/stable.json").exists(timeout=TIMEOUT_S)
    twin_down(clients, settings)


def test_local_down_removes_everything_and_can_run_twice(pubsub_env, gcs_env, settings: TwinSettings) -> None:
    clients = emulator_clients(settings.project)
    state = twin_up(clients, settings)
    removed = twin_down(clients, settings)
    assert set(removed) == {
        state.topic,
        state.dead_letter_topic,
        state.monitor_subscription,
        state.dead_letter_subscription,
        state.schema,
        state.registry_uri,
    }
    with pytest.raises(google_errors.NotFound):
        pubsub_v1.PublisherClient().get_topic(topic=state.topic, timeout=TIMEOUT_S)
    with pytest.raises(google_errors.NotFound):
        storage.Client(project=settings.project, credentials=AnonymousCredentials()).get_bucket(
            settings.bucket, timeout=TIMEOUT_S
        )
    assert twin_down(clients, settings) == []


def test_undeliverable_telemetry_goes_to_the_dead_letter_subscription(
    pubsub_env, settings: TwinSettings
) -> None:
    # Zero back-off so the five redeliveries happen at once; the policy itself is the twin's default.
    fast = settings.model_copy(
        update={
            "telemetry": TelemetrySettings(retry_minimum_backoff_seconds=0, retry_maximum_backoff_seconds=0)
        }
    )
    state = twin_up(emulator_clients(fast.project), fast)
    subscriber = pubsub_v1.SubscriberClient()
    pubsub_v1.PublisherClient().publish(state.topic, encode_telemetry(_message(9))).result(timeout=TIMEOUT_S)
    attempts = 0
    for _ in range(MAX_PULLS):  # each pull waits for the redelivery (bounded by TIMEOUT_S)
        if attempts == fast.telemetry.dead_letter_max_attempts:
            break
        response = subscriber.pull(subscription=state.monitor_subscription, max_messages=1, timeout=TIMEOUT_S)
        for received in response.received_messages:
            attempts += 1
            assert received.delivery_attempt == attempts
            subscriber.modify_ack_deadline(
                subscription=state.monitor_subscription, ack_deadline_seconds=0, ack_ids=[received.ack_id]
            )  # a nack
    assert attempts == fast.telemetry.dead_letter_max_attempts
    # The emulator forwards to the dead-letter topic when it would deliver once more (Pub/Sub does it on its
    # own): keep pulling the source, which must stay empty, until the message shows up dead-lettered.
    dead_lettered = []
    for _ in range(MAX_PULLS):
        extra = subscriber.pull(
            subscription=state.monitor_subscription,
            max_messages=1,
            timeout=TIMEOUT_S,
            return_immediately=True,
        )
        assert not extra.received_messages, "delivered more often than the dead-letter policy allows"
        dead_lettered = subscriber.pull(
            subscription=state.dead_letter_subscription,
            max_messages=1,
            timeout=TIMEOUT_S,
            return_immediately=True,
        ).received_messages
        if dead_lettered:
            break
        time.sleep(POLL_S)
    [dead] = dead_lettered
    assert decode_telemetry(dead.message.data).seq == 9
    twin_down(emulator_clients(fast.project), fast)


def test_an_existing_subscription_without_dead_lettering_is_reported(
    pubsub_env, settings: TwinSettings
) -> None:
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = f"projects/{settings.project}/topics/{layout.TELEMETRY_TOPIC}"
    subscription = f"projects/{settings.project}/subscriptions/{layout.MONITOR_SUBSCRIPTION}"
    clients = emulator_clients(settings.project)
    twin_up(clients, settings)
    subscriber.delete_subscription(subscription=subscription, timeout=TIMEOUT_S)
    subscriber.create_subscription(request={"name": subscription, "topic": topic}, timeout=TIMEOUT_S)
    with pytest.raises(ConfigError, match=layout.MONITOR_SUBSCRIPTION) as raised:
        twin_up(clients, settings)
    assert "edgefleet local down" in (raised.value.fix or "")
    assert not subscriber.get_subscription(
        subscription=subscription, timeout=TIMEOUT_S
    ).dead_letter_policy.dead_letter_topic
    twin_down(clients, settings)
    assert publisher  # the topic was removed by down; nothing else to check


def test_local_commands_use_a_registry_directory_without_a_gcs_emulator(
    pubsub_env, settings: TwinSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    runner = CliRunner()
    options = ["--project", settings.project, "--registry-dir", str(settings.registry_dir)]
    result = runner.invoke(app, ["local", "up", *options])
    assert result.exit_code == 0, result.output
    assert settings.registry_dir.is_dir()
    assert f"projects/{settings.project}/topics/{layout.TELEMETRY_TOPIC}" in result.output
    (settings.registry_dir / "models").mkdir()  # the registry now holds something: down must keep it

    result = runner.invoke(app, ["local", "down", *options])
    assert result.exit_code == 0, result.output
    assert f"removed projects/{settings.project}/subscriptions/{layout.MONITOR_SUBSCRIPTION}" in result.output
    assert (settings.registry_dir / "models").is_dir()


def test_local_up_refuses_to_run_without_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    result = CliRunner().invoke(app, ["local", "up"])
    assert result.exit_code == 2
    assert "PUBSUB_EMULATOR_HOST" in result.output


def test_the_requests_carry_the_cloud_stacks_telemetry_settings() -> None:
    telemetry = TelemetrySettings()
    paths = twin_paths("p-123456")
    monitor = subscription_request(paths.monitor_subscription, paths.topic, telemetry,
                                   dead_letter_topic=paths.dead_letter_topic)
    assert monitor["dead_letter_policy"] == {"dead_letter_topic": "projects/p-123456/topics/"
                                             f"{layout.TELEMETRY_DEAD_LETTER_TOPIC}",
                                             "max_delivery_attempts": telemetry.dead_letter_max_attempts}
    assert monitor["ack_deadline_seconds"] == telemetry.ack_deadline_seconds
    dead_letters = subscription_request(paths.dead_letter_subscription, paths.dead_letter_topic, telemetry)
    assert "dead_letter_policy" not in dead_letters and "retry_policy" not in dead_letters
    assert "schema_settings" not in topic_request(paths.topic, telemetry)
    assert topic_request(paths.topic, telemetry, paths.schema)["schema_settings"] == {"schema": paths.schema,
                                                                                      "encoding": Encoding.JSON}


def test_what_differs_from_the_twins_definition_is_named() -> None:
    assert schema_difference("", None) is None and schema_difference("s", "s") is None
    assert schema_difference("", "s") == "schema none, expected s"
    assert schema_difference("other", None) == "schema other, expected none"
    assert dead_letter_difference("dl", 5, "dl", 5) is None
    assert dead_letter_difference("", 0, "dl", 5) == "dead-letter policy none after 0 attempts"
