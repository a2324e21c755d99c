"""Telemetry schema 3 (issues 21 and 25, one revision): every class of the release in one message, and a
shadow candidate's answers beside the primary's. What each older schema allows stays as it was: a reader of
schema 2 never meets more than 32 class records or a shadow block in a message that says it is schema 2."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from edgefleet.kernel.contracts import distributions as dists
from edgefleet.kernel.contracts.telemetry import (
    MAX_TELEMETRY_CLASSES,
    SCORE_DELTA_BUCKETS,
    Health,
    InferenceSummary,
    ModelRef,
    ShadowSummary,
    TelemetryMessage,
    decode_telemetry,
    score_delta_bucket,
)

CANDIDATE = ModelRef(name="mobilenet", version="1.1.0", variant="cpu", backend="cpu")


def message(schema: int, *, classes: int = 3, shadow: ShadowSummary | None = None) -> dict:
    dist = dists.build(latency={12: 100}, score={18: 100}, classes={i: 1 for i in range(classes)}, top_k=1024)
    return {"schema": schema, "device_id": "cam-1", "seq": 1, "time": datetime(2026, 12, 7, tzinfo=UTC),
            "kind": "summary", "model": {"name": "mobilenet", "version": "1.0.0", "variant": "cpu", "backend": "cpu"},
            "inference": {"count": 100, "latency_ms_p50": 5, "latency_ms_p95": 6, "latency_ms_max": 7, "fps": 10,
                          "window_s": 10, "dist": dist, "shadow": shadow},
            "health": Health(uptime_s=1)}


def shadow(**fields) -> ShadowSummary:
    return ShadowSummary(**{"model": CANDIDATE, "frames": 10, "top1_agree": 9, **fields})


def test_schema_3_carries_every_class_of_the_release_and_round_trips_the_wire() -> None:
    sent = TelemetryMessage.model_validate(message(3, classes=1000, shadow=shadow(
        score_delta=[dists.BucketCount(i=score_delta_bucket(-0.05), n=9)])))
    received = decode_telemetry(sent.to_json_bytes())
    assert received == sent
    assert len(received.inference.dist.classes) == 1000 and received.inference.dist.class_other == 0
    assert received.inference.shadow.top1_agree == 9


def test_a_schema_2_message_keeps_schema_2s_class_bound() -> None:
    with pytest.raises(ValidationError, match="every class of the release needs telemetry schema 3"):
        TelemetryMessage.model_validate(message(2, classes=MAX_TELEMETRY_CLASSES + 1))
    assert TelemetryMessage.model_validate(message(2, classes=MAX_TELEMETRY_CLASSES)).schema_ == 2


def test_a_shadow_block_needs_schema_3() -> None:
    with pytest.raises(ValidationError, match="inference.shadow needs telemetry schema 3"):
        TelemetryMessage.model_validate(message(2, shadow=shadow()))


@pytest.mark.parametrize(("fields", "refusal"), [
    ({"frames": 10, "errors": 11}, "errors .11. exceed shadow.frames"),
    ({"frames": 10, "errors": 2, "top1_agree": 9}, "top1_agree .9. exceeds the candidate's successful frames .8."),
    ({"score_delta": [dists.BucketCount(i=SCORE_DELTA_BUCKETS, n=1)]}, "shadow.score_delta: buckets"),
    ({"score_delta": [dists.BucketCount(i=3, n=11)]}, "counts more frames than the candidate answered"),
    ({"candidate": dists.build(latency={5: 11})}, "dist.latency counts 11 observations"),
])
def test_a_shadow_block_claiming_more_than_its_frames_is_refused(fields: dict, refusal: str) -> None:
    with pytest.raises(ValidationError, match=refusal):
        shadow(**fields)


def test_a_shadow_sample_larger_than_the_window_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"shadow.frames \(101\) exceed count \(100\)"):
        InferenceSummary.model_validate({**message(3)["inference"], "shadow": shadow(frames=101, top1_agree=0)})


def test_score_deltas_fall_in_fixed_buckets_over_minus_one_to_one() -> None:
    assert score_delta_bucket(-1.0) == 0 and score_delta_bucket(-7.0) == 0
    assert score_delta_bucket(1.0) == SCORE_DELTA_BUCKETS - 1 and score_delta_bucket(3.0) == SCORE_DELTA_BUCKETS - 1
    middle = SCORE_DELTA_BUCKETS // 2
    assert score_delta_bucket(-1e-9) == middle - 1 and score_delta_bucket(0.0) == middle
