"""Two monitors on one subscription and one PostgreSQL fleet state (issue 23, item 2), through the real Pub/Sub
emulator: each telemetry message applied once whichever monitor got it, every delivery acked after commit."""

from __future__ import annotations

from monitor_helpers import RunningMonitor, telemetry, wait_until

from edgefleet.monitor.config import StoreConfig
from edgefleet.monitor.query import ingest_counters
from edgefleet.monitor.store import open_fleet_store

DEVICES = 4
SEQS = 6
COPIES = 2  # every message published twice: two Pub/Sub messages (two ids) of one (device, epoch, seq)


def test_two_monitors_on_one_subscription_apply_each_message_once(telemetry_topic, monitor_config, postgres):
    config = monitor_config.model_copy(update={"store": StoreConfig(url=postgres.new_database())})
    monitors = [RunningMonitor(config), RunningMonitor(config)]
    total = DEVICES * SEQS
    try:
        for seq in range(1, SEQS + 1):
            for device in range(DEVICES):
                message = telemetry(f"cam-{device}", seq, count=10)
                for _ in range(COPIES):
                    telemetry_topic.publish(message)
        wait_until(lambda: sum(len(m.outcomes) for m in monitors) >= total * COPIES,
                   lambda: f"{total * COPIES} deliveries committed, got {[len(m.outcomes) for m in monitors]}")
    finally:
        reports = [monitor.stop() for monitor in monitors]
    assert sum(r.applied + r.late for r in reports) == total  # once each, across both monitors
    assert sum(r.duplicates for r in reports) == total * (COPIES - 1)
    assert sum(r.malformed for r in reports) == 0
    with open_fleet_store(config, create=False) as store:
        counters = ingest_counters(store)
        assert (counters.devices, counters.messages, counters.duplicates, counters.lost) == (
            DEVICES, total, total * (COPIES - 1), 0)
        rows = store.connection.execute("SELECT max_seq, messages, lost FROM devices").fetchall()
        assert sorted(tuple(row) for row in rows) == [(SEQS, SEQS, 0)] * DEVICES
    assert not telemetry_topic.dead_lettered()  # nothing nacked to death: every delivery was acked


def test_a_dropped_database_connection_nacks_the_batch_and_the_next_one_reconnects(postgres) -> None:
    import time

    import psycopg
    import pytest
    from race_writer import Delivery

    from edgefleet.monitor.batch import process_batch
    from edgefleet.monitor.ingest import Status
    from edgefleet.monitor.store import open_store

    def delivery(seq: int) -> Delivery:
        message = telemetry("cam-1", seq)
        return Delivery(message.to_json_bytes(), f"m-{seq}", message.attributes())

    with open_store(postgres.new_database(), latency_window=4, count_bucket_s=60.0) as store:
        process_batch(store, [delivery(1)], time.time())
        with psycopg.connect(postgres.url(), autocommit=True) as admin:  # the server (or a failover) drops it
            admin.execute("SELECT pg_terminate_backend(%s)", (store.connection.raw.info.backend_pid,))
        lost = [delivery(2)]
        with pytest.raises(store.engine.transient_errors):
            process_batch(store, lost, time.time())
        assert lost[0].settled == ["nack"]  # not acked: Pub/Sub redelivers it
        again = [delivery(2)]
        assert [o.status for o in process_batch(store, again, time.time())] == [Status.APPLIED]
        assert again[0].settled == ["ack"]
