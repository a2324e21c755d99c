"""fleet_counters shards (issue 23): replicas in containers all run as PID 1, so a shard taken from the PID put
every replica's counter upserts on one row, serialised by its row lock. Each store now writes its own shard,
drawn at random per process and distinct within one process."""

from __future__ import annotations

import os

from monitor_helpers import T0, telemetry

from edgefleet.monitor.aggregates import COUNTER_SHARDS, Deltas
from edgefleet.monitor.ingest import apply
from edgefleet.monitor.query import ingest_counters
from edgefleet.monitor.store import commit, open_store


def test_two_stores_of_processes_with_equal_pids_write_different_shards(store_url, monkeypatch) -> None:
    monkeypatch.setattr(os, "getpid", lambda: 1)  # every containerised replica
    open_store(store_url, latency_window=4, count_bucket_s=60.0).close()
    with (open_store(store_url, latency_window=4, count_bucket_s=60.0, create=False) as first,
          open_store(store_url, latency_window=4, count_bucket_s=60.0, create=False) as second):
        for number, store in enumerate((first, second)):
            apply(store, telemetry(f"cam-{number}", 1, at=T0))
            commit(store)
        rows = first.connection.execute("SELECT shard, devices FROM fleet_counters ORDER BY shard").fetchall()
        assert len(rows) == 2 and sorted(row[1] for row in rows) == [1, 1]  # one row per store, not one hot row
        assert ingest_counters(first).devices == 2  # the totals are the sum of the shards


def test_the_stores_of_one_process_take_distinct_shards_in_range() -> None:
    shards = [Deltas().shard for _ in range(COUNTER_SHARDS)]
    assert sorted(shards) == list(range(COUNTER_SHARDS))
    deltas = Deltas()
    assert deltas.copy().shard == deltas.shard  # a copy adds to the same row
