"""Telemetry 3's shadow blocks in the fleet state (issue 25): summed per device, primary and candidate version and
time bucket on both engines, rebuilt per device for the shadow wave's judge, shown per device, pruned."""

from __future__ import annotations

from datetime import timedelta

from edgefleet.kernel.contracts import distributions as d
from edgefleet.kernel.contracts.distributions import BucketCount
from edgefleet.kernel.contracts.telemetry import ModelRef, ShadowSummary, TelemetryMessage, score_delta_bucket
from edgefleet.monitor.ingest import apply
from edgefleet.monitor.shadows import device_pairs, shadow_items, shadow_overview, summary_of
from edgefleet.monitor.store import commit, to_epoch
from edgefleet.monitor.windows import prune

from .monitor_helpers import T0, telemetry

CANDIDATE = ModelRef(name="mobilenet", version="2.0.0", variant="cpu", backend="cpu")
SINCE = T0 - timedelta(minutes=5)


def block(frames: int, agree: int, *, errors: int = 0, classes: dict[int, int] | None = None,
          candidate_classes: dict[int, int] | None = None, delta: float = 0.0,
          version: str = "2.0.0") -> ShadowSummary:
    answered = frames - errors
    classes = classes or {1: answered}
    return ShadowSummary(model=CANDIDATE.model_copy(update={"version": version}), frames=frames, errors=errors,
                         top1_agree=agree, primary=d.build(classes=classes, score={18: answered}),
                         candidate=d.build(classes=candidate_classes or classes, score={17: answered}),
                         score_delta=[BucketCount(i=score_delta_bucket(delta), n=answered)] if answered else [])


def with_shadow(message: TelemetryMessage, summary: ShadowSummary) -> TelemetryMessage:
    return message.model_copy(update={"inference": message.inference.model_copy(update={"shadow": summary})})


def test_shadow_blocks_of_several_windows_add_up_per_device_and_candidate(store) -> None:
    apply(store, with_shadow(telemetry("a", 1, count=50), block(40, 38, errors=1)))
    apply(store, with_shadow(telemetry("a", 2, count=50), block(30, 30, candidate_classes={1: 25, 2: 5})))
    apply(store, with_shadow(telemetry("b", 1, count=50), block(10, 2)))
    apply(store, with_shadow(telemetry("b", 2, count=50), block(10, 9, version="3.0.0")))  # another candidate
    apply(store, telemetry("c", 1, count=50))  # no shadow
    commit(store)

    pairs = device_pairs(store, ["a", "b", "c"], "mobilenet", "2.0.0", SINCE)
    a = pairs["a"].summary
    assert (a.frames, a.errors, a.top1_agree) == (70, 1, 68)
    assert a.primary.class_counts() == {1: 69} and a.candidate.class_counts() == {1: 64, 2: 5}
    assert {b.i: b.n for b in a.score_delta} == {score_delta_bucket(0.0): 69}
    assert pairs["a"].primary == ("1.0.0",)
    assert (pairs["b"].summary.frames, pairs["b"].summary.top1_agree) == (10, 2)
    assert pairs["c"].summary is None
    assert device_pairs(store, ["a"], "mobilenet", "2.0.0", SINCE, primary="0.9.0")["a"].summary is None


def test_a_stored_summary_is_the_sum_of_its_blocks_exactly() -> None:
    first, second = block(40, 38, errors=1, classes={1: 30, 4: 9}), block(30, 30, classes={2: 30})
    counts: dict = {}
    for metric, key, n in shadow_items(first) + shadow_items(second):
        counts.setdefault(metric, {}).setdefault(key, 0)
        counts[metric][key] += n
    from collections import defaultdict
    rebuilt = summary_of(CANDIDATE, defaultdict(dict, counts))
    assert rebuilt.primary == d.merge([first.primary, second.primary], top_k=3)
    assert (rebuilt.frames, rebuilt.errors, rebuilt.top1_agree) == (70, 1, 68)


def test_the_overview_gives_each_device_its_latest_candidates_agreement(store) -> None:
    apply(store, with_shadow(telemetry("a", 1, count=50), block(40, 30)))
    apply(store, with_shadow(telemetry("a", 2, count=50), block(60, 60)))
    apply(store, with_shadow(telemetry("b", 1, count=50), block(10, 0, errors=10)))
    commit(store)
    overview = shadow_overview(store, ["a", "b", "c"], SINCE)
    assert overview["a"].candidate == "2.0.0" and overview["a"].agreement == 90 / 100
    assert overview["b"].agreement is None and overview["b"].errors == 10
    assert "c" not in overview


def test_shadow_counts_are_pruned_with_the_other_timed_rows(store) -> None:
    apply(store, with_shadow(telemetry("a", 1, at=T0, count=50), block(40, 40)))
    apply(store, with_shadow(telemetry("a", 2, at=T0 + timedelta(days=20), count=50), block(10, 10)))
    commit(store)
    deleted = prune(store, to_epoch(T0 + timedelta(days=10)))
    assert deleted["shadow_counts"] > 0
    assert device_pairs(store, ["a"], "mobilenet", "2.0.0", SINCE)["a"].summary.frames == 10


def test_a_duplicate_message_does_not_count_its_shadow_block_twice(store) -> None:
    message = with_shadow(telemetry("a", 1, count=50), block(40, 40))
    apply(store, message)
    apply(store, message)
    commit(store)
    assert device_pairs(store, ["a"], "mobilenet", "2.0.0", SINCE)["a"].summary.frames == 40
