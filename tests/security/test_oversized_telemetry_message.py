"""Issue 20, item 4 (monitor side): one 9 MB schema-valid message (400,000 histogram buckets) cost the monitor
6 s and 31 MB of fleet state. The raw bytes are now bounded before anything parses them
(`MAX_TELEMETRY_BYTES` in `kernel.contracts.telemetry`, above the largest message the contract allows), and the
histograms by their fixed buckets: such a message is refused at ingest, counted as malformed with the reason,
and changes nothing.

Through the monitor's real batch path into a real SQLite fleet state, and end to end through the Pub/Sub
emulator and the running monitor service (the path beside: the service's streaming pull and dead-lettering)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgefleet.device.trust.device_identity import sign_telemetry
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.kernel.contracts import distributions as dists
from edgefleet.kernel.contracts.telemetry import (
    MAX_NAME,
    MAX_RELEASE_CLASSES,
    MAX_RESULTS,
    MAX_TELEMETRY_BYTES,
    MAX_TEXT,
    SCORE_DELTA_BUCKETS,
    Event,
    Health,
    InferenceSummary,
    ModelRef,
    ResultItem,
    ShadowSummary,
    TelemetryMessage,
)
from edgefleet.kernel.trust.signatures import save_public_key
from edgefleet.monitor.batch import process_batch
from edgefleet.monitor.ingest import Status
from edgefleet.monitor.store import FleetStore, open_store
from edgefleet.monitor.telemetry_verifier import TelemetryVerifier
from tests.security.test_forged_telemetry import ENROLMENT, Device, fleet_keys
from tests.security.test_one_message_stops_the_monitor import T0, FakeMessage

sys.path.insert(0, str(Path(__file__).parents[1] / "monitor"))
from monitor_helpers import RunningMonitor, telemetry, wait_until  # noqa: E402

from tests.security import test_forged_telemetry as _telemetry

registry = _telemetry.registry  # its fixtures: a local key registry and a fleet state, shared, not copied
store = _telemetry.store

BUCKETS = 400_000
EMULATOR_BUCKETS = 100_000
"""About 2.2 MB: above MAX_TELEMETRY_BYTES, below what the Pub/Sub emulator delivers (its streaming pull does
not deliver messages above about 4 MB, a limit of the emulator's gRPC server: real Pub/Sub delivers 10 MB)."""
FLEET_STATE_LIMIT = 1024 * 1024  # what a handful of small messages may leave on disk, far below the 31 MB


def huge_document(seq: int, buckets: int = BUCKETS) -> dict:
    """A message whose latency histogram lists `buckets` buckets (400,000: about 9 MB of JSON)."""
    message = TelemetryMessage(
        device_id="cam-1", seq=seq, time=T0, kind="summary",
        model=ModelRef(name="mobilenet", version="1.0.0", variant="cpu", backend="cpu"),
        inference=InferenceSummary(count=10, latency_ms_p50=5.0, latency_ms_p95=6.0, latency_ms_max=7.0, fps=1.0,
                                   window_s=10.0, dist=dists.build(latency={3: 10})),
        health=Health(uptime_s=1.0))
    document = message.model_dump(mode="json", by_alias=True)
    document["inference"]["dist"]["latency"] = [{"i": i, "n": 1} for i in range(buckets)]
    return document


def fleet_state_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def test_a_9_mb_message_is_refused_before_parsing_and_leaves_no_state(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore
) -> None:
    cam = Device(tmp_path / "cam-1", "cam-1", registry)
    verifier = TelemetryVerifier(lambda: fleet_keys(registry), refresh_s=0.0)
    data = json.dumps(huge_document(1)).encode()
    assert len(data) > 8 * 1024 * 1024
    attack = [FakeMessage(data, "huge-signed", {"device_id": "cam-1", **sign_telemetry(cam.key, data, "cam-1", 1)}),
              FakeMessage(data, "huge-unverified", {})]
    for verifying in (verifier, None):  # strict, and a transition monitor without a registry
        outcomes = process_batch(store, attack, 1.0, verifying)
        assert [o.status for o in outcomes] == [Status.MALFORMED] * 2
        assert all("MAX_TELEMETRY_BYTES" in o.reason and "not parsed" in o.reason for o in outcomes)
    assert all(m.nacks == 2 and m.acks == 0 for m in attack)
    connection = store.connection
    assert connection.execute("SELECT COUNT(*) FROM dist_counts").fetchone() == (0,)
    assert connection.execute("SELECT COUNT(*) FROM devices").fetchone() == (0,)
    assert connection.execute("SELECT COUNT(*), MAX(LENGTH(error)) FROM malformed").fetchone()[0] == 2
    assert [o.status for o in process_batch(store, cam.send(2), 2.0, verifier)] == [Status.APPLIED] * 2
    assert fleet_state_bytes(store.path) < FLEET_STATE_LIMIT


def largest_valid_message() -> TelemetryMessage:
    """Every list at its bound, every text at its longest (telemetry schema 3: every class of the release, and a
    shadow candidate with both models' distributions)."""
    name = "n" * MAX_NAME
    results = [ResultItem(id=-(2**53 - 1), label=name, score=-1e12 / 3, box=[1e12 / 3] * 4)] * MAX_RESULTS
    dist = dists.Distributions(
        latency=[dists.BucketCount(i=i, n=1) for i in range(dists.LATENCY_BUCKETS)],
        score=[dists.BucketCount(i=i, n=1) for i in range(dists.SCORE_BUCKETS)],
        detections=[dists.BucketCount(i=i, n=1) for i in range(dists.DETECTIONS_MAX + 1)],
        classes=[dists.ClassCount(id=dists.MAX_CLASS_ID - i, n=1) for i in range(MAX_RELEASE_CLASSES)],
        class_other=100_000)
    shadow = ShadowSummary(model=ModelRef(name=name, version=name, variant="cpu", backend=name), frames=10**5,
                           errors=10, top1_agree=10**5 - 10, primary=dist, candidate=dist,
                           score_delta=[dists.BucketCount(i=i, n=1) for i in range(SCORE_DELTA_BUCKETS)])
    return TelemetryMessage(
        device_id=name, seq=2**53 - 1, time=T0, kind="summary",
        model=ModelRef(name=name, version=name, variant="edgetpu", backend=name),
        inference=InferenceSummary(count=10**6, errors=10**5, latency_ms_p50=1e12 / 3, latency_ms_p95=1e12 / 3,
                                   latency_ms_max=1e12 / 3, fps=1e12 / 3, window_s=3600.0, top=results, dist=dist,
                                   shadow=shadow),
        health=Health(cpu_temp_c=-273.15, uptime_s=1e12 / 3, mem_total_mb=1e12 / 3, mem_available_mb=1e12 / 3,
                      load_1m=1e12 / 3, tpu_present=True, spool_depth=2**53 - 1, spool_dropped=2**53 - 1),
        event=Event(kind="swap_failed", detail="d" * MAX_TEXT, model_version=name, from_version=name))


def test_the_size_limit_refuses_no_message_the_contract_allows(tmp_path: Path) -> None:
    message = largest_valid_message()
    data = message.to_json_bytes()
    assert len(data) < MAX_TELEMETRY_BYTES
    with open_store(tmp_path / "fleet.sqlite", latency_window=4, count_bucket_s=60.0) as fleet:
        outcome = process_batch(fleet, [FakeMessage(data, "largest", {})], 1.0, None)[0]
    assert outcome.status is Status.APPLIED, outcome.reason


def test_oversized_forged_and_out_of_range_messages_are_dead_lettered_by_the_running_monitor(
    telemetry_topic, monitor_config, tmp_path: Path
) -> None:
    """The Pub/Sub path: the monitor service (strict, the default, with its key registry) reading the
    emulator dead-letters a 2 MB histogram message, an unsigned message naming a signing device with no attribute,
    and one with a billion inferences, and applies the device's own messages."""
    registry = LocalRegistryWriter(tmp_path / "registry", create=True)
    cam = Device(tmp_path / "cam-1", "cam-1", registry)
    config = monitor_config.model_copy(update={"identity": monitor_config.identity.model_copy(update={
        "registry": str(registry.root),
        "enrolment_keys": (str(save_public_key(ENROLMENT.public_key(), tmp_path / "enrolment.pub")),)})})
    huge = json.dumps(huge_document(50, EMULATOR_BUCKETS)).encode()
    assert len(huge) > MAX_TELEMETRY_BYTES
    billion = telemetry("cam-1", 51).model_dump(mode="json", by_alias=True)
    billion["inference"].update(count=10**9, window_s=10.0)
    billion_data = json.dumps(billion).encode()
    no_attribute = telemetry("cam-1", 52, version="6.6.6").to_json_bytes()
    attacks = {huge, billion_data, no_attribute}
    running = RunningMonitor(config)
    try:
        telemetry_topic.publish_raw(huge, **sign_telemetry(cam.key, huge, "cam-1", 1))
        telemetry_topic.publish_raw(billion_data, device_id="cam-1",
                                    **sign_telemetry(cam.key, billion_data, "cam-1", 1))
        telemetry_topic.publish_raw(no_attribute)
        for message in cam.send(3):
            telemetry_topic.publish_raw(message.data, **message.attributes)
        dead: list = []
        wait_until(lambda: dead.extend(telemetry_topic.dead_lettered()) or len(dead) >= len(attacks),
                   "the three attacks dead-lettered")
        wait_until(lambda: sum(o.status is Status.APPLIED for o in running.outcomes) == 3, "3 signed applied")
    finally:
        report = running.stop()
    assert {m.data for m in dead} == attacks
    assert report.applied == 3
    with open_store(config.store_path, latency_window=8, count_bucket_s=60.0, create=False) as fleet:
        assert fleet.connection.execute("SELECT max_seq, model_version FROM devices").fetchall() == [(3, "1.0.0")]
