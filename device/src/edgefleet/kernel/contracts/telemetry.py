"""The telemetry message every agent publishes and the fleet monitor reads.

JSON on the wire (one message per Pub/Sub message) in the Avro JSON encoding of the schema generated from
this model (`contracts.avro`), attributes `device_id` and `model_version`.

Versions: schema 2 adds `inference.dist` (mergeable distributions, `contracts.distributions`). Schema 3
(issues 21 and 25, one revision for both) lets `inference.dist.classes` list every class the window saw, up to
`MAX_RELEASE_CLASSES` (the release's labels are one class list for every window, device and version; schema 2
cut each window to its own top 32), and adds `inference.shadow`: a candidate model run beside the primary on
a sample of the window's frames (a shadow wave), never acted on. Readers (the fleet monitor) accept 1, 2 and 3
and are upgraded before the agents. On Pub/Sub, each schema is a new revision of the same schema resource, so
a schema-enforced topic keeps accepting agents that still send an older one. Types are
kept Avro-friendly (records, strings, numbers, nullable fields, arrays of records) because the Pulumi
program generates the topic's Avro schema from this model.
"""

from __future__ import annotations

import functools
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgefleet.kernel.contracts.avro import AvroJson
from edgefleet.kernel.contracts.distributions import CLASS_TOP_K, BucketCount, Distributions

TELEMETRY_SCHEMA_VERSION = 3
TELEMETRY_SCHEMA_VERSIONS = (1, 2, 3)

# Bounds on every number and string (issue 11, finding 4): a schema-valid message must also be one the fleet
# state can store (SQLite integers are 64-bit) and that no computation overflows. Wide enough for any real
# device; JSON-safe integers (2^53 - 1); no NaN or infinity.
MAX_INT = 2**53 - 1
# Float bounds are far above any real value (a rate measured over a tiny window can be large): what matters
# is that sums and products over a fleet stay finite.
MAX_MS = 1e12
MAX_SECONDS = 1e12
MAX_MB = 1e12
MAX_RATE = 1e12
MAX_SCORE = 1e12
MAX_TEXT = 8192
MAX_NAME = 256
MAX_RESULTS = 1000

# Bounds on what one message may claim (issue 20, item 4): one device must not crash the monitor or decide a
# verdict by volume, so every count is bounded by what a device can do in the window its message covers, and
# every histogram by its fixed buckets (`contracts.distributions`). Bounds on existing fields, same Avro schema:
# the schema version stays 2 (a message any agent of schema 1 or 2 sends is within them).
MAX_TELEMETRY_BYTES = 512 * 1024
"""The largest message body the monitor parses: above the largest message this contract allows (1000 results
with the longest labels, the longest event text, full histograms, every class of a 1,024-label release and
a full shadow block: about 0.49 MB), far below Pub/Sub's 10 MB.
Checked on the raw bytes, before any parsing."""
MAX_ATTRIBUTE_CHARS = 1024
"""The longest Pub/Sub attribute value the monitor reads (Pub/Sub's own limit)."""
MAX_DEVICE_FPS = 10_000.0
"""The most inferences per second one device can run (a tiny model on a fast CPU: 0.1 ms a frame; an Edge TPU
runs the smallest models at a few hundred)."""
MAX_WINDOW_S = 24 * 3600.0
"""The longest window one message may cover (agents send one per `summary_interval_s`, 10 s by default)."""
MIN_COUNTED_WINDOW_S = 1.0
"""A message covering less (one inference in mode `every`, window 0) is counted as covering this long."""
MAX_INFERENCES_PER_MESSAGE = int(MAX_DEVICE_FPS * MAX_WINDOW_S)
"""The most inferences (and errors) one message may report; a message of window w at most MAX_DEVICE_FPS *
max(w, MIN_COUNTED_WINDOW_S)."""
MAX_DETECTIONS_PER_FRAME = MAX_RESULTS
"""The most detections one frame may add to a detector's per-class counts."""
MAX_TELEMETRY_CLASSES = CLASS_TOP_K
"""Schema 1-2: the most class records one message's distributions may list (the rest is summed in
`class_other`)."""
MAX_RELEASE_CLASSES = 1024
"""Schema 3: the most class records one message's distributions may list: every class of a model of up to
this many labels (ImageNet's 1,001 included). About 30 bytes each on the wire."""
SCORE_DELTA_BUCKETS = 40
"""Shadow score deltas (candidate's top-1 score minus the primary's on the same frame, -1..1): equal buckets."""

MessageKind = Literal["inference", "summary", "event"]
# (schema 2) edgetpu_unavailable: the Edge TPU cannot be used (probe crashed, hung or failed); the device runs
# its CPU variant or idles. Not a failure of the model: the monitor does not count it as failing.
EventKind = Literal["started", "swap", "swap_failed", "rollback", "error", "stopped", "edgetpu_unavailable"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRef(_Frozen):
    """Which model produced the results."""

    name: str = Field(max_length=MAX_NAME)
    version: str = Field(max_length=MAX_NAME)
    variant: Literal["edgetpu", "cpu"]
    backend: str = Field(max_length=MAX_NAME, description="'edgetpu:usb:0', 'cpu' ...")


class ResultItem(_Frozen):
    """One classification or detection result."""

    id: int = Field(ge=-MAX_INT, le=MAX_INT)
    label: str = Field(max_length=MAX_NAME)
    score: float = Field(ge=-MAX_SCORE, le=MAX_SCORE, allow_inf_nan=False)
    box: list[float] | None = Field(default=None, max_length=4, description="xmin, ymin, xmax, ymax in image pixels")

    @field_validator("box")
    @classmethod
    def _finite_box(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not all(math.isfinite(x) and abs(x) <= MAX_SCORE for x in value):
            raise ValueError(f"box coordinates must be finite and within +-{MAX_SCORE:g}")
        return value


def score_delta_bucket(delta: float) -> int:
    """The bucket of one shadow score delta (candidate minus primary top-1 score; clamped to -1..1; NaN is 0)."""
    if math.isnan(delta):
        delta = 0.0
    position = (min(max(delta, -1.0), 1.0) + 1.0) / 2.0
    return min(int(position * SCORE_DELTA_BUCKETS), SCORE_DELTA_BUCKETS - 1)


class ShadowSummary(_Frozen):
    """(schema 3) A candidate model run beside the primary on a sample of the window's frames, its answers
    never acted on (a shadow wave, issue 25). `primary` and `candidate` are the two models' distributions on
    the same sampled frames, so the pair compares like with like; `score_delta` the per-frame differences of
    their top-1 scores (a paired histogram, `score_delta_bucket`)."""

    model: ModelRef = Field(description="the candidate")
    frames: int = Field(ge=0, le=MAX_INFERENCES_PER_MESSAGE, description="frames both models ran on")
    errors: int = Field(default=0, ge=0, le=MAX_INFERENCES_PER_MESSAGE, description="frames the candidate failed")
    top1_agree: int = Field(default=0, ge=0, le=MAX_INFERENCES_PER_MESSAGE,
                            description="successful frames where both models' top-1 class is the same")
    primary: Distributions | None = None
    candidate: Distributions | None = None
    score_delta: list[BucketCount] = Field(default_factory=list[BucketCount], max_length=SCORE_DELTA_BUCKETS)

    @model_validator(mode="after")
    def _within_its_frames(self) -> ShadowSummary:
        successes = self.frames - self.errors
        if successes < 0:
            raise ValueError(f"shadow.errors ({self.errors}) exceed shadow.frames ({self.frames})")
        if self.top1_agree > successes:
            raise ValueError(f"shadow.top1_agree ({self.top1_agree}) exceeds the candidate's successful frames "
                             f"({successes})")
        indexes = [bucket.i for bucket in self.score_delta]
        if any(index >= SCORE_DELTA_BUCKETS for index in indexes) or len(set(indexes)) != len(indexes):
            raise ValueError(f"shadow.score_delta: buckets 0..{SCORE_DELTA_BUCKETS - 1}, each at most once")
        if sum(bucket.n for bucket in self.score_delta) > successes:
            raise ValueError("shadow.score_delta counts more frames than the candidate answered")
        for dist in (self.primary, self.candidate):
            if dist is not None:
                _check_dist(dist, successes)
        return self


class InferenceSummary(_Frozen):
    """Inferences covered by this message: one (mode `every`) or a window (mode `summary`).

    `count` includes the failed inferences (`errors`); the distributions describe the successful ones."""

    count: int = Field(ge=0, le=MAX_INFERENCES_PER_MESSAGE)
    errors: int = Field(default=0, ge=0, le=MAX_INFERENCES_PER_MESSAGE)
    latency_ms_p50: float = Field(ge=0, le=MAX_MS, allow_inf_nan=False)
    latency_ms_p95: float = Field(ge=0, le=MAX_MS, allow_inf_nan=False)
    latency_ms_max: float = Field(ge=0, le=MAX_MS, allow_inf_nan=False)
    fps: float = Field(ge=0, le=MAX_RATE, allow_inf_nan=False)
    window_s: float = Field(ge=0, le=MAX_WINDOW_S, allow_inf_nan=False)
    top: list[ResultItem] = Field(
        default_factory=list[ResultItem], max_length=MAX_RESULTS, description="results of the last (sampled) frame"
    )
    dist: Distributions | None = Field(default=None, description="(schema 2) the window's distributions")
    shadow: ShadowSummary | None = Field(
        default=None, description="(schema 3) the candidate run beside the primary on a sample of the frames")

    @model_validator(mode="after")
    def _within_what_a_device_can_do(self) -> InferenceSummary:
        if self.errors > self.count:
            raise ValueError(f"errors ({self.errors}) exceed count ({self.count}): count includes the errors")
        if self.window_s < min_window_s(self.count):
            raise ValueError(f"count {self.count} is more than a device runs in a window of {self.window_s:g} s "
                             f"(MAX_DEVICE_FPS {MAX_DEVICE_FPS:g} per second, a window counted as at least "
                             f"{MIN_COUNTED_WINDOW_S:g} s)")
        if self.dist is not None:
            _check_dist(self.dist, self.count - self.errors)
        if self.shadow is not None and self.shadow.frames > self.count:
            raise ValueError(f"shadow.frames ({self.shadow.frames}) exceed count ({self.count}): the candidate "
                             "runs on a sample of the window's frames")
        return self


def min_window_s(count: int) -> float:
    """The shortest window `count` inferences may state: 0 up to what `MIN_COUNTED_WINDOW_S` holds, else
    `count / MAX_DEVICE_FPS` (the contract and the agent's builder compute it alike, so a window set to it is
    never a float's rounding short)."""
    return 0.0 if count <= MAX_DEVICE_FPS * MIN_COUNTED_WINDOW_S else count / MAX_DEVICE_FPS


def _check_dist(dist: Distributions, successes: int) -> None:
    """A message's distributions describe at most its successful inferences."""
    for name, items in (("latency", dist.latency), ("score", dist.score), ("detections", dist.detections)):
        total = sum(item.n for item in items)
        if total > successes:
            raise ValueError(f"dist.{name} counts {total} observations, the message has {successes} successful "
                             "inferences")
    if len(dist.classes) > MAX_RELEASE_CLASSES:
        raise ValueError(f"dist.classes lists {len(dist.classes)} classes, at most {MAX_RELEASE_CLASSES} "
                         "(the rest goes in class_other)")
    classes = sum(item.n for item in dist.classes) + dist.class_other
    if classes > successes * MAX_DETECTIONS_PER_FRAME:
        raise ValueError(f"dist.classes count {classes}, more than {MAX_DETECTIONS_PER_FRAME} per successful "
                         f"inference ({successes})")


class Health(_Frozen):
    """Device health at the time of the message."""

    cpu_temp_c: float | None = Field(default=None, ge=-273.15, le=1000, allow_inf_nan=False)
    uptime_s: float = Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    mem_total_mb: float | None = Field(default=None, ge=0, le=MAX_MB, allow_inf_nan=False)
    mem_available_mb: float | None = Field(default=None, ge=0, le=MAX_MB, allow_inf_nan=False)
    load_1m: float | None = Field(default=None, ge=0, le=MAX_RATE, allow_inf_nan=False)
    tpu_present: bool = False
    spool_depth: int = Field(default=0, ge=0, le=MAX_INT)
    spool_dropped: int = Field(default=0, ge=0, le=MAX_INT)


class Event(_Frozen):
    """Something that happened on the device: a swap, a refused model, a rollback, an error."""

    kind: EventKind
    detail: str = Field(default="", max_length=MAX_TEXT)
    model_version: str | None = Field(
        default=None, max_length=MAX_NAME, description="the version running after the event"
    )
    from_version: str | None = Field(
        default=None, max_length=MAX_NAME, description="swap and rollback: the version left"
    )

    @field_validator("detail", mode="before")
    @classmethod
    def _cut_long_detail(cls, value: object) -> object:
        """A long error text is cut (the start says what happened), never a reason to lose the event."""
        return value[:MAX_TEXT] if isinstance(value, str) else value


class TelemetryMessage(_Frozen):
    """One telemetry message (schema version 3; 1 and 2 are still read)."""

    schema_: int = Field(default=TELEMETRY_SCHEMA_VERSION, alias="schema", ge=1, le=TELEMETRY_SCHEMA_VERSION)
    device_id: str = Field(min_length=1, max_length=MAX_NAME)
    seq: int = Field(ge=1, le=MAX_INT, description="per-device, monotonically increasing, survives restarts")
    time: datetime
    kind: MessageKind
    model: ModelRef | None = None
    inference: InferenceSummary | None = None
    health: Health
    event: Event | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _fields_of_their_schema(self) -> TelemetryMessage:
        inference = self.inference
        if inference is None:
            return self
        if self.schema_ < 2 and inference.dist is not None:
            raise ValueError("inference.dist needs telemetry schema 2")
        if self.schema_ < 3:
            if inference.shadow is not None:
                raise ValueError("inference.shadow needs telemetry schema 3")
            if inference.dist is not None and len(inference.dist.classes) > MAX_TELEMETRY_CLASSES:
                raise ValueError(f"dist.classes lists {len(inference.dist.classes)} classes: schema "
                                 f"{self.schema_} allows at most {MAX_TELEMETRY_CLASSES} (the rest goes in "
                                 "class_other); every class of the release needs telemetry schema 3")
        return self

    def to_json_bytes(self) -> bytes:
        """Wire format: JSON in the Avro JSON encoding of the topic's schema (`contracts.avro`), which
        Pub/Sub validates on a schema-enforced topic."""
        return encode_telemetry(self)

    @classmethod
    def from_json_bytes(cls, data: bytes) -> TelemetryMessage:
        """Parses and validates one message (Avro JSON encoding or plain JSON).

        Raises:
            ValueError: not JSON; pydantic.ValidationError (a ValueError too) when not a valid message.
        """
        return decode_telemetry(data)

    def attributes(self) -> dict[str, str]:
        """Pub/Sub attributes: device_id and model_version (empty when no model runs)."""
        return {"device_id": self.device_id, "model_version": self.model.version if self.model else ""}


# --- The topic's schema and the wire codec (Avro JSON encoding, `contracts.avro`) ---------------------------

TELEMETRY_FROZEN_DEFINITION_FILES = tuple(Path(__file__).with_name(f"telemetry-v{version}.avsc")
                                          for version in TELEMETRY_SCHEMA_VERSIONS[:-1])
"""The topic schema of each earlier telemetry schema, frozen as agents of that contract send it."""


@functools.cache
def _codec() -> AvroJson:
    return AvroJson.of(TelemetryMessage)  # generated once per process: callers never mutate it


def telemetry_avro_definition() -> str:
    """The Avro schema of `TelemetryMessage` as the canonical JSON text Pub/Sub stores."""
    return _codec().definition()


def telemetry_avro_schema() -> dict[str, Any]:
    """The Avro schema of `TelemetryMessage`: what the telemetry topic validates against (a fresh copy)."""
    return json.loads(telemetry_avro_definition())


def telemetry_schema_revisions() -> tuple[str, ...]:
    """Every revision of the topic's schema, oldest first: each earlier schema as frozen in
    `telemetry-v<N>.avsc` (what agents of that contract send), then the current one generated from the model.
    The topic accepts a message valid against any of them, so agents can be upgraded after the schema."""
    frozen = tuple(path.read_text().strip() for path in TELEMETRY_FROZEN_DEFINITION_FILES)
    current = telemetry_avro_definition()
    return frozen if current in frozen else (*frozen, current)


def encode_telemetry(message: TelemetryMessage) -> bytes:
    """Wire bytes of `message` for a topic validating against `telemetry_avro_schema()` (JSON encoding)."""
    plain = message.model_dump(mode="json", by_alias=True)
    return json.dumps(_codec().wrap(plain), separators=(",", ":")).encode()


def decode_telemetry(data: bytes) -> TelemetryMessage:
    """Parses a telemetry message in the Avro JSON encoding (or plain JSON) and validates it.

    Raises:
        ValueError: when `data` is not JSON; pydantic.ValidationError when it is not a valid message.
    """
    return TelemetryMessage.model_validate(_codec().unwrap(json.loads(data)))
