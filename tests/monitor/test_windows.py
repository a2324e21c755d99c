"""Telemetry 2's distributions in the fleet state: merged per device/version/bucket, read per window, pruned."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest

from edgefleet.kernel.contracts import distributions as d
from edgefleet.kernel.contracts.telemetry import TelemetryMessage
from edgefleet.monitor.ingest import apply
from edgefleet.monitor.store import SCHEMA_VERSION, commit, open_store, to_epoch
from edgefleet.monitor.windows import prune, version_window

from .monitor_helpers import T0, telemetry


def _with_dist(message: TelemetryMessage, dist: d.Distributions) -> TelemetryMessage:
    return message.model_copy(update={"inference": message.inference.model_copy(update={"dist": dist})})


def test_distributions_of_several_devices_and_windows_add_up(store) -> None:
    first = d.build(latency={10: 5}, score={19: 5}, classes={1: 4, 2: 1})
    second = d.build(latency={10: 3, 11: 2}, score={18: 5}, classes={1: 5})
    apply(store, _with_dist(telemetry("a", 1, count=5), first))
    apply(store, _with_dist(telemetry("a", 2, count=5), second))
    apply(store, _with_dist(telemetry("b", 1, count=5), first))
    apply(store, _with_dist(telemetry("c", 1, count=5, version="2.0.0"), second))  # another version
    commit(store)

    window = version_window(store, ["a", "b", "c"], "mobilenet", "1.0.0", T0 - timedelta(minutes=5))
    assert window.devices == ("a", "b") and window.inferences == 15
    assert window.dist.latency_counts() == {10: 13, 11: 2}
    assert window.dist.class_counts() == {1: 13, 2: 2}
    assert window.dist.score_counts() == {19: 10, 18: 5}
    only_b = version_window(store, ["b"], "mobilenet", "1.0.0", T0 - timedelta(minutes=5))
    assert only_b.dist == first


def test_a_window_ends_where_asked(store) -> None:
    early = d.build(latency={10: 5})
    late = d.build(latency={20: 5})
    apply(store, _with_dist(telemetry("a", 1, at=T0, count=5), early))
    apply(store, _with_dist(telemetry("a", 2, at=T0 + timedelta(hours=1), count=5), late))
    commit(store)
    before = version_window(store, ["a"], "mobilenet", "1.0.0", T0 - timedelta(minutes=5),
                            until=T0 + timedelta(minutes=30))
    assert before.dist.latency_counts() == {10: 5} and before.inferences == 5


def test_schema_1_telemetry_still_counts_without_distributions(store) -> None:
    apply(store, telemetry("a", 1, count=7).model_copy(update={"schema_": 1}))
    commit(store)
    window = version_window(store, ["a"], "mobilenet", "1.0.0", T0 - timedelta(minutes=5))
    assert window.inferences == 7 and window.dist.is_empty()


def test_pruning_forgets_what_is_older_than_the_retention(store) -> None:
    apply(store, _with_dist(telemetry("a", 1, at=T0, count=5), d.build(latency={10: 5})))
    apply(store, _with_dist(telemetry("a", 2, at=T0 + timedelta(days=20), count=5), d.build(latency={11: 5})))
    apply(store, telemetry("a", 3, at=T0 + timedelta(days=20), event="swap", event_version="1.0.0"))
    commit(store)
    deleted = prune(store, to_epoch(T0 + timedelta(days=10)))
    assert deleted["dist_counts"] == 1 and deleted["version_counts"] == 1
    window = version_window(store, ["a"], "mobilenet", "1.0.0", T0 - timedelta(days=1))
    assert window.dist.latency_counts() == {11: 5} and window.inferences == 5
    assert store.connection.execute("SELECT COUNT(*) FROM devices").fetchone()[0] == 1  # devices stay


def test_a_schema_1_fleet_state_is_upgraded_in_place(tmp_path) -> None:
    path = tmp_path / "fleet.sqlite"
    with open_store(path, latency_window=10, count_bucket_s=60.0) as store:
        store.connection.execute("DROP TABLE dist_counts")
        store.connection.execute("UPDATE meta SET value = '1'")
        store.connection.commit()
    # Readers upgrade it too (schema 3's aggregates are what `fleet status` reads; every change is additive).
    reader = open_store(path, latency_window=10, count_bucket_s=60.0, create=False)
    reader.close()
    with open_store(path, latency_window=10, count_bucket_s=60.0) as store:
        version = store.connection.execute("SELECT value FROM meta").fetchone()[0]
        assert int(version) == SCHEMA_VERSION == 5
        store.connection.execute("SELECT COUNT(*) FROM dist_counts")  # the new table is there


def test_a_newer_fleet_state_is_refused(tmp_path) -> None:
    from edgefleet.monitor.errors import FleetStateError

    path = tmp_path / "fleet.sqlite"
    open_store(path, latency_window=10, count_bucket_s=60.0).close()
    with sqlite3.connect(path) as connection:
        connection.execute(f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}'")
    with pytest.raises(FleetStateError, match=f"schema {SCHEMA_VERSION + 1}"):
        open_store(path, latency_window=10, count_bucket_s=60.0, create=False)


def test_a_window_counts_the_failure_events_of_its_devices_as_the_health_gate_does(store) -> None:
    from edgefleet.monitor.health import device_failures, version_health

    since = T0 + timedelta(minutes=10)
    for message in (
        telemetry("a", 1, at=since + timedelta(seconds=1), version="1.1.0", count=10),
        telemetry("b", 1, at=since + timedelta(seconds=1), event="swap_failed", event_version="1.1.0",
                  version="1.0.0"),
        telemetry("b", 2, at=since + timedelta(seconds=2), event="rollback", event_version="1.0.0",
                  detail="1.1.0 -> 1.0.0", version="1.0.0"),
        telemetry("c", 1, at=since + timedelta(seconds=1), event="swap_failed", event_version="1.1.0"),
        telemetry("a", 2, at=since - timedelta(minutes=1), event="swap_failed", event_version="1.1.0"),
    ):
        apply(store, message)
    commit(store)
    window = version_window(store, ["a", "b"], "mobilenet", "1.1.0", since)
    health = version_health(store, ["a", "b"], "mobilenet", "1.1.0", since)
    # b's swap failure and rollback count; c is not asked for, a's failure was before `since`
    assert (window.swap_failures, window.rollbacks) == (health.swap_failures, health.rollbacks) == (1, 1)
    assert window.devices == ("a",) and window.inferences == 10
    # a pull rollout's watch asks for the whole wave in one query, per device: the same counts
    assert device_failures(store, ["a", "b", "c", "never-heard"], "mobilenet", "1.1.0", since) == {
        "a": 0, "b": 2, "c": 1, "never-heard": 0}


def test_every_class_of_a_schema_3_window_is_kept_past_32(store) -> None:
    # Telemetry 3 lists every class the window saw: the fleet state keeps them all (no cut back to 32), and a
    # schema 2 agent's remainder stays "other" (-1) beside them.
    many = d.build(latency={10: 300}, classes={k: 3 for k in range(100)}, top_k=1024)
    apply(store, _with_dist(telemetry("a", 1, count=300), many))
    apply(store, _with_dist(telemetry("a", 2, count=300), many))
    commit(store)
    window = version_window(store, ["a"], "mobilenet", "1.0.0", T0 - timedelta(minutes=5))
    assert window.dist.class_counts() == {k: 6 for k in range(100)} and window.dist.class_other == 0
    cut = d.build(latency={10: 300}, classes={k: 3 for k in range(100)})  # a schema 2 agent's window
    apply(store, _with_dist(telemetry("b", 1, count=300).model_copy(update={"schema_": 2}), cut))
    commit(store)
    both = version_window(store, ["a", "b"], "mobilenet", "1.0.0", T0 - timedelta(minutes=5))
    assert len(both.dist.classes) == 100 and both.dist.class_other == 300 - 32 * 3
