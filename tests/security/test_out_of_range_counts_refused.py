"""Issue 20, item 4 (monitor side): schema-valid counts let one device decide or crash a canary verdict (a
control claiming 1e9 inferences in a 10 s window; errors above the count; histograms with buckets that do not
exist, listed twice, or counting more observations than the message's inferences).

Every count and index of the telemetry contract is now bounded by what a device can do in the window its
message covers (`MAX_DEVICE_FPS`, `MAX_WINDOW_S`, `MAX_INFERENCES_PER_MESSAGE`, `MAX_DETECTIONS_PER_FRAME`,
`MAX_TELEMETRY_CLASSES` in `kernel.contracts.telemetry`; the fixed buckets of `kernel.contracts.distributions`).
A message outside them is refused at ingest and counted as malformed with a reason naming the field, and
changes nothing. The messages are signed by the device (strict monitor) and go through the real batch path
into a real SQLite fleet state."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edgefleet.device.telemetry.builder import InferenceRecord, TelemetryBuilder
from edgefleet.device.trust.device_identity import sign_telemetry
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.kernel.contracts import distributions as dists
from edgefleet.kernel.contracts.telemetry import (
    MAX_DEVICE_FPS,
    MAX_RELEASE_CLASSES,
    MAX_TELEMETRY_CLASSES,
    MAX_WINDOW_S,
    Health,
    InferenceSummary,
    ModelRef,
    ResultItem,
    TelemetryMessage,
)
from edgefleet.monitor.batch import process_batch
from edgefleet.monitor.ingest import Status
from edgefleet.monitor.store import FleetStore
from edgefleet.monitor.telemetry_verifier import TelemetryVerifier
from tests.security import test_forged_telemetry as _telemetry
from tests.security.test_forged_telemetry import Device, fleet_keys
from tests.security.test_one_message_stops_the_monitor import T0, FakeMessage

registry = _telemetry.registry  # its fixtures: a local key registry and a fleet state, shared, not copied
store = _telemetry.store

MODEL = ModelRef(name="mobilenet", version="1.0.0", variant="cpu", backend="cpu")


def summary_document(seq: int) -> dict:
    """A valid 10 s summary of 100 inferences (2 failed) with its distributions, as plain JSON."""
    dist = dists.build(latency={10: 98}, score={18: 98}, classes={1: 90, 2: 8}, detections={})
    message = TelemetryMessage(
        device_id="cam-1", seq=seq, time=T0, kind="summary", model=MODEL,
        inference=InferenceSummary(count=100, errors=2, latency_ms_p50=5.0, latency_ms_p95=6.0, latency_ms_max=7.0,
                                   fps=10.0, window_s=10.0, dist=dist),
        health=Health(uptime_s=1.0))
    return message.model_dump(mode="json", by_alias=True)


def buckets(*pairs: tuple[int, int]) -> list[dict[str, int]]:
    return [{"i": i, "n": n} for i, n in pairs]


# name -> (what is changed in the "inference" mapping, a word the refusal must name)
OUT_OF_RANGE: dict[str, tuple[Callable[[dict], None], str]] = {
    "a billion inferences in 10 s": (lambda inf: inf.update(count=10**9, errors=0), "count"),
    "count beyond a device's rate": (lambda inf: inf.update(count=int(MAX_DEVICE_FPS * 10) + 1, errors=0), "count"),
    "errors above count": (lambda inf: inf.update(errors=101), "errors"),
    "a window longer than allowed": (lambda inf: inf.update(window_s=MAX_WINDOW_S * 2), "window_s"),
    "a latency bucket that does not exist": (
        lambda inf: inf["dist"].update(latency=buckets((dists.LATENCY_BUCKETS, 1))), "latency"),
    "a score bucket that does not exist": (
        lambda inf: inf["dist"].update(score=buckets((dists.SCORE_BUCKETS, 1))), "score"),
    "a detections bucket that does not exist": (
        lambda inf: inf["dist"].update(detections=buckets((dists.DETECTIONS_MAX + 1, 1))), "detections"),
    "a latency bucket listed twice": (lambda inf: inf["dist"].update(latency=buckets((3, 40), (3, 40))), "latency"),
    "a class listed twice": (
        lambda inf: inf["dist"].update(classes=[{"id": 1, "n": 1}, {"id": 1, "n": 1}]), "classes"),
    "more classes than a release may have": (lambda inf: inf["dist"].update(
        classes=[{"id": cid, "n": 1} for cid in range(MAX_RELEASE_CLASSES + 1)]), "classes"),
    "more latency observations than inferences": (
        lambda inf: inf["dist"].update(latency=buckets((10, 99))), "latency"),
    "more class counts than detections can make": (lambda inf: inf["dist"].update(class_other=10**9), "classes"),
}


def signed(cam: Device, document: dict, message_id: str) -> FakeMessage:
    data = json.dumps(document).encode()
    return FakeMessage(data, message_id, {"device_id": "cam-1", **sign_telemetry(cam.key, data, "cam-1", 1)})


def state(store: FleetStore) -> tuple:
    connection = store.connection
    return (connection.execute("SELECT COALESCE(SUM(inferences), 0), COALESCE(SUM(errors), 0) FROM version_counts"
                               ).fetchone(),
            connection.execute("SELECT COUNT(*), COALESCE(SUM(n), 0) FROM dist_counts").fetchone(),
            connection.execute("SELECT max_seq FROM devices").fetchall())


@pytest.mark.parametrize("name", list(OUT_OF_RANGE))
def test_out_of_range_counts_are_refused_and_change_nothing(
    name: str, tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore
) -> None:
    cam = Device(tmp_path / "cam-1", "cam-1", registry)
    verifier = TelemetryVerifier(lambda: fleet_keys(registry), refresh_s=0.0)
    assert process_batch(store, [signed(cam, summary_document(1), "good-1")], 1.0, verifier)[0].status is Status.APPLIED
    before = state(store)
    change, field = OUT_OF_RANGE[name]
    document = summary_document(2)
    change(document["inference"])
    bad = signed(cam, document, "bad")
    outcome = process_batch(store, [bad], 2.0, verifier)[0]
    assert outcome.status is Status.MALFORMED and bad.nacks == 1 and bad.acks == 0
    assert field in outcome.reason, outcome.reason
    assert state(store) == before
    (counted,) = store.connection.execute("SELECT COUNT(*) FROM malformed WHERE message_id = 'bad'").fetchone()
    assert counted == 1
    assert process_batch(store, [signed(cam, summary_document(3), "good-3")], 3.0, verifier)[0].status is Status.APPLIED


def test_what_a_real_agent_sends_is_within_the_bounds() -> None:
    """The bounds refuse nothing the agent's own builder makes: a busy 1 s window at the fastest rate, with
    errors, and a detector's frames with many detections each."""
    builder = TelemetryBuilder("summary", 1.0, sample_results=True, max_results=5, start_time=0.0)
    rate = int(MAX_DEVICE_FPS)
    detections = tuple(ResultItem(id=i % 90, label="x", score=0.5, box=[0, 0, 1, 1]) for i in range(100))
    for index in range(rate - 1):
        error = "failed" if index % 50 == 0 else None
        builder.add_inference(InferenceRecord(time=index / rate, model=MODEL, latency_ms=0.05 + index % 7,
                                              results=detections if index % 100 == 0 else (), error=error))
    (draft,) = builder.tick(1.0)
    message = draft.build(1, device_id="cam-1", health=Health(uptime_s=10.0))
    assert message.inference is not None and message.inference.count == rate - 1
    assert TelemetryMessage.from_json_bytes(message.to_json_bytes()) == message


@pytest.mark.parametrize("end", [-3600.0, 0.0, 1e9], ids=["clock-back", "no-time", "clock-forward-decades"])
def test_an_agent_whose_clock_jumped_still_sends_valid_messages(end: float) -> None:
    """The window the agent states stays within the bounds when its wall clock jumped during the window
    (an NTP correction after boot, a suspend): the device's message is never invalid for it."""
    builder = TelemetryBuilder("summary", 1e12, sample_results=False, max_results=0, start_time=0.0)
    inferences = int(MAX_DEVICE_FPS) + 5000  # more than fit in a window of 0 (counted as 1 s)
    for index in range(inferences):
        builder.add_inference(InferenceRecord(time=index / MAX_DEVICE_FPS / 2, model=MODEL, latency_ms=1.0))
    (draft,) = builder.flush(end)
    message = draft.build(1, device_id="cam-1", health=Health(uptime_s=10.0))
    assert TelemetryMessage.from_json_bytes(message.to_json_bytes()).inference.count == inferences


@pytest.mark.parametrize("count", [int(MAX_DEVICE_FPS) + 1, 10_009, 123_457, 1_999_999])
def test_the_window_an_agent_states_for_any_count_passes_the_contract(count: int) -> None:
    """Not only counts that divide evenly: the builder's smallest window for `count` and the contract's bound
    are one computation (`min_window_s`), so float rounding never makes the device's own message invalid."""
    from edgefleet.device.telemetry.builder import summarize
    from edgefleet.kernel.contracts.telemetry import InferenceSummary

    summary = summarize([1.0] * count, 0.5)  # a wall clock that says half a second for all of them
    assert InferenceSummary.model_validate_json(summary.model_dump_json()).count == count
    with pytest.raises(ValueError, match="more than a device runs"):
        InferenceSummary.model_validate({**summary.model_dump(), "count": count + int(MAX_DEVICE_FPS)})


def test_a_schema_2_message_listing_more_than_its_top_k_classes_is_refused_and_changes_nothing(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore
) -> None:
    """The path beside schema 3's longer class list: a message that says it is schema 2 keeps schema 2's bound
    (a schema 2 reader never meets more), whatever a sender writes."""
    cam = Device(tmp_path / "cam-1", "cam-1", registry)
    verifier = TelemetryVerifier(lambda: fleet_keys(registry), refresh_s=0.0)
    assert process_batch(store, [signed(cam, summary_document(1), "good-1")], 1.0, verifier)[0].status is Status.APPLIED
    before = state(store)
    document = {**summary_document(2), "schema": 2}
    document["inference"]["dist"]["classes"] = [{"id": cid, "n": 1} for cid in range(MAX_TELEMETRY_CLASSES + 1)]
    bad = signed(cam, document, "bad")
    outcome = process_batch(store, [bad], 2.0, verifier)[0]
    assert outcome.status is Status.MALFORMED and "needs telemetry schema 3" in outcome.reason, outcome.reason
    assert state(store) == before
