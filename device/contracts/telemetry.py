"""The telemetry message every agent publishes and the fleet monitor reads.

JSON on the wire (one message per Pub/Sub message) in the Avro JSON encoding of the schema generated from
this model (`contracts.avro`), attributes `device_id` and `model_version`.

Versions: schema 2 adds `inference.dist` (mergeable distributions, `contracts.distributions`); readers (the
fleet monitor) accept 1 and 2 and are upgraded before the agents. On Pub/Sub, 2 is a new revision of the same
schema resource, so a schema-enforced topic keeps accepting agents that still send 1. Types are
kept Avro-friendly (records, strings, numbers, nullable fields, arrays of records) because the Pulumi
program generates the topic's Avro schema from this model.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgefleet.device.contracts.distributions import Distributions

TELEMETRY_SCHEMA_VERSION = 2
TELEMETRY_SCHEMA_VERSIONS = (1, 2)

MessageKind = Literal["inference", "summary", "event"]
EventKind = Literal["started", "swap", "swap_failed", "rollback", "error", "stopped"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRef(_Frozen):
    """Which model produced the results."""

    name: str
    version: str
    variant: Literal["edgetpu", "cpu"]
    backend: str = Field(description="'edgetpu:usb:0', 'cpu' ...")


class ResultItem(_Frozen):
    """One classification or detection result."""

    id: int
    label: str
    score: float
    box: list[float] | None = Field(default=None, description="xmin, ymin, xmax, ymax in image pixels")


class InferenceSummary(_Frozen):
    """Inferences covered by this message: one (mode `every`) or a window (mode `summary`)."""

    count: int = Field(ge=0)
    errors: int = Field(default=0, ge=0)
    latency_ms_p50: float = Field(ge=0)
    latency_ms_p95: float = Field(ge=0)
    latency_ms_max: float = Field(ge=0)
    fps: float = Field(ge=0)
    window_s: float = Field(ge=0)
    top: list[ResultItem] = Field(default_factory=list, description="results of the last (sampled) frame")
    dist: Distributions | None = Field(default=None, description="(schema 2) the window's distributions")


class Health(_Frozen):
    """Device health at the time of the message."""

    cpu_temp_c: float | None = None
    uptime_s: float = Field(ge=0)
    mem_total_mb: float | None = None
    mem_available_mb: float | None = None
    load_1m: float | None = None
    tpu_present: bool = False
    spool_depth: int = Field(default=0, ge=0)
    spool_dropped: int = Field(default=0, ge=0)


class Event(_Frozen):
    """Something that happened on the device: a swap, a refused model, a rollback, an error."""

    kind: EventKind
    detail: str = ""
    model_version: str | None = Field(default=None, description="the version running after the event")
    from_version: str | None = Field(default=None, description="swap and rollback: the version left")


class TelemetryMessage(_Frozen):
    """One telemetry message (schema version 2; 1 is still read)."""

    schema_: int = Field(default=TELEMETRY_SCHEMA_VERSION, alias="schema", ge=1, le=TELEMETRY_SCHEMA_VERSION)
    device_id: str = Field(min_length=1)
    seq: int = Field(ge=1, description="per-device, monotonically increasing, survives restarts")
    time: datetime
    kind: MessageKind
    model: ModelRef | None = None
    inference: InferenceSummary | None = None
    health: Health
    event: Event | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _dist_needs_v2(self) -> TelemetryMessage:
        if self.schema_ < 2 and self.inference is not None and self.inference.dist is not None:
            raise ValueError("inference.dist needs telemetry schema 2")
        return self

    def to_json_bytes(self) -> bytes:
        """Wire format: JSON in the Avro JSON encoding of the topic's schema (`contracts.avro`), which
        Pub/Sub validates on a schema-enforced topic."""
        from edgefleet.device.contracts.avro import encode_telemetry

        return encode_telemetry(self)

    @classmethod
    def from_json_bytes(cls, data: bytes) -> TelemetryMessage:
        """Parses and validates one message (Avro JSON encoding or plain JSON).

        Raises:
            ValueError: not JSON; pydantic.ValidationError (a ValueError too) when not a valid message.
        """
        from edgefleet.device.contracts.avro import decode_telemetry

        return decode_telemetry(data)

    def attributes(self) -> dict[str, str]:
        """Pub/Sub attributes: device_id and model_version (empty when no model runs)."""
        return {"device_id": self.device_id, "model_version": self.model.version if self.model else ""}
