"""Turns what the agent's loop reports (inferences, events) into telemetry message drafts.

A draft is a message without its `seq` and `health`: the spool gives the seq (inside its transaction) and the
service adds health when the draft is spooled. Modes:

- `every`: one `inference` message per inference.
- `summary`: one `summary` message per window of `summary_interval_s` (count, errors, latency p50/p95/max,
  fps, the results of one sampled frame, and the window's mergeable distributions: latency histogram, top-1
  class counts or per-class detection counts: every class the window saw, up to `MAX_RELEASE_CLASSES`, as
  telemetry schema 3 allows; top-1 score histogram, detections per frame).
  A window also ends when the model changes, so every summary
  describes one model. An empty window still yields a summary (count 0): the device's heartbeat.

Events (started, swap, swap_failed, rollback, error, stopped) are one `event` message each, in both modes.
The builder is not thread-safe: one thread (the telemetry service's writer) feeds it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import NamedTuple, Protocol

from edgefleet.device.telemetry.config import TelemetryMode
from edgefleet.kernel.contracts.distributions import DistributionAccumulator, Distributions
from edgefleet.kernel.contracts.telemetry import (
    MAX_NAME,
    MAX_RELEASE_CLASSES,
    MAX_SCORE,
    MAX_WINDOW_S,
    Event,
    EventKind,
    Health,
    InferenceSummary,
    MessageKind,
    ModelRef,
    ResultItem,
    ShadowSummary,
    TelemetryMessage,
    min_window_s,
)

_P50 = 50.0
_P95 = 95.0
_BOX_LEN = 4  # xmin, ymin, xmax, ymax

log = logging.getLogger(__name__)


class ResultLike(Protocol):
    """One result as the loop hands it over: the engine's own `edgefleet.device.runtime.engine.ResultItem` (its
    box a `BBox`), or telemetry's `ResultItem` itself. Read-only, so both classes fit."""

    @property
    def id(self) -> int: ...

    @property
    def label(self) -> str: ...

    @property
    def score(self) -> float: ...

    @property
    def box(self) -> Sequence[float] | None: ...


def as_result_item(item: ResultLike) -> ResultItem | None:
    """One result as telemetry carries it, or None when the contract cannot carry it (a non-finite or
    out-of-range score or box: a float model's NaN); a label longer than the contract's `MAX_NAME` is cut.

    The loop hands over the engine's own results and they are converted here, in the telemetry writer, only
    for the frames a message keeps: not on the inference thread for every frame. A result the contract refuses
    must never fail its window: the window would stay open and fail again at every tick.
    """
    if isinstance(item, ResultItem):
        return item
    box = None if item.box is None else [float(x) for x in item.box]
    if not _within(item.score) or (box is not None and (len(box) > _BOX_LEN or not all(map(_within, box)))):
        return None
    return ResultItem(id=int(item.id), label=item.label[:MAX_NAME], score=float(item.score), box=box)


def as_result_items(items: Sequence[ResultLike]) -> list[ResultItem]:
    """The results a message carries (`as_result_item`), in order, without those the contract cannot carry."""
    return [converted for converted in map(as_result_item, items) if converted is not None]


def _within(value: float) -> bool:
    return math.isfinite(value) and abs(value) <= MAX_SCORE


class InferenceRecord(NamedTuple):
    """One inference as the loop saw it.

    Attributes:
        time: Wall-clock time (time.time()) when the result was ready.
        model: The model that ran (None when none is loaded).
        latency_ms: Inference latency; ignored when `error` is set.
        results: Top results of this frame, best first.
        error: Why the inference failed, or None.
        detector: The model is a detector (its results are detections, possibly none).
    """

    time: float
    model: ModelRef | None
    latency_ms: float
    results: tuple[ResultLike, ...] = ()
    error: str | None = None
    detector: bool = False


class EventRecord(NamedTuple):
    """Something that happened on the device (see `EventKind`)."""

    time: float
    kind: EventKind
    detail: str = ""
    model_version: str | None = None
    model: ModelRef | None = None
    from_version: str | None = None


class MessageDraft(NamedTuple):
    """A telemetry message still missing its `seq` and `health`."""

    time: datetime
    kind: MessageKind
    model: ModelRef | None = None
    inference: InferenceSummary | None = None
    event: Event | None = None

    def build(self, seq: int, *, device_id: str, health: Health) -> TelemetryMessage:
        """The complete message with `seq` and `health`."""
        return TelemetryMessage(
            device_id=device_id,
            seq=seq,
            time=self.time,
            kind=self.kind,
            model=self.model,
            inference=self.inference,
            health=health,
            event=self.event,
        )


# --- pure maths ----------------------------------------------------------------------------------------
def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of ascending values, interpolated like numpy's default; 0 if empty."""
    if not sorted_values:
        return 0.0
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    position = (len(sorted_values) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    fraction = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * fraction


def summarize(
    latencies_ms: Sequence[float],
    window_s: float,
    *,
    errors: int = 0,
    top: Sequence[ResultLike] = (),
    dist: Distributions | None = None,
    shadow: ShadowSummary | None = None,
) -> InferenceSummary:
    """Summarizes the inferences of one window.

    Args:
        latencies_ms: Latencies of the successful inferences.
        window_s: Length of the window; fps = (successes + errors) / window_s (0 for an empty window).
        errors: Inferences that failed in the window (they have no latency).
        top: Results of the sampled frame.
    """
    ordered = sorted(latencies_ms)
    count = len(ordered) + errors
    window_s = stated_window_s(window_s, count)
    return InferenceSummary(
        count=count,
        errors=errors,
        latency_ms_p50=percentile(ordered, _P50),
        latency_ms_p95=percentile(ordered, _P95),
        latency_ms_max=ordered[-1] if ordered else 0.0,
        fps=count / window_s if window_s > 0 else 0.0,
        window_s=window_s,
        top=as_result_items(top),
        dist=dist,
        shadow=shadow,
    )


def stated_window_s(measured_s: float, count: int) -> float:
    """The window a message states: the measured one (wall clock), kept within the telemetry contract's bounds
    (at most `MAX_WINDOW_S`; at least what `count` inferences take at `MAX_DEVICE_FPS`), so that a wall clock
    that jumped (an NTP correction, a suspend) never makes the device's own message invalid. 0 stays 0 (unknown:
    the first message of mode `every`) when the count fits the contract's minimum counted window."""
    return max(min(max(measured_s, 0.0), MAX_WINDOW_S), min_window_s(count))


def is_detection(results: Sequence[object]) -> bool:
    """Detection results carry a box; classification results do not."""
    return bool(results) and getattr(results[0], "box", None) is not None


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


# --- the builder ---------------------------------------------------------------------------------------
class TelemetryBuilder:
    """Accumulates records and emits drafts according to the mode.

    Args:
        mode: 'every' or 'summary'.
        summary_interval_s: Window length in summary mode; in `every` mode, the longest silence before a
            heartbeat summary (count 0) is sent.
        sample_results: Attach one frame's results to each message.
        max_results: At most this many results per message.
        start_time: Wall-clock start of the first window.
        shadow: (summary mode) called with a window's inference count when it closes: the shadow candidate's
            summary of at most that many frames, or None (`agent.shadow`).
    """

    def __init__(
        self,
        mode: TelemetryMode,
        summary_interval_s: float,
        *,
        sample_results: bool,
        max_results: int,
        start_time: float,
        shadow: Callable[[int], ShadowSummary | None] | None = None,
    ) -> None:
        if summary_interval_s <= 0:
            raise ValueError(f"summary_interval_s must be positive, got {summary_interval_s}")
        self.mode = mode
        self.summary_interval_s = summary_interval_s
        self.sample_results = sample_results
        self.max_results = max_results
        self._window_start = start_time
        self._latencies: list[float] = []
        self._errors = 0
        self._sample: tuple[ResultLike, ...] = ()
        self._model: ModelRef | None = None
        self._dist = DistributionAccumulator(top_k=MAX_RELEASE_CLASSES)  # schema 3: every class
        self._last_inference_time: float | None = None
        self._last_message_time = start_time
        self._shadow = shadow

    def next_deadline(self) -> float:
        """Wall-clock time by which `tick` should be called next."""
        if self.mode == "summary":
            return self._window_start + self.summary_interval_s
        return self._last_message_time + self.summary_interval_s

    def add_inference(self, record: InferenceRecord) -> list[MessageDraft]:
        """Takes one inference; returns the drafts it completes (zero or more)."""
        if self.mode == "every":
            return [self._every_draft(record)]
        drafts: list[MessageDraft] = []
        if record.model != self._model and (self._latencies or self._errors):
            drafts.append(self._close_window(record.time))  # one summary describes one model
        drafts.extend(self.tick(record.time))
        self._model = record.model
        if record.error is not None:
            self._errors += 1
        else:
            self._latencies.append(record.latency_ms)
            self._dist.add(record.latency_ms, record.results,
                           detector=record.detector or is_detection(record.results))
            if self.sample_results:
                self._sample = tuple(record.results[: self.max_results])
        return drafts

    def add_event(self, record: EventRecord) -> list[MessageDraft]:
        """Takes one event; returns its draft."""
        model = record.model if record.model is not None else self._model
        self._last_message_time = max(self._last_message_time, record.time)
        event = Event(
            kind=record.kind,
            detail=record.detail,
            model_version=record.model_version or (model.version if model else None),
            from_version=record.from_version,
        )
        return [MessageDraft(time=_utc(record.time), kind="event", model=model, event=event)]

    def tick(self, now: float) -> list[MessageDraft]:
        """Closes the summary window (or sends the `every`-mode heartbeat) when its time has come."""
        if now < self.next_deadline():
            return []
        if self.mode == "summary":
            return [self._close_window(now)]
        self._last_message_time = now
        summary = summarize([], self.summary_interval_s)
        return [MessageDraft(time=_utc(now), kind="summary", model=self._model, inference=summary)]

    def flush(self, now: float) -> list[MessageDraft]:
        """At shutdown: the partial summary window, if it holds any inference."""
        if self.mode == "summary" and (self._latencies or self._errors):
            return [self._close_window(now)]
        return []

    def _shadow_window(self, count: int) -> ShadowSummary | None:
        """The shadow's block for a closing window of `count` frames; a failing shadow never costs the primary's
        window (it is logged, and the window goes without its shadow block)."""
        if self._shadow is None or not count:
            return None
        try:
            return self._shadow(count)
        except Exception:  # noqa: BLE001 - the candidate's bookkeeping never stops the primary's telemetry
            log.exception("the shadow's window summary failed; this window goes without it")
            return None

    def _close_window(self, end: float) -> MessageDraft:
        count = len(self._latencies) + self._errors
        shadow = self._shadow_window(count)
        summary = summarize(self._latencies, end - self._window_start, errors=self._errors, top=self._sample,
                            dist=self._dist.snapshot(), shadow=shadow)
        self._dist.reset()
        draft = MessageDraft(time=_utc(end), kind="summary", model=self._model, inference=summary)
        self._window_start = end
        self._latencies = []
        self._errors = 0
        self._sample = ()
        self._last_message_time = end
        return draft

    def _every_draft(self, record: InferenceRecord) -> MessageDraft:
        previous = self._last_inference_time
        self._last_inference_time = record.time
        self._last_message_time = record.time
        self._model = record.model
        # One inference per message: the window is the time since the previous one, so fps is the loop's
        # instantaneous rate.
        window_s = record.time - previous if previous is not None and record.time > previous else 0.0
        top = record.results[: self.max_results] if self.sample_results and record.error is None else ()
        if record.error is not None:
            summary = summarize([], window_s, errors=1)
        else:
            one = DistributionAccumulator(top_k=MAX_RELEASE_CLASSES)
            one.add(record.latency_ms, record.results, detector=record.detector or is_detection(record.results))
            summary = summarize([record.latency_ms], window_s, top=top, dist=one.snapshot())
        return MessageDraft(time=_utc(record.time), kind="inference", model=record.model, inference=summary)
