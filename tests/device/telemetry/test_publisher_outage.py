"""THE telemetry guarantee: the Pub/Sub emulator dies under load, comes back empty, and no seq is missing."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edgefleet.device.telemetry.config import TelemetryConfig
from edgefleet.device.telemetry.publisher import SpoolPublisher
from edgefleet.device.telemetry.sinks import PubSubSink, TopicMissingError
from edgefleet.device.telemetry.spool import Spool
from edgefleet.kernel.contracts.telemetry import Health, ModelRef, TelemetryMessage

PROJECT = "edgefleet-test"
MODEL = ModelRef(name="mobilenet", version="3.0.0", variant="edgetpu", backend="edgetpu:usb:0")
APPEND_INTERVAL_S = 0.005  # ~200 messages/s
OUTAGE_S = 4.0


class Producer:
    """Appends one message every APPEND_INTERVAL_S from its own thread, like the agent's telemetry stage."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.appended = 0
        self.longest_append_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Producer:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(APPEND_INTERVAL_S):
            started = time.monotonic()
            self.spool.append(self._build)
            self.longest_append_s = max(self.longest_append_s, time.monotonic() - started)
            self.appended += 1

    @staticmethod
    def _build(seq: int) -> TelemetryMessage:
        return TelemetryMessage(
            device_id="dev-outage",
            seq=seq,
            time=datetime.now(timezone.utc),
            kind="inference",
            model=MODEL,
            health=Health(uptime_s=1.0),
        )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.slow
def test_emulator_outage_under_load_every_seq_arrives(
    tmp_path: Path,
    pubsub_emulator_private,
    monkeypatch: pytest.MonkeyPatch,
    unique_name: str,
    make_topic,
    puller_factory,
    tcp_proxy_factory,
    wait,
) -> None:
    """Stop the emulator for several seconds while ~200 messages/s are produced, restart it (it forgets its
    topics), recreate topic and subscription, keep producing, then pull everything: every seq 1..N arrives.

    The agent reaches the emulator through a TCP proxy (see conftest) that the test cuts just before stopping
    the emulator and restores once the new emulator has the topic and subscription again. From the agent's
    side that is one long outage (connections reset, then refused, then a missing topic). The cut gives the
    test two moments where it knows the agent is not publishing: before the stop, to let its subscriber pull
    everything Pub/Sub acknowledged (acknowledged but unpulled messages die with the emulator, through no
    fault of the agent), and between creating the topic and its subscription (Pub/Sub discards messages
    published to a topic without subscriptions).
    """
    emulator = pubsub_emulator_private
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)  # the test's own admin and subscriber clients
    topic_id, subscription_id = f"outage-{unique_name}", f"outage-sub-{unique_name}"
    _, subscription = make_topic(topic_id, subscription_id)
    proxy = tcp_proxy_factory(emulator.port)
    config = TelemetryConfig(
        pubsub_project=PROJECT,
        pubsub_topic=topic_id,
        publish_batch_size=100,
        publish_timeout_s=2.0,
        reconnect_max_s=0.2,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        idle_poll_s=0.1,
    )
    spool = Spool(tmp_path / "spool.sqlite", max_messages=100_000)
    publisher = SpoolPublisher(
        spool, PubSubSink(config, emulator_host=proxy.host), config
    )
    puller = puller_factory(subscription)
    publisher.start()
    producer = Producer(spool).start()
    try:
        wait(lambda: len(puller.received()) >= 200, what="traffic to flow before the outage")

        # 1. Cut the agent off, and let the subscriber pull everything Pub/Sub acknowledged so far.
        failures = publisher.stats().failed_batches
        proxy.cut()
        wait(lambda: publisher.stats().failed_batches > failures, what="the publisher to see the outage")
        # The publisher acks the spool before it records a failure, so every message Pub/Sub acknowledged
        # has left the spool by now; none can be acknowledged while the proxy is cut.
        last_seq = spool.last_seq
        in_spool = {entry.seq for entry in spool.peek(1_000_000)}
        acknowledged = set(range(1, last_seq + 1)) - in_spool
        wait(lambda: acknowledged <= puller.received(), what="the subscriber to pull every acknowledged seq")
        published_before = publisher.stats().published

        # 2. The emulator dies for several seconds, under load.
        emulator.stop()
        time.sleep(OUTAGE_S)
        depth_during_outage = spool.depth
        emulator.start()  # same port, no topics

        # 3. The agent meets the new, empty emulator: its topic is missing.
        failures = publisher.stats().failed_batches
        proxy.restore()
        wait(
            lambda: (
                isinstance(publisher.last_error, TopicMissingError)
                and publisher.stats().failed_batches > failures
            ),
            what="the publisher to see the missing topic",
        )
        proxy.cut()
        make_topic(topic_id, subscription_id)
        puller.reconnect()
        proxy.restore()

        # 4. Keep producing a while after the recovery, then stop and drain.
        wait(
            lambda: publisher.stats().published > published_before + depth_during_outage,
            what="the backlog to be published",
        )
    finally:
        producer.stop()
    last_seq = spool.last_seq
    wait(lambda: spool.depth == 0, what="the spool to drain")
    wait(lambda: set(range(1, last_seq + 1)) <= puller.received(), what=f"every seq 1..{last_seq}")
    stats = publisher.stop(drain_timeout_s=5.0)
    spool.close()

    assert puller.invalid == []
    received = puller.received()
    missing = set(range(1, last_seq + 1)) - received
    assert not missing, f"{len(missing)} seq(s) lost, e.g. {sorted(missing)[:10]}"
    assert len(puller.messages) >= last_seq  # duplicates allowed, gaps not
    assert spool.dropped == 0
    assert depth_during_outage > 0 and stats.failed_batches >= 2
    assert all(
        attributes == {"device_id": "dev-outage", "model_version": "3.0.0", "epoch": str(spool.epoch)}
        for _, attributes in puller.messages
    )
    # Appending never waited on the network: not once as long as a single publish deadline.
    assert producer.longest_append_s < config.publish_timeout_s
