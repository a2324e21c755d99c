"""Telemetry settings: what to send, where to, and how hard to try.

The agent's config embeds this model as its `telemetry:` section. Every default the telemetry code uses lives
here, so there are no magic numbers in the spool, publisher or service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgefleet.kernel.contracts.layout import TELEMETRY_TOPIC

TelemetryMode = Literal["every", "summary"]
SpoolSynchronous = Literal["normal", "full"]


class TelemetryConfig(BaseModel):
    """The `telemetry:` section of the agent config.

    With `pubsub_project` unset, messages go to the local JSONL sink (`sink_path`): the embedded default,
    which needs no cloud and no emulator.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: TelemetryMode = Field(
        default="summary",
        description="'every': one `inference` message per inference; 'summary': one `summary` message per "
        "`summary_interval_s` (also a heartbeat when nothing ran)",
    )
    summary_interval_s: float = Field(default=10.0, gt=0, description="length of one summary window")
    sample_results: bool = Field(default=True, description="attach the results of one frame to each message")
    max_results: int = Field(default=5, ge=0, description="at most this many results per sampled frame")

    pubsub_project: str | None = Field(default=None, description="GCP project; None = local sink")
    pubsub_topic: str = Field(default=TELEMETRY_TOPIC, min_length=3, description="topic id in that project")
    sink_path: Path | None = Field(
        default=None, description="local JSONL sink; None = `telemetry.jsonl` beside the spool"
    )
    sink_max_mb: float = Field(default=64.0, gt=0, description="the sink rotates to `<name>.1` beyond this")

    spool_max_messages: int = Field(
        default=100_000, ge=1, description="bound; beyond it the oldest are dropped"
    )
    spool_max_mb: float = Field(
        default=256.0, gt=0, description="disk bound of the spool database; beyond it the oldest are dropped"
    )
    spool_synchronous: SpoolSynchronous = Field(
        default="full",
        description="SQLite `synchronous`: 'full' survives power loss (an fsync per append batch); 'normal' "
        "survives process crashes only, but may reuse a seq after a power cut",
    )
    queue_max: int = Field(
        default=10_000,
        ge=1,
        description="records waiting to be spooled; beyond it records are dropped, counted",
    )
    append_batch_size: int = Field(
        default=500, ge=1, description="messages spooled per SQLite transaction at most; a full batch is spooled "
        "at once, without waiting for `flush_interval_s`")
    flush_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="the writer spools what it holds at most once per interval (plus full batches), and the "
        "publisher acknowledges at most once per interval while it keeps up: an SD card sees ~2 transactions "
        "a second; a power cut takes at most this long of messages not yet spooled",
    )

    publish_batch_size: int = Field(default=500, ge=1, description="messages read from the spool per publish")
    publish_batch_latency_s: float = Field(
        default=0.01, ge=0, description="Pub/Sub client batching: how long a batch waits for more messages"
    )
    publish_timeout_s: float = Field(
        default=10.0, gt=0, description="per publish call, retries included (the client default is ~600 s)"
    )
    reconnect_max_s: float = Field(
        default=2.0,
        gt=0,
        description="longest gRPC reconnect backoff, so a returning Pub/Sub is seen quickly",
    )
    backoff_initial_s: float = Field(default=0.5, gt=0, description="first pause after a failed publish")
    backoff_max_s: float = Field(default=30.0, gt=0, description="longest pause between publish attempts")
    backoff_jitter: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="pauses are shortened by up to this fraction, at random, so a "
        "fleet coming back from an outage does not retry in lockstep",
    )
    idle_poll_s: float = Field(default=1.0, gt=0, description="longest sleep of an idle publisher or writer")
    health_interval_s: float = Field(default=1.0, ge=0, description="health is re-read at most this often")

    @model_validator(mode="after")
    def _backoff_bounds(self) -> TelemetryConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"telemetry.backoff_max_s ({self.backoff_max_s}) is below telemetry.backoff_initial_s "
                f"({self.backoff_initial_s}): make the maximum at least the initial backoff"
            )
        return self

    def topic_path(self) -> str | None:
        """`projects/<project>/topics/<topic>`, or None when the local sink is used."""
        if self.pubsub_project is None:
            return None
        return f"projects/{self.pubsub_project}/topics/{self.pubsub_topic}"

    def resolved_sink_path(self, spool_path: Path) -> Path:
        """Where the local sink writes: `sink_path`, or `telemetry.jsonl` beside the spool."""
        return self.sink_path if self.sink_path is not None else Path(spool_path).parent / "telemetry.jsonl"
