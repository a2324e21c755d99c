"""Reading the fleet state: fleet status, one device's history, and the rollout's version health."""

from __future__ import annotations

from datetime import timedelta

import pytest
from monitor_helpers import T0, telemetry

from edgefleet.monitor.config import StatusRules
from edgefleet.monitor.errors import FleetStateError
from edgefleet.monitor.health import version_health
from edgefleet.monitor.ingest import apply
from edgefleet.monitor.query import classify, device_history, fleet_status
from edgefleet.monitor.store import commit

RULES = StatusRules(stale_after_s=120, silent_after_s=600, failing_error_ratio=0.1, failing_event_window_s=300)


def feed(store, *messages):
    for message in messages:
        apply(store, message)
    commit(store)


@pytest.fixture
def fleet(store):
    """Five devices at T0 + 100 s: healthy, erroring, stale, silent, and one whose swap failed."""
    now = T0 + timedelta(seconds=100)
    feed(store,
         *(telemetry("cam-ok", seq, at=now - timedelta(seconds=10 - seq), latency_ms=4.0 + seq) for seq in (1, 2)),
         telemetry("cam-errors", 1, at=now, count=10, errors=5),
         telemetry("cam-stale", 1, at=now - timedelta(seconds=300)),
         telemetry("cam-silent", 1, at=now - timedelta(seconds=900), version="0.9.0"),
         telemetry("cam-refused", 1, at=now - timedelta(seconds=20)),
         telemetry("cam-refused", 2, at=now - timedelta(seconds=10), event="swap_failed", event_version="1.1.0",
                   detail="golden outputs differ"),
         telemetry("cam-refused", 3, at=now - timedelta(seconds=9), event="rollback",
                   event_version="1.0.0", detail="1.1.0 -> 1.0.0"))
    return now


def test_fleet_status_classifies_every_device(store, fleet):
    status = fleet_status(store, RULES.stale_after_s, fleet, rules=RULES)
    by_id = {device.device_id: device for device in status.devices}
    assert {device_id: device.status for device_id, device in by_id.items()} == {
        "cam-ok": "healthy", "cam-errors": "failing", "cam-stale": "stale", "cam-silent": "stale",
        "cam-refused": "failing"}
    assert "50% inference errors" in by_id["cam-errors"].reason
    assert by_id["cam-refused"].reason.startswith("rollback")
    assert by_id["cam-ok"].latency_p50_ms == 5.0 and by_id["cam-ok"].latency_p95_ms == 6.0
    assert by_id["cam-ok"].age_s == pytest.approx(8.0)
    assert [device.device_id for device in status.silent] == ["cam-silent"]
    assert (status.count("healthy"), status.count("stale"), status.count("failing")) == (1, 2, 2)
    versions = {(v.model_version, v.devices, v.healthy, v.stale, v.failing) for v in status.versions}
    assert versions == {("1.0.0", 4, 1, 1, 2), ("0.9.0", 1, 0, 1, 0)}
    assert status.counters.devices == 5 and status.counters.messages == 8


def test_stale_after_and_silent_after_are_the_callers(store, fleet):
    status = fleet_status(store, 1000.0, fleet, silent_after_s=250.0, rules=RULES)
    by_id = {device.device_id: device.status for device in status.devices}
    assert by_id["cam-stale"] == "healthy" and by_id["cam-silent"] == "healthy"
    assert [device.device_id for device in status.silent] == ["cam-silent", "cam-stale"]


def test_a_failure_event_stops_counting_after_its_window_or_a_good_swap(store, fleet):
    later = fleet + timedelta(seconds=RULES.failing_event_window_s + 1)
    feed(store, telemetry("cam-refused", 4, at=later))
    assert {d.device_id: d.status for d in fleet_status(store, 120, later, rules=RULES).devices}["cam-refused"] \
        == "healthy"
    feed(store, telemetry("cam-ok", 3, at=fleet, event="error", detail="camera lost"))
    assert {d.device_id: d.status for d in fleet_status(store, 120, fleet, rules=RULES).devices}["cam-ok"] \
        == "failing"
    feed(store, telemetry("cam-ok", 4, at=fleet, event="swap", event_version="1.1.0", detail="1.0.0 -> 1.1.0"))
    assert {d.device_id: d.status for d in fleet_status(store, 120, fleet, rules=RULES).devices}["cam-ok"] \
        == "healthy"


def test_classify_precedence():
    assert classify(500, 10, 10, "rollback", 1, RULES, 120)[0] == "stale"
    assert classify(5, 10, 1, None, None, RULES, 120) == ("healthy", "")
    assert classify(5, 10, 2, None, None, RULES, 120)[0] == "failing"
    assert classify(5, 0, 0, "swap_failed", 301, RULES, 120)[0] == "healthy"


def test_device_history_lists_versions_and_events(store, fleet):
    feed(store,
         telemetry("cam-ok", 3, at=fleet, event="swap", event_version="1.1.0", detail="1.0.0 -> 1.1.0",
                   version="1.1.0"),
         telemetry("cam-ok", 4, at=fleet + timedelta(seconds=1), version="1.1.0", count=7))
    history = device_history(store, "cam-ok", 120, fleet + timedelta(seconds=2), rules=RULES)
    assert [(v.model_version, v.messages, v.inferences) for v in history.versions] == [("1.0.0", 2, 2),
                                                                                       ("1.1.0", 2, 7)]
    assert [(e.seq, e.kind) for e in history.events] == [(3, "swap")]
    assert history.status.model_version == "1.1.0"
    limited = device_history(store, "cam-refused", 120, fleet, rules=RULES, event_limit=1)
    assert [e.kind for e in limited.events] == ["rollback"]


def test_an_unknown_device_is_a_clear_error(store, fleet):
    with pytest.raises(FleetStateError, match="'cam-nope' has never reported to this monitor \\(5 devices"):
        device_history(store, "cam-nope", 120, fleet)


def test_version_health_counts_since_a_time_per_device_and_in_total(store):
    since = T0 + timedelta(minutes=10)
    before = since - timedelta(minutes=5)
    feed(store,
         # cam-a: 1.1.0 before the wave (not counted), then 3 messages of 10 inferences, 1 error each
         telemetry("cam-a", 1, at=before, version="1.1.0", count=50, errors=50, latency_ms=99.0),
         *(telemetry("cam-a", seq, at=since + timedelta(seconds=seq), version="1.1.0", count=10, errors=1,
                     latency_ms=float(seq)) for seq in (2, 3, 4)),
         # cam-b: refuses 1.1.0 and rolls back to 1.0.0, keeps running 1.0.0
         telemetry("cam-b", 1, at=since + timedelta(seconds=1), version="1.0.0", count=5),
         telemetry("cam-b", 2, at=since + timedelta(seconds=2), event="swap_failed", event_version="1.1.0",
                   detail="golden outputs differ", version="1.0.0"),
         telemetry("cam-b", 3, at=since + timedelta(seconds=3), event="rollback", event_version="1.0.0",
                   detail="1.1.0 -> 1.0.0", version="1.0.0"),
         # cam-c: another model's 1.1.0 does not count
         telemetry("cam-c", 1, at=since + timedelta(seconds=1), model="other", version="1.1.0", count=100,
                   errors=100))
    health = version_health(store, ["cam-a", "cam-b", "cam-c", "cam-x"], "mobilenet", "1.1.0", since)
    per_device = {device.device_id: device for device in health.devices}
    assert (per_device["cam-a"].inferences, per_device["cam-a"].errors) == (30, 3)
    assert (per_device["cam-a"].latency_p50_ms, per_device["cam-a"].latency_p95_ms) == (3.0, 4.0)
    assert (per_device["cam-b"].inferences, per_device["cam-b"].swap_failures, per_device["cam-b"].rollbacks) \
        == (0, 1, 1)
    assert per_device["cam-b"].running_version == "1.0.0"
    assert (per_device["cam-c"].inferences, per_device["cam-c"].errors) == (0, 0)
    assert not per_device["cam-x"].known and per_device["cam-x"].last_seen is None
    assert (health.inferences, health.errors, health.swap_failures, health.rollbacks) == (30, 3, 1, 1)
    assert health.error_ratio == pytest.approx(0.1)
    assert (health.latency_p50_ms, health.latency_p95_ms) == (3.0, 4.0)
    assert health.unknown_devices == ("cam-x",)
    assert health.reporting_devices == ("cam-a",)
    assert health.last_seen == since + timedelta(seconds=4)
    # the rollback counts against 1.1.0 (the version left), not against 1.0.0 (restored)
    assert version_health(store, ["cam-b"], "mobilenet", "1.0.0", since).rollbacks == 0


def test_version_health_of_nothing_is_empty_not_an_error(store):
    health = version_health(store, [], "mobilenet", "1.0.0", T0)
    assert (health.devices, health.inferences, health.latency_p50_ms, health.last_seen) == ((), 0, None, None)
