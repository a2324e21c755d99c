"""A batch's writes are merged per row and sent at commit (`pending_rows`): the state must be the same as
applying and committing the same messages one by one, on both engines."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from monitor_helpers import T0, telemetry

from edgefleet.kernel.contracts.telemetry import MAX_INT
from edgefleet.monitor.ingest import Status, handle
from edgefleet.monitor.pending_rows import GAP_HORIZON
from edgefleet.monitor.store import commit, open_store

# Every table a message writes, ordered so that two states can be compared row by row.
TABLES = {
    "devices": "device_id", "seq_gaps": "device_id, first_seq", "latency_samples": "device_id, model_version, seq",
    "version_counts": "device_id, model_version, bucket_start", "events": "device_id, seq",
    "version_history": "device_id, model_version", "device_epochs": "device_id, epoch",
    "version_totals": "model_name, model_version", "fleet_counters": "shard", "malformed": "message_id",
}

PREFIX = {0, 1}  # messages committed before the batch (cam-1's first two)


def busy_batch() -> list[tuple[bytes, str, dict[str, str]]]:
    """Messages touching the same devices many times: gaps, late arrivals, duplicates, a version change with
    its events, a message without a model, a second spool epoch, a stale epoch and more samples than the
    latency window holds."""
    plan = [("cam-1", seq, {}) for seq in (1, 2, 5, 3, 3, 4, 6, 7, 8)]
    plan += [("cam-2", 7, {}), ("cam-2", 3, {}), ("cam-2", 8, {"model": None}), ("cam-2", 3, {})]
    plan += [("cam-1", 9, {"version": "1.1.0", "event": "swap", "event_version": "1.1.0",
                           "detail": "1.0.0 -> 1.1.0"}),
             ("cam-1", 10, {"version": "1.1.0", "errors": 1, "count": 3}),
             ("cam-1", 11, {"version": "1.1.0", "event": "swap_failed", "event_version": "1.2.0"}),
             ("cam-1", 12, {"version": "1.1.0", "latency_ms": 40.0})]
    messages = []
    for index, (device_id, seq, extra) in enumerate(plan):
        message = telemetry(device_id, seq, at=T0 + timedelta(seconds=seq), **extra)
        messages.append((message.to_json_bytes(), f"m-{index}", {"device_id": device_id}))
    for index, (epoch, seq) in enumerate([(1, 1), (1, 2), (2, 1), (1, 3), (2, 3), (2, 2), (2, 2)]):
        message = telemetry("cam-3", seq)
        messages.append((message.to_json_bytes(), f"e-{index}", {"device_id": "cam-3", "epoch": str(epoch)}))
    messages.append((b"{not json", "bad-1", {"device_id": "cam-1"}))
    return messages


def state(store) -> dict[str, list[tuple]]:
    return {table: [tuple(row) for row in store.connection.execute(_state_query(table, order))]
            for table, order in TABLES.items()}


def _state_query(table: str, order: str) -> str:
    if table == "fleet_counters":  # summed over shards: each store writes its own shard row
        return "SELECT SUM(devices), SUM(messages), SUM(duplicates), SUM(lost) FROM fleet_counters"
    return f"SELECT * FROM {table} ORDER BY {order}"


@pytest.fixture
def other_url(store_url: str, tmp_path, request: pytest.FixtureRequest) -> str:
    """A second fresh fleet state on the same engine as `store_url`."""
    if store_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'one-by-one.sqlite'}"
    return request.getfixturevalue("postgres").new_database()


def test_a_batch_touching_the_same_devices_many_times_leaves_the_state_of_one_by_one(store_url, other_url):
    messages = busy_batch()
    with open_store(store_url, latency_window=4, count_bucket_s=60.0) as batched, \
            open_store(other_url, latency_window=4, count_bucket_s=60.0) as single:
        together, alone = [], []
        for index, (data, message_id, attributes) in enumerate(messages):
            together.append(handle(batched, data, message_id, attributes, 1000.0 + index).status)
            if index in PREFIX:  # rows already there before the batch: its upserts must add to them
                commit(batched)
            alone.append(handle(single, data, message_id, attributes, 1000.0 + index).status)
            commit(single)
        commit(batched)
        assert together == alone
        assert {Status.APPLIED, Status.LATE, Status.DUPLICATE, Status.MALFORMED} <= set(together)
        batched_state, single_state = state(batched), state(single)
    for table in TABLES:
        assert batched_state[table] == single_state[table], table
    kept = Counter((row[0], row[2]) for row in batched_state["latency_samples"])
    assert kept[("cam-1", "1.0.0")] == 4 and max(kept.values()) == 4, "each window is trimmed to 4 samples"
    assert batched_state["events"], "the batch's events were written"


def test_a_message_refused_inside_a_batch_undoes_only_its_own_changes(store):
    """Its direct writes roll back to its savepoint and what it changed in the batch's view of the device is put
    back, while the earlier and later messages of the batch, pending until commit, are all written."""
    first_epoch = {"device_id": "cam-5", "epoch": "1"}

    def send(seq, attributes, message_id):
        message = telemetry("cam-5", 1, at=T0).model_copy(update={"seq": seq})
        return handle(store, message.to_json_bytes(), message_id, attributes, 1000.0 + seq % 7)

    outcomes = [send(MAX_INT - 2, first_epoch, "m-1"),
                send(MAX_INT - 1, first_epoch, "m-2"),  # pending only: no statement, no savepoint
                send(5, {"device_id": "cam-5", "epoch": "2"}, "m-3"),  # base MAX_INT - 1 + 5: beyond 64 bits
                send(3, {"device_id": "cam-5", "epoch": "x"}, "m-4"),  # a malformed epoch attribute
                send(1, {"device_id": "cam-5", "epoch": "2"}, "m-5")]  # epoch 2 is new again: it fits now
    commit(store)
    assert [outcome.status for outcome in outcomes] == [Status.APPLIED, Status.APPLIED, Status.MALFORMED,
                                                        Status.MALFORMED, Status.APPLIED]
    assert "cannot hold" in outcomes[2].reason and "malformed attribute" in outcomes[3].reason
    connection = store.connection
    assert connection.execute("SELECT epoch, base FROM device_epochs ORDER BY epoch").fetchall() == [
        (1, 0), (2, MAX_INT - 1)]
    assert connection.execute("SELECT max_seq, messages, lost FROM devices").fetchall() == [(MAX_INT, 3, 0)]
    assert connection.execute("SELECT messages, first_seq, last_seq FROM version_history").fetchall() == [
        (3, MAX_INT - 2, MAX_INT)]
    assert sorted(row[0] for row in connection.execute("SELECT message_id FROM malformed")) == ["m-3", "m-4"]


def test_late_arrivals_on_both_sides_of_the_gaps_a_batch_reads_are_each_applied_once(store_url, other_url):
    """A batch reads a device's gaps of its last GAP_HORIZON seqs at the lock and fills them in memory; a late
    arrival older than those looks its gap up in the table. Either way: once, and the state of one by one."""
    first, then = (1, 10, GAP_HORIZON * 2 + 10), (5, 5, GAP_HORIZON + GAP_HORIZON // 2, GAP_HORIZON + GAP_HORIZON // 2,
                                                  11, 11, GAP_HORIZON * 2 + 9)
    messages = [(telemetry("cam-9", seq, at=T0).to_json_bytes(), f"m-{index}", {"device_id": "cam-9"})
                for index, seq in enumerate(first + then)]
    with open_store(store_url, latency_window=4, count_bucket_s=60.0) as batched, \
            open_store(other_url, latency_window=4, count_bucket_s=60.0) as single:
        together, alone = [], []
        for index, (data, message_id, attributes) in enumerate(messages):
            together.append(handle(batched, data, message_id, attributes, 1000.0 + index).status)
            if index == len(first) - 1:
                commit(batched)  # the gaps are in the table when the batch of late arrivals locks the device
            alone.append(handle(single, data, message_id, attributes, 1000.0 + index).status)
            commit(single)
        commit(batched)
        batched_state, single_state = state(batched), state(single)
    late, duplicate = Status.LATE, Status.DUPLICATE
    assert together == alone
    assert together[len(first):] == [late, duplicate, late, duplicate, late, duplicate, late]
    for table in TABLES:
        assert batched_state[table] == single_state[table], table
    assert [row[1:3] for row in batched_state["seq_gaps"]] == [
        (2, 4), (6, 9), (12, GAP_HORIZON + GAP_HORIZON // 2 - 1), (GAP_HORIZON + GAP_HORIZON // 2 + 1,
                                                                  GAP_HORIZON * 2 + 8)]
