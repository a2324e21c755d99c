"""The telemetry Avro schema: generated from the device's model, checked by fastavro and by the real Pub/Sub
emulator (which validates JSON messages against Avro schemas as Pub/Sub does)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import fastavro
import pytest
from google.api_core import exceptions as google_errors
from google.cloud import pubsub_v1
from google.pubsub_v1.types import Encoding, Schema

from edgefleet.kernel.contracts.avro import AvroSchemaError, avro_schema
from edgefleet.kernel.contracts.telemetry import (
    Event,
    Health,
    InferenceSummary,
    ModelRef,
    ResultItem,
    TelemetryMessage,
    decode_telemetry,
    encode_telemetry,
    telemetry_avro_definition,
    telemetry_avro_schema,
)

RESULT_TIMEOUT_S = 30.0


def _full_message(seq: int = 7) -> TelemetryMessage:
    """A message with every optional part set, as an agent running a detection model sends it."""
    return TelemetryMessage(
        device_id="cam-07",
        seq=seq,
        time=datetime(2025, 3, 1, 12, 30, 5, 250000, tzinfo=UTC),
        kind="summary",
        model=ModelRef(name="ssd-mobilenet", version="1.4.0", variant="edgetpu", backend="edgetpu:usb:0"),
        inference=InferenceSummary(
            count=300,
            errors=1,
            latency_ms_p50=11.5,
            latency_ms_p95=14.25,
            latency_ms_max=30.0,
            fps=29.9,
            window_s=10.0,
            top=[
                ResultItem(id=17, label="cat", score=0.83, box=[12.0, 30.5, 200.0, 240.0]),
                ResultItem(id=3, label="dog", score=0.11),
            ],
        ),
        health=Health(
            cpu_temp_c=61.5,
            uptime_s=86400.0,
            mem_total_mb=1024.0,
            mem_available_mb=512.5,
            load_1m=0.75,
            tpu_present=True,
            spool_depth=12,
            spool_dropped=0,
        ),
        event=Event(kind="swap", detail="1.3.0 -> 1.4.0", model_version="1.4.0"),
    )


def _minimal_message() -> TelemetryMessage:
    return TelemetryMessage(
        device_id="cam-08",
        seq=1,
        time=datetime(2025, 3, 1, tzinfo=UTC),
        kind="event",
        health=Health(uptime_s=5.0),
    )


def test_schema_has_every_field_of_the_model_under_its_json_name() -> None:
    schema = telemetry_avro_schema()
    fastavro.parse_schema(schema)
    assert [field["name"] for field in schema["fields"]] == list(
        json.loads(_minimal_message().to_json_bytes())
    )
    types = {field["name"]: field["type"] for field in schema["fields"]}
    assert types["seq"] == "long"
    assert types["kind"]["symbols"] == ["inference", "summary", "event"]
    assert types["model"][0] == "null" and types["model"][1]["name"] == "ModelRef"


def test_an_unmappable_model_field_is_named() -> None:
    from pydantic import BaseModel

    class Odd(BaseModel):
        blob: dict[str, int]

    with pytest.raises(AvroSchemaError, match=r"Odd\.blob"):
        avro_schema(Odd)


@pytest.mark.parametrize("message", [_full_message(), _minimal_message()], ids=["full", "minimal"])
def test_an_agent_message_reads_back_with_an_independent_avro_decoder(message: TelemetryMessage) -> None:
    encoded = encode_telemetry(message)
    [record] = list(fastavro.json_reader(io.StringIO(encoded.decode()), telemetry_avro_schema()))
    assert record == message.model_dump(mode="json", by_alias=True)
    assert decode_telemetry(encoded) == message
    assert decode_telemetry(message.to_json_bytes()) == message  # plain JSON still decodes


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "heartbeat"},  # not one of the enum's symbols
        {"seq": "seven"},
        {"health": None},
    ],
)
def test_fastavro_rejects_a_malformed_message(change: dict[str, object]) -> None:
    record = {**_full_message().model_dump(mode="json", by_alias=True), **change}
    with pytest.raises(fastavro.validation.ValidationError):
        fastavro.validation.validate(record, fastavro.parse_schema(telemetry_avro_schema()))


@pytest.fixture
def validated_topic(pubsub_env, unique_name: str):
    """A topic with the generated schema (JSON encoding) on the real emulator, and a subscription on it."""
    project = pubsub_env.project
    schemas = pubsub_v1.SchemaServiceClient()
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    schema = schemas.create_schema(
        request={
            "parent": f"projects/{project}",
            "schema_id": f"telemetry-{unique_name}",
            "schema": Schema(type_=Schema.Type.AVRO, definition=telemetry_avro_definition()),
        },
        timeout=RESULT_TIMEOUT_S,
    )
    topic = publisher.create_topic(
        request={
            "name": f"projects/{project}/topics/telemetry-{unique_name}",
            "schema_settings": {"schema": schema.name, "encoding": Encoding.JSON},
        },
        timeout=RESULT_TIMEOUT_S,
    )
    subscription = subscriber.create_subscription(
        request={"name": f"projects/{project}/subscriptions/telemetry-{unique_name}", "topic": topic.name},
        timeout=RESULT_TIMEOUT_S,
    )
    yield publisher, subscriber, topic.name, subscription.name
    subscriber.delete_subscription(subscription=subscription.name, timeout=RESULT_TIMEOUT_S)
    publisher.delete_topic(topic=topic.name, timeout=RESULT_TIMEOUT_S)
    schemas.delete_schema(name=schema.name, timeout=RESULT_TIMEOUT_S)


def _publish(publisher: pubsub_v1.PublisherClient, topic: str, data: bytes) -> str:
    return publisher.publish(topic, data, timeout=RESULT_TIMEOUT_S).result(timeout=RESULT_TIMEOUT_S)


def test_pubsub_accepts_an_agent_message_and_delivers_it_intact(validated_topic) -> None:
    publisher, subscriber, topic, subscription = validated_topic
    sent = [_full_message(seq=1), _minimal_message()]
    for message in sent:
        _publish(publisher, topic, encode_telemetry(message))
    received = []
    while len(received) < len(sent):
        response = subscriber.pull(subscription=subscription, max_messages=10, timeout=RESULT_TIMEOUT_S)
        received += [decode_telemetry(item.message.data) for item in response.received_messages]
        subscriber.acknowledge(
            subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages]
        )
    assert sorted(received, key=lambda m: m.device_id) == sent


@pytest.mark.parametrize(
    "data",
    [
        json.dumps({**json.loads(encode_telemetry(_full_message())), "kind": "heartbeat"}).encode(),
        json.dumps(
            {
                key: value
                for key, value in json.loads(encode_telemetry(_full_message())).items()
                if key != "seq"
            }
        ).encode(),
        json.dumps({**json.loads(encode_telemetry(_full_message())), "seq": "seven"}).encode(),
        b"not json at all",
    ],
    ids=["unknown-kind", "no-seq", "seq-not-a-number", "not-json"],
)
def test_pubsub_rejects_a_malformed_message(validated_topic, data: bytes) -> None:
    publisher, _, topic, _ = validated_topic
    with pytest.raises(google_errors.InvalidArgument):
        _publish(publisher, topic, data)


def test_pubsub_rejects_plain_json_and_accepts_what_the_agent_sends(validated_topic) -> None:
    """Why the wire format is the Avro JSON encoding: Pub/Sub reads JSON with it, where a non-null union
    value must name its branch. Plain JSON of a message with a model or a CPU temperature is refused; what
    the agent sends (`to_json_bytes()`) is accepted."""
    publisher, _, topic, _ = validated_topic
    with pytest.raises(google_errors.InvalidArgument):
        _publish(publisher, topic, _full_message().model_dump_json(by_alias=True).encode())
    assert _publish(publisher, topic, _full_message().to_json_bytes())
    assert _publish(publisher, topic, _minimal_message().to_json_bytes())


def test_earlier_schemas_are_frozen_and_each_revision_only_adds_a_nullable_field() -> None:
    from edgefleet.kernel.contracts.telemetry import telemetry_schema_revisions

    v1, v2, v3 = (json.loads(definition) for definition in telemetry_schema_revisions())
    assert v3 == json.loads(telemetry_avro_definition())

    def summary_fields(schema: dict) -> list[dict]:
        inference = next(f for f in schema["fields"] if f["name"] == "inference")
        return inference["type"][1]["fields"]

    def names(schema: dict) -> list[str]:
        return [f["name"] for f in summary_fields(schema)]

    assert names(v2) == [*names(v1), "dist"]
    assert names(v3) == [*names(v2), "shadow"]
    for schema, added in ((v2, "dist"), (v3, "shadow")):
        field = next(f for f in summary_fields(schema) if f["name"] == added)
        assert field["type"][0] == "null" and field["default"] is None  # old senders' messages stay valid


@pytest.fixture
def revised_topic(pubsub_env, unique_name: str):
    """A topic enforcing a schema with every telemetry revision, as the local twin and `pulumi up` leave it."""
    from edgefleet.kernel.contracts.telemetry import telemetry_schema_revisions

    project = pubsub_env.project
    schemas = pubsub_v1.SchemaServiceClient()
    publisher = pubsub_v1.PublisherClient()
    name = f"projects/{project}/schemas/telemetry-rev-{unique_name}"
    first, *later = telemetry_schema_revisions()
    schemas.create_schema(request={"parent": f"projects/{project}", "schema_id": f"telemetry-rev-{unique_name}",
                                   "schema": Schema(type_=Schema.Type.AVRO, definition=first)},
                          timeout=RESULT_TIMEOUT_S)
    for definition in later:
        schemas.commit_schema(request={"name": name, "schema": Schema(name=name, type_=Schema.Type.AVRO,
                                                                       definition=definition)},
                              timeout=RESULT_TIMEOUT_S)
    revisions = list(schemas.list_schema_revisions(request={"name": name}, timeout=RESULT_TIMEOUT_S))
    topic = publisher.create_topic(request={"name": f"projects/{project}/topics/telemetry-rev-{unique_name}",
                                            "schema_settings": {"schema": name, "encoding": Encoding.JSON}},
                                   timeout=RESULT_TIMEOUT_S)
    yield publisher, topic.name, revisions
    publisher.delete_topic(topic=topic.name, timeout=RESULT_TIMEOUT_S)
    schemas.delete_schema(name=name, timeout=RESULT_TIMEOUT_S)


def test_a_topic_with_every_revision_takes_agents_of_every_telemetry_schema(revised_topic) -> None:
    from edgefleet.kernel.contracts import distributions
    from edgefleet.kernel.contracts.telemetry import ShadowSummary

    publisher, topic, revisions = revised_topic
    assert len(revisions) == 3  # the emulator keeps schema revisions
    v2 = _full_message(seq=2)
    v2 = v2.model_copy(update={"schema_": 2, "inference": v2.inference.model_copy(update={
        "dist": distributions.build(latency={12: 40}, score={19: 40}, classes={3: 30, 7: 10})})})
    v1 = _full_message(seq=1).model_copy(update={"schema_": 1})
    every_class = distributions.build(latency={12: 100}, score={19: 100}, classes={i: 2 for i in range(50)},
                                      top_k=1024)
    shadow = ShadowSummary(model=ModelRef(name="ssd-mobilenet", version="1.5.0", variant="cpu", backend="cpu"),
                           frames=10, top1_agree=9, primary=distributions.build(score={19: 10}),
                           candidate=distributions.build(score={18: 10}), score_delta=[{"i": 19, "n": 10}])
    v3 = _full_message(seq=3)
    v3 = v3.model_copy(update={"inference": TelemetryMessage.model_validate({
        **v3.model_dump(by_alias=True), "inference": {**v3.inference.model_dump(), "dist": every_class.model_dump(),
                                                      "shadow": shadow.model_dump()}}).inference})
    assert len(v3.inference.dist.classes) == 50 and v3.schema_ == 3
    for message in (v1, v2, v3):
        _publish(publisher, topic, encode_telemetry(message))
    with pytest.raises(google_errors.InvalidArgument):  # still validated: a wrong dist is refused
        _publish(publisher, topic, encode_telemetry(v2).replace(b'"classes":[', b'"classes":"x","y":['))
