"""The Avro JSON encoder compiled once per schema (issue 24: it ran a generic walk per message, a third of the
telemetry writer's time at a message per inference) writes what the generic walk writes."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from edgefleet.kernel.contracts.avro import AvroJson, to_avro_json
from edgefleet.kernel.contracts.telemetry import Health, InferenceSummary, ModelRef, ResultItem, TelemetryMessage


class Node(BaseModel):
    """A record that holds itself (a named type referenced while it is being compiled)."""

    name: str
    child: Node | None = None
    children: list[Node] = []
    plain: list[int] = []


def test_a_recursive_record_is_wrapped_as_the_generic_walk_wraps_it() -> None:
    codec = AvroJson.of(Node)
    value = Node(name="a", child=Node(name="b", child=Node(name="c")),
                 children=[Node(name="d", child=Node(name="e"))], plain=[1, 2]).model_dump(mode="json")
    wrapped = codec.wrap(value)
    assert wrapped == to_avro_json(codec.schema, value)
    assert wrapped["child"]["Node"]["child"]["Node"] == {"name": "c", "child": None, "children": [], "plain": []}
    assert wrapped["children"][0]["child"] == {"Node": {"name": "e", "child": None, "children": [], "plain": []}}


def test_telemetry_messages_are_wrapped_as_the_generic_walk_wraps_them() -> None:
    codec = AvroJson.of(TelemetryMessage)
    model = ModelRef(name="m", version="1.0.0", variant="cpu", backend="cpu")
    summary = InferenceSummary(count=1, errors=0, latency_ms_p50=2.5, latency_ms_p95=2.5, latency_ms_max=2.5,
                               fps=100.0, window_s=0.01, top=[ResultItem(id=3, label="cat", score=0.9)])
    for message in (
        TelemetryMessage(device_id="d", seq=1, time=datetime(2026, 1, 1, tzinfo=UTC), kind="inference",
                         model=model, inference=summary, health=Health(uptime_s=1.0, cpu_temp_c=51.5)),
        TelemetryMessage(device_id="d", seq=2, time=datetime(2026, 1, 1, tzinfo=UTC), kind="summary",
                         health=Health(uptime_s=1.0)),
    ):
        plain = message.model_dump(mode="json", by_alias=True)
        assert codec.wrap(plain) == to_avro_json(codec.schema, plain)
    malformed = {"device_id": "d", "model": "not a record"}  # left for validation to reject, as the walk does
    assert codec.wrap(malformed) == to_avro_json(codec.schema, malformed) == {"device_id": "d",
                                                                              "model": {"ModelRef": "not a record"}}
