"""Message building: summarize() maths, the `every` and `summary` modes, events, and the config model."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pydantic import ValidationError

from edgefleet.device.telemetry.builder import (
    EventRecord,
    InferenceRecord,
    TelemetryBuilder,
    percentile,
    summarize,
)
from edgefleet.device.telemetry.config import TelemetryConfig
from edgefleet.kernel.contracts.telemetry import Health, ModelRef, ResultItem, TelemetryMessage

MODEL_A = ModelRef(name="mobilenet", version="1.0.0", variant="edgetpu", backend="edgetpu:usb:0")
MODEL_B = ModelRef(name="mobilenet", version="1.1.0", variant="edgetpu", backend="edgetpu:usb:0")
RESULTS = (
    ResultItem(id=3, label="tench", score=0.9),
    ResultItem(id=7, label="cock", score=0.05),
    ResultItem(id=9, label="hen", score=0.01),
)
T0 = 1_700_000_000.0


@pytest.mark.parametrize("size", [1, 2, 7, 100, 1001])
def test_percentile_matches_numpy(size: int) -> None:
    values = sorted(random.Random(size).uniform(1, 50) for _ in range(size))
    for q in (0, 50, 95, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_summarize_window() -> None:
    latencies = [random.Random(1).uniform(3, 9) for _ in range(200)]
    summary = summarize(latencies, 10.0, errors=5, top=RESULTS[:1])
    assert summary.count == 205 and summary.errors == 5
    assert summary.latency_ms_p50 == pytest.approx(float(np.percentile(latencies, 50)))
    assert summary.latency_ms_p95 == pytest.approx(float(np.percentile(latencies, 95)))
    assert summary.latency_ms_max == max(latencies)
    assert summary.fps == pytest.approx(20.5)
    assert summary.top == list(RESULTS[:1])


def test_summarize_empty_window_is_a_valid_heartbeat() -> None:
    summary = summarize([], 0.0)
    assert (summary.count, summary.fps, summary.latency_ms_p95, summary.latency_ms_max) == (0, 0.0, 0.0, 0.0)


def _complete(drafts: list, first_seq: int = 1) -> list[TelemetryMessage]:
    messages = [
        draft.build(first_seq + i, device_id="dev-1", health=Health(uptime_s=5.0))
        for i, draft in enumerate(drafts)
    ]
    # Every draft becomes a message that survives the wire format.
    return [TelemetryMessage.from_json_bytes(message.to_json_bytes()) for message in messages]


def test_every_mode_one_message_per_inference() -> None:
    builder = TelemetryBuilder("every", 10.0, sample_results=True, max_results=2, start_time=T0)
    drafts = builder.add_inference(InferenceRecord(T0 + 1.00, MODEL_A, 4.0, RESULTS))
    drafts += builder.add_inference(InferenceRecord(T0 + 1.25, MODEL_A, 6.0, RESULTS))
    drafts += builder.add_inference(InferenceRecord(T0 + 1.50, MODEL_A, 0.0, (), error="invoke failed"))
    messages = _complete(drafts)
    assert [message.kind for message in messages] == ["inference"] * 3
    first, second, failed = (message.inference for message in messages)
    assert (first.count, first.latency_ms_p50, first.fps) == (1, 4.0, 0.0)
    assert second.latency_ms_max == 6.0 and second.fps == pytest.approx(4.0)  # 0.25 s after the previous
    assert second.top == list(RESULTS[:2])  # max_results
    assert (failed.count, failed.errors, failed.top) == (1, 1, [])
    assert messages[0].model == MODEL_A and messages[0].attributes()["model_version"] == "1.0.0"


def test_every_mode_sends_a_heartbeat_when_idle() -> None:
    builder = TelemetryBuilder("every", 10.0, sample_results=True, max_results=2, start_time=T0)
    assert builder.tick(T0 + 9.0) == []
    heartbeat = _complete(builder.tick(T0 + 10.0))
    assert [message.kind for message in heartbeat] == ["summary"]
    assert heartbeat[0].inference.count == 0


def test_summary_mode_windows() -> None:
    builder = TelemetryBuilder("summary", 10.0, sample_results=True, max_results=5, start_time=T0)
    drafts = []
    for i in range(50):  # 5 inferences per second for 10 s
        drafts += builder.add_inference(InferenceRecord(T0 + 0.2 * i, MODEL_A, float(i % 10), RESULTS))
    drafts += builder.add_inference(InferenceRecord(T0 + 9.9, MODEL_A, 0.0, error="bad frame"))
    assert drafts == []  # the window is not over yet
    assert builder.next_deadline() == pytest.approx(T0 + 10.0)
    drafts = builder.tick(T0 + 10.0)
    (message,) = _complete(drafts)
    summary = message.inference
    assert message.kind == "summary" and message.model == MODEL_A
    assert (summary.count, summary.errors, summary.window_s) == (51, 1, pytest.approx(10.0))
    assert summary.fps == pytest.approx(5.1)
    assert summary.latency_ms_max == 9.0
    assert summary.top == list(RESULTS)  # the sampled (last successful) frame
    # An empty window still reports: the heartbeat.
    (empty,) = _complete(builder.tick(T0 + 20.0))
    assert empty.inference.count == 0 and empty.inference.top == []


def test_summary_window_ends_when_the_model_changes() -> None:
    builder = TelemetryBuilder("summary", 10.0, sample_results=False, max_results=5, start_time=T0)
    builder.add_inference(InferenceRecord(T0 + 1.0, MODEL_A, 5.0, RESULTS))
    builder.add_inference(InferenceRecord(T0 + 2.0, MODEL_A, 7.0, RESULTS))
    drafts = builder.add_inference(InferenceRecord(T0 + 4.0, MODEL_B, 3.0, RESULTS))
    (old,) = _complete(drafts)
    assert old.model == MODEL_A and old.inference.count == 2 and old.inference.window_s == pytest.approx(4.0)
    assert old.inference.top == []  # sample_results off
    (new,) = _complete(builder.flush(T0 + 6.0))
    assert new.model == MODEL_B and new.inference.count == 1
    assert builder.flush(T0 + 7.0) == []  # nothing left to flush


def test_events_carry_the_current_model() -> None:
    builder = TelemetryBuilder("summary", 10.0, sample_results=True, max_results=5, start_time=T0)
    builder.add_inference(InferenceRecord(T0 + 1.0, MODEL_A, 5.0, RESULTS))
    (swap_failed,) = _complete(
        builder.add_event(EventRecord(T0 + 2.0, "swap_failed", "golden mismatch", model_version="1.1.0"))
    )
    assert swap_failed.kind == "event"
    assert swap_failed.event.kind == "swap_failed" and swap_failed.event.model_version == "1.1.0"
    assert swap_failed.model == MODEL_A  # still running the old one
    (swap,) = _complete(builder.add_event(EventRecord(T0 + 3.0, "swap", "1.0.0 -> 1.1.0", model=MODEL_B)))
    assert swap.model == MODEL_B and swap.event.model_version == "1.1.0"


def test_config_defaults_and_forbidden_keys() -> None:
    config = TelemetryConfig()
    assert config.topic_path() is None  # local sink by default
    assert (
        TelemetryConfig(pubsub_project="proj-1").topic_path() == "projects/proj-1/topics/edgefleet-telemetry"
    )
    with pytest.raises(ValidationError, match="spool_max_mesages"):
        TelemetryConfig.model_validate({"spool_max_mesages": 10})
    with pytest.raises(ValidationError, match="backoff_max_s"):
        TelemetryConfig(backoff_initial_s=5, backoff_max_s=1)
    with pytest.raises(ValidationError, match="mode"):
        TelemetryConfig.model_validate({"mode": "sometimes"})


def test_summary_windows_carry_mergeable_distributions() -> None:
    from edgefleet.kernel.contracts import distributions as d

    builder = TelemetryBuilder("summary", 10.0, sample_results=True, max_results=3, start_time=T0)
    for i in range(20):
        builder.add_inference(InferenceRecord(T0 + i * 0.1, MODEL_A, 1.0 + i * 0.1, RESULTS if i % 4 else
                                              (ResultItem(id=7, label="cock", score=0.3),)))
    builder.add_inference(InferenceRecord(T0 + 3.0, MODEL_A, 0.0, (), error="invoke failed"))
    (draft,) = builder.tick(T0 + 10.0)
    dist = draft.inference.dist
    assert dist.samples == 20 and draft.inference.errors == 1  # failed inferences have no latency
    assert dist.class_counts() == {3: 15, 7: 5}
    assert dist.score_counts() == {d.score_bucket(0.9): 15, d.score_bucket(0.3): 5}
    assert sum(dist.latency_counts().values()) == 20 and not dist.detections
    (next_draft,) = builder.tick(T0 + 20.0)
    assert next_draft.inference.dist.is_empty()  # each window starts afresh


def test_detections_are_counted_per_class_and_per_frame() -> None:
    boxes = (ResultItem(id=1, label="car", score=0.8, box=[0, 0, 1, 1]),
             ResultItem(id=2, label="bus", score=0.6, box=[0, 0, 2, 2]))
    builder = TelemetryBuilder("summary", 10.0, sample_results=True, max_results=3, start_time=T0)
    builder.add_inference(InferenceRecord(T0 + 1, MODEL_A, 2.0, boxes, detector=True))
    builder.add_inference(InferenceRecord(T0 + 2, MODEL_A, 2.0, (), detector=True))
    (draft,) = builder.tick(T0 + 10.0)
    assert draft.inference.dist.detection_counts() == {2: 1, 0: 1}
    assert draft.inference.dist.class_counts() == {1: 1, 2: 1}


def test_a_thousand_class_summary_stays_small() -> None:
    from edgefleet.kernel.contracts import distributions as d

    rng = np.random.default_rng(0)
    accumulator = d.DistributionAccumulator()
    for _ in range(5000):
        accumulator.add(float(rng.uniform(1, 40)), [ResultItem(id=int(rng.integers(1000)), label="x",
                                                               score=float(rng.random()))], detector=False)
    dist = accumulator.snapshot()
    assert len(dist.classes) == d.CLASS_TOP_K and dist.class_other == 5000 - sum(c.n for c in dist.classes)
    assert len(dist.model_dump_json()) < 2500  # bytes of one window's distributions


def test_a_summary_lists_every_class_of_a_thousand_class_release() -> None:
    # Telemetry schema 3: no per-window top-32 cut; the message stays within MAX_RELEASE_CLASSES.
    from edgefleet.kernel.contracts.telemetry import MAX_RELEASE_CLASSES

    rng = np.random.default_rng(1)
    builder = TelemetryBuilder("summary", 10.0, sample_results=False, max_results=3, start_time=T0)
    seen = set()
    for i in range(3000):
        cid = int(rng.integers(1001))
        seen.add(cid)
        builder.add_inference(InferenceRecord(T0 + i * 0.003, MODEL_A, 2.0, (ResultItem(id=cid, label="x",
                                                                                      score=0.5),)))
    (draft,) = builder.tick(T0 + 10.0)
    dist = draft.inference.dist
    assert {c.id for c in dist.classes} == seen and dist.class_other == 0
    assert len(dist.classes) <= MAX_RELEASE_CLASSES
    message = draft.build(1, device_id="cam-1", health=Health(uptime_s=1.0))
    assert message.schema_ == 3 and TelemetryMessage.from_json_bytes(message.to_json_bytes()) == message


def test_the_engines_results_map_onto_the_telemetry_contract() -> None:
    from edgefleet.device.runtime.adapters.detect import BBox
    from edgefleet.device.runtime.engine import ResultItem as EngineResult

    engine_results = (EngineResult(1, "car", 0.75, BBox(1.0, 2.0, 30.5, 40.0)), EngineResult(2, "bus", 0.5))
    builder = TelemetryBuilder("every", 10.0, sample_results=True, max_results=2, start_time=T0)
    (message,) = _complete(builder.add_inference(InferenceRecord(T0 + 1, MODEL_A, 2.0, engine_results)))
    assert message.inference is not None
    assert message.inference.top == [ResultItem(id=1, label="car", score=0.75, box=[1.0, 2.0, 30.5, 40.0]),
                                     ResultItem(id=2, label="bus", score=0.5)]


def test_a_result_the_contract_refuses_never_stalls_the_summary_windows() -> None:
    """A labels file's 300-character label or a float model's NaN score once failed `summarize` at every tick:
    the window never closed, and each later drain of the writer (events too) was lost."""
    from edgefleet.device.runtime.engine import ResultItem as EngineResult
    from edgefleet.kernel.contracts.telemetry import MAX_NAME

    sampled = (EngineResult(4, "x" * (MAX_NAME + 44), 0.9), EngineResult(5, "nan", float("nan")),
               EngineResult(6, "dog", 0.05))
    builder = TelemetryBuilder("summary", 10.0, sample_results=True, max_results=3, start_time=T0)
    builder.add_inference(InferenceRecord(T0 + 1, MODEL_A, 2.0, sampled))
    (first,) = _complete(builder.tick(T0 + 10.0))
    assert first.inference is not None and first.inference.count == 1
    assert first.inference.top == [ResultItem(id=4, label="x" * MAX_NAME, score=0.9),
                                   ResultItem(id=6, label="dog", score=0.05)]  # the NaN left out, nothing else
    (second,) = _complete(builder.tick(T0 + 20.0))  # the next window opened and closes
    assert second.inference is not None and second.inference.count == 0
