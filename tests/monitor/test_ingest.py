"""What one message does to the fleet state: dedupe, gaps, late arrivals, snapshot, windows, malformed."""

from __future__ import annotations

import json
import sqlite3

import pytest
from monitor_helpers import telemetry

from edgefleet.monitor.errors import FleetStateError
from edgefleet.monitor.ingest import Status, apply, handle, transition_from
from edgefleet.monitor.query import ingest_counters
from edgefleet.monitor.store import commit, open_store, write_pending


def written(store):
    """The store's connection once the open transaction's pending writes are sent (not committed)."""
    write_pending(store)
    return store.connection


def device_row(store, device_id):
    cursor = written(store).execute("SELECT * FROM devices WHERE device_id = ?", (device_id,))
    row = cursor.fetchone()
    return None if row is None else dict(zip([column[0] for column in cursor.description], row, strict=True))


def gaps(store, device_id):
    return written(store).execute(
        "SELECT first_seq, last_seq, counted FROM seq_gaps WHERE device_id = ? ORDER BY first_seq",
        (device_id,)).fetchall()


def statuses(store, messages):
    return [apply(store, message).status for message in messages]


def test_gaps_are_counted_lost_and_a_late_arrival_fills_its_gap_once(store):
    assert statuses(store, [telemetry("cam-1", seq) for seq in (1, 2, 5)]) == [Status.APPLIED] * 3
    assert device_row(store, "cam-1")["lost"] == 2
    assert gaps(store, "cam-1") == [(3, 4, 1)]

    late = apply(store, telemetry("cam-1", 3))
    assert (late.status, late.lost) == (Status.LATE, -1)
    assert device_row(store, "cam-1")["lost"] == 1
    assert gaps(store, "cam-1") == [(4, 4, 1)]

    again = apply(store, telemetry("cam-1", 3))  # the same late message redelivered
    assert again.status is Status.DUPLICATE
    assert device_row(store, "cam-1")["lost"] == 1
    row = device_row(store, "cam-1")
    assert (row["messages"], row["duplicates"], row["max_seq"]) == (4, 1, 5)


def test_a_gap_in_the_middle_of_a_range_splits_it(store):
    statuses(store, [telemetry("cam-1", 1), telemetry("cam-1", 10)])
    assert apply(store, telemetry("cam-1", 5)).status is Status.LATE
    assert gaps(store, "cam-1") == [(2, 4, 1), (6, 9, 1)]
    assert device_row(store, "cam-1")["lost"] == 7


def test_seqs_below_the_first_one_seen_are_not_lost_but_are_taken_once(store):
    apply(store, telemetry("cam-2", 7))  # the monitor joined after the device started
    assert device_row(store, "cam-2")["lost"] == 0
    late = apply(store, telemetry("cam-2", 3))
    assert (late.status, late.lost) == (Status.LATE, 0)
    assert apply(store, telemetry("cam-2", 3)).status is Status.DUPLICATE
    assert apply(store, telemetry("cam-2", 7)).status is Status.DUPLICATE
    assert device_row(store, "cam-2")["lost"] == 0
    assert device_row(store, "cam-2")["messages"] == 2


def test_duplicates_change_no_counts(store):
    message = telemetry("cam-1", 1, count=10, errors=2)
    apply(store, message)
    commit(store)
    before = written(store).execute("SELECT SUM(inferences), SUM(errors) FROM version_counts").fetchone()
    assert apply(store, message).status is Status.DUPLICATE
    commit(store)
    assert written(store).execute("SELECT SUM(inferences), SUM(errors) FROM version_counts").fetchone() == before
    assert before == (10, 2)
    assert ingest_counters(store).duplicates == 1


def test_a_late_arrival_does_not_overwrite_the_latest_snapshot(store):
    apply(store, telemetry("cam-1", 1, cpu_temp_c=40.0))
    apply(store, telemetry("cam-1", 3, cpu_temp_c=60.0, version="1.1.0", spool_depth=9))
    apply(store, telemetry("cam-1", 2, cpu_temp_c=45.0, version="1.0.0", spool_depth=1))
    row = device_row(store, "cam-1")
    assert (row["cpu_temp_c"], row["model_version"], row["spool_depth"], row["max_seq"]) == (60.0, "1.1.0", 9, 3)
    assert row["last_seen"] == telemetry("cam-1", 3).time.timestamp()


def test_the_latency_window_keeps_the_latest_samples_by_seq(store):
    # window of 4 (fixture): seqs 3..6 stay, whatever the arrival order
    for seq, latency in [(1, 100.0), (2, 100.0), (6, 4.0), (5, 3.0), (3, 1.0), (4, 2.0)]:
        apply(store, telemetry("cam-1", seq, latency_ms=latency))
    commit(store)
    kept = written(store).execute("SELECT seq FROM latency_samples WHERE device_id = 'cam-1' ORDER BY seq")
    assert [seq for (seq,) in kept] == [3, 4, 5, 6]
    row = device_row(store, "cam-1")
    # nearest rank over latencies 1, 2, 3, 4: p50 = 2, p95 = 4
    assert (row["latency_p50_ms"], row["latency_p95_ms"], row["window_inferences"]) == (2.0, 4.0, 4)


def test_summary_messages_weigh_by_their_inference_count(store):
    apply(store, telemetry("cam-1", 1, latency_ms=10.0, p95_ms=20.0, count=90))
    apply(store, telemetry("cam-1", 2, latency_ms=50.0, p95_ms=80.0, count=10))
    commit(store)
    row = device_row(store, "cam-1")
    assert (row["latency_p50_ms"], row["latency_p95_ms"]) == (10.0, 80.0)


def test_version_history_and_events_are_recorded(store):
    apply(store, telemetry("cam-1", 1, version="1.0.0"))
    apply(store, telemetry("cam-1", 2, event="swap", event_version="1.1.0", detail="1.0.0 -> 1.1.0",
                           version="1.1.0"))
    apply(store, telemetry("cam-1", 3, version="1.1.0"))
    commit(store)
    history = written(store).execute(
        "SELECT model_version, first_seq, last_seq, messages FROM version_history ORDER BY first_seq").fetchall()
    assert history == [("1.0.0", 1, 1, 1), ("1.1.0", 2, 3, 2)]
    events = written(store).execute("SELECT seq, kind, model_version, from_version FROM events").fetchall()
    assert events == [(2, "swap", "1.1.0", "1.0.0")]


def test_transition_from_reads_the_agents_detail_format():
    assert transition_from("rollback", "1.1.0 -> 1.0.0") == "1.1.0"
    assert transition_from("swap", " 1.0.0->1.1.0 ") == "1.0.0"
    assert transition_from("swap_failed", "1.1.0 -> 1.0.0") is None
    assert transition_from("rollback", "restored previous") is None
    assert transition_from("rollback", "restored previous", "1.2.0") == "1.2.0"  # the contract's field wins


def test_a_newer_state_event_wins_over_a_late_older_one(store):
    apply(store, telemetry("cam-1", 5, event="swap", event_version="1.1.0", detail="1.0.0 -> 1.1.0"))
    apply(store, telemetry("cam-1", 4, event="swap_failed", event_version="1.1.0"))
    row = device_row(store, "cam-1")
    assert (row["state_event_kind"], row["state_event_seq"]) == ("swap", 5)


def test_malformed_messages_are_counted_per_message_id_and_change_nothing_else(store):
    outcome = handle(store, b"{not json", "m-1", {"device_id": "cam-9"}, 1000.0)
    assert outcome.status is Status.MALFORMED and not outcome.ack
    assert "not a telemetry message (JSONDecodeError" in outcome.reason
    binary = handle(store, b"\xff\xfe\x00", "m-0", {}, 1000.0)  # not even UTF-8: refused, not raised
    assert binary.status is Status.MALFORMED and "UnicodeDecodeError" in binary.reason
    handle(store, b"{not json", "m-1", {"device_id": "cam-9"}, 1001.0)  # redelivered
    missing = handle(store, json.dumps({"device_id": "cam-9", "seq": 1}).encode(), "m-2", {}, 1002.0)
    assert "time" in missing.reason and "health" in missing.reason
    wrong = handle(store, json.dumps({**json.loads(telemetry("cam-9", 1).to_json_bytes()), "seq": 0}).encode(),
                   "m-3", {}, 1003.0)
    assert wrong.status is Status.MALFORMED and "seq" in wrong.reason
    commit(store)
    rows = written(store).execute("SELECT message_id, device_id, deliveries FROM malformed ORDER BY 1").fetchall()
    assert rows == [("m-0", None, 1), ("m-1", "cam-9", 2), ("m-2", None, 1), ("m-3", None, 1)]
    assert written(store).execute("SELECT COUNT(*) FROM devices").fetchone() == (0,)
    counters = ingest_counters(store)
    assert (counters.malformed, counters.malformed_deliveries) == (4, 5)


def test_a_number_sqlite_cannot_hold_is_malformed_and_leaves_no_trace(store):
    apply(store, telemetry("cam-1", 1))
    huge = json.loads(telemetry("cam-1", 2).to_json_bytes())
    huge["seq"] = 2**70
    outcome = handle(store, json.dumps(huge).encode(), "m-big", {"device_id": "cam-1"}, 0.0)
    assert outcome.status is Status.MALFORMED and "seq" in outcome.reason  # the contract bounds it (issue 11)
    commit(store)
    row = device_row(store, "cam-1")
    assert (row["max_seq"], row["messages"]) == (1, 1)
    assert handle(store, telemetry("cam-1", 2).to_json_bytes(), "m-ok", {}, 0.0).status is Status.APPLIED


def test_dedupe_state_survives_reopening_the_store(tmp_path):
    path = tmp_path / "fleet.sqlite"
    with open_store(path, latency_window=4, count_bucket_s=60.0) as first:
        statuses(first, [telemetry("cam-1", seq) for seq in (1, 2, 4)])
        commit(first)
        apply(first, telemetry("cam-1", 5))  # never committed: as if the monitor died before its commit
    with open_store(path, latency_window=4, count_bucket_s=60.0, create=False) as second:
        assert statuses(second, [telemetry("cam-1", seq) for seq in (2, 3, 4, 5)]) == [
            Status.DUPLICATE, Status.LATE, Status.DUPLICATE, Status.APPLIED]
        commit(second)
        row = device_row(second, "cam-1")
        assert (row["messages"], row["lost"], row["duplicates"]) == (5, 0, 2)


def test_opening_a_missing_or_foreign_store_names_the_file(tmp_path):
    with pytest.raises(FleetStateError, match="no fleet state at .*nothing.sqlite") as missing:
        open_store(tmp_path / "nothing.sqlite", latency_window=4, count_bucket_s=60.0, create=False)
    assert "edgefleet monitor" in missing.value.fix
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(FleetStateError, match="garbage.sqlite is not a readable fleet state"):
        open_store(garbage, latency_window=4, count_bucket_s=60.0)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)").connection.commit()
    with pytest.raises(FleetStateError, match="schema none"):
        open_store(other, latency_window=4, count_bucket_s=60.0, create=False)
