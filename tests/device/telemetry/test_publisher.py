"""Publishing the spool to the real Pub/Sub emulator, and to the local sink."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from edgefleet.device.telemetry.config import TelemetryConfig
from edgefleet.device.telemetry.publisher import SpoolPublisher, backoff_delay, jittered
from edgefleet.device.telemetry.service import TelemetryService
from edgefleet.device.telemetry.sinks import LocalSink, PubSubSink, TopicMissingError
from edgefleet.device.telemetry.spool import Spool
from edgefleet.kernel.contracts.telemetry import Health, ModelRef, TelemetryMessage
from edgefleet.kernel.errors import TelemetryError

PROJECT = "edgefleet-test"
WAIT_S = 30.0
NEVER_BLOCKS_MAX_MEAN_S = 0.5  # per call, averaged over a group: generous under load, broken by a 1 s wait
MODEL = ModelRef(name="mobilenet", version="2.0.1", variant="cpu", backend="cpu")
# Short deadlines so the tests see failures and recoveries quickly.
FAST = {
    "publish_timeout_s": 2.0,
    "reconnect_max_s": 0.2,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
    "idle_poll_s": 0.1,
    "publish_batch_latency_s": 0.005,
}


def _sink(topic_id: str, emulator_host: str | None = None) -> PubSubSink:
    config = TelemetryConfig(pubsub_project=PROJECT, pubsub_topic=topic_id, **FAST)
    return PubSubSink(config, emulator_host=emulator_host)


def _publisher(spool: Spool, sink: object) -> SpoolPublisher:
    return SpoolPublisher(spool, sink, TelemetryConfig(publish_batch_size=50, **FAST))


def test_backoff_policy() -> None:
    delays = [backoff_delay(failures, 0.5, 30.0) for failures in range(0, 10)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff_delay(10_000, 0.5, 30.0) == 30.0  # a week-long outage does not overflow
    assert jittered(10.0, 0.2, rng=lambda: 1.0) == pytest.approx(8.0)
    assert jittered(10.0, 0.2, rng=lambda: 0.0) == 10.0


def test_publish_round_trip_with_attributes(
    tmp_path: Path, pubsub_env, unique_name: str, make_topic, puller_factory, wait, build_message) -> None:
    topic, subscription = make_topic(f"tel-{unique_name}", f"tel-sub-{unique_name}")
    with Spool(tmp_path / "spool.sqlite", max_messages=1000) as spool:
        spool.append_many([build_message("dev-a", MODEL)] * 120)
        spool.append(build_message("dev-a", None))  # no model running: model_version attribute is empty
        publisher = _publisher(spool, _sink(f"tel-{unique_name}")).start()
        puller = puller_factory(subscription)
        wait(lambda: spool.depth == 0, what="the spool to drain")
        wait(lambda: len(puller.received()) == 121, what="all 121 messages to be pulled")
        stats = publisher.stop(drain_timeout_s=5.0)
    assert stats.published == 121 and stats.failed_batches == 0 and stats.last_error is None
    assert stats.last_success_time is not None
    assert puller.invalid == []
    by_seq = {message.seq: (message, attributes) for message, attributes in puller.messages}
    assert sorted(by_seq) == list(range(1, 122))
    assert by_seq[1][1] == {"device_id": "dev-a", "model_version": "2.0.1", "epoch": str(spool.epoch)}
    assert by_seq[121][1] == {"device_id": "dev-a", "model_version": "", "epoch": str(spool.epoch)}
    assert by_seq[7][0].health.uptime_s == 7.0  # the content, not just the envelope, made it


def test_topic_missing_is_a_clear_error_and_nothing_is_lost(
    tmp_path: Path, pubsub_env, unique_name: str, make_topic, puller_factory, tcp_proxy_factory, wait,
    build_message) -> None:
    topic_id = f"tel-late-{unique_name}"
    proxy = tcp_proxy_factory(pubsub_env.port)
    with Spool(tmp_path / "spool.sqlite", max_messages=1000) as spool:
        spool.append_many([build_message("dev-b", MODEL)] * 30)
        publisher = _publisher(spool, _sink(topic_id, emulator_host=proxy.host)).start()
        wait(lambda: publisher.stats().failed_batches >= 2, what="publishing to the missing topic to fail")
        error = publisher.last_error
        assert isinstance(error, TopicMissingError) and isinstance(error, TelemetryError)
        assert f"projects/{PROJECT}/topics/{topic_id}" in error.message
        assert "edgefleet local up" in error.fix and "pulumi up" in error.fix
        spool.append_many([build_message("dev-b", MODEL)] * 10)  # the agent keeps producing meanwhile
        assert spool.depth == 40  # nothing lost
        assert publisher.stats().published == 0
        # Create the topic and its subscription while the agent cannot publish: a message sent to a topic
        # without subscription is discarded by Pub/Sub, which would be the test's loss, not the agent's.
        proxy.cut()
        _, subscription = make_topic(topic_id, f"{topic_id}-sub")
        proxy.restore()
        puller = puller_factory(subscription)
        wait(lambda: spool.depth == 0, what="the spool to drain once the topic exists")
        wait(lambda: puller.received() == set(range(1, 41)), what="every seq 1..40 to arrive")
        stats = publisher.stop(drain_timeout_s=5.0)
    assert stats.published >= 40 and stats.consecutive_failures == 0
    assert "does not exist" in stats.last_error  # kept for the status file after recovery


def test_local_sink_round_trip(tmp_path: Path, wait, build_message) -> None:
    sink_path = tmp_path / "out" / "telemetry.jsonl"
    with Spool(tmp_path / "spool.sqlite", max_messages=1000) as spool:
        spool.append_many([build_message("dev-c", MODEL)] * 25)
        publisher = _publisher(spool, LocalSink(sink_path)).start()
        wait(lambda: spool.depth == 0, what="the spool to drain into the file")
        spool.append_many([build_message("dev-c", MODEL)] * 5)
        stats = publisher.stop(drain_timeout_s=5.0)
        assert spool.depth == 0
    assert stats.published == 30 and stats.destination == f"file {sink_path}"
    messages = [TelemetryMessage.from_json_bytes(line) for line in sink_path.read_bytes().splitlines()]
    assert [message.seq for message in messages] == list(range(1, 31))
    assert all(message.device_id == "dev-c" for message in messages)


def test_local_sink_rotates(tmp_path: Path) -> None:
    from edgefleet.device.telemetry.spool import SpoolEntry

    sink = LocalSink(tmp_path / "telemetry.jsonl", max_bytes=200)
    entries = [SpoolEntry(seq, json.dumps({"seq": seq, "pad": "x" * 80}).encode(), {}) for seq in range(1, 7)]
    for entry in entries:
        assert sink.publish_batch([entry]).acked == [entry.seq]
    rotated = tmp_path / "telemetry.jsonl.1"
    current = [json.loads(line)["seq"] for line in (tmp_path / "telemetry.jsonl").read_text().splitlines()]
    previous = [json.loads(line)["seq"] for line in rotated.read_text().splitlines()]
    # Each line is 102 bytes: the file rotates once it holds two lines; only one old file is kept.
    assert (previous, current) == ([3, 4], [5, 6])


def test_local_sink_unwritable_keeps_messages_in_the_spool(tmp_path: Path, wait, build_message) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the sink directory should be")
    sink_path = blocker / "telemetry.jsonl"
    with Spool(tmp_path / "spool.sqlite", max_messages=1000) as spool:
        spool.append_many([build_message("dev-d", MODEL)] * 3)
        publisher = _publisher(spool, LocalSink(sink_path)).start()
        wait(lambda: publisher.last_error is not None, what="the sink to fail")
        stats = publisher.stop(drain_timeout_s=0.5)
        assert spool.depth == 3
    assert str(sink_path) in stats.last_error and "writable" in stats.last_error


# --- the service facade ----------------------------------------------------------------------------------
def test_service_every_mode_to_pubsub(
    tmp_path: Path, pubsub_env, unique_name: str, make_topic, puller_factory, wait
) -> None:
    topic_id = f"tel-svc-{unique_name}"
    _, subscription = make_topic(topic_id, f"{topic_id}-sub")
    puller = puller_factory(subscription)
    config = TelemetryConfig(mode="every", pubsub_project=PROJECT, pubsub_topic=topic_id, **FAST)
    service = TelemetryService(
        config,
        tmp_path / "spool.sqlite",
        "dev-e",
        health_provider=lambda: Health(uptime_s=42.0, tpu_present=True),
    ).start()
    for i in range(200):
        assert service.record_inference(MODEL, 3.0 + i % 5, [])
    service.record_event("swap", "2.0.0 -> 2.0.1", model=MODEL)
    stats = service.stop(drain_timeout_s=10.0)
    assert stats.depth == 0 and stats.queue_dropped == 0 and stats.spool_errors == 0
    assert stats.last_seq == 203  # started + 200 inferences + swap + stopped
    wait(lambda: puller.received() == set(range(1, 204)), what="every seq 1..203")
    by_seq = {message.seq: message for message, _ in puller.messages}
    assert by_seq[1].kind == "event" and by_seq[1].event.kind == "started"
    assert by_seq[203].event.kind == "stopped"
    assert by_seq[202].event.kind == "swap"
    inferences = [by_seq[seq] for seq in range(2, 202)]
    assert all(message.kind == "inference" and message.inference.count == 1 for message in inferences)
    assert all(message.health.tpu_present and message.health.uptime_s == 42.0 for message in inferences)
    assert not service.record_inference(MODEL, 1.0)  # after stop: refused, counted, never blocking
    assert service.stats().queue_dropped == 1


def test_service_summary_mode_to_local_sink(tmp_path: Path, wait) -> None:
    config = TelemetryConfig(mode="summary", summary_interval_s=0.3, **FAST)
    service = TelemetryService(config, tmp_path / "spool.sqlite", "dev-f").start()
    for _ in range(30):
        service.record_inference(MODEL, 5.0, [])
    sink_path = tmp_path / "telemetry.jsonl"  # the default: beside the spool
    wait(lambda: sink_path.exists() and b'"summary"' in sink_path.read_bytes(), what="a summary in the sink")
    stats = service.stop(drain_timeout_s=5.0)
    messages = [TelemetryMessage.from_json_bytes(line) for line in sink_path.read_bytes().splitlines()]
    assert [message.seq for message in messages] == list(range(1, stats.last_seq + 1))
    summaries = [message for message in messages if message.kind == "summary"]
    assert sum(message.inference.count for message in summaries) == 30
    assert all(message.health.uptime_s > 0 for message in messages)  # the real /proc/uptime
    assert stats.destination == f"file {sink_path}"


def test_stop_keeps_unsent_messages_for_the_next_start(
    tmp_path: Path, pubsub_env, unique_name: str, make_topic, puller_factory, tcp_proxy_factory, wait
) -> None:
    topic_id = f"tel-restart-{unique_name}"
    _, subscription = make_topic(topic_id, f"{topic_id}-sub")
    proxy = tcp_proxy_factory(pubsub_env.port)
    proxy.cut()  # Pub/Sub unreachable for the first run
    config = TelemetryConfig(mode="every", pubsub_project=PROJECT, pubsub_topic=topic_id, **FAST)
    spool_path = tmp_path / "spool.sqlite"
    first = TelemetryService(config, spool_path, "dev-g", sink=PubSubSink(config, proxy.host))
    first.start()
    for _ in range(20):
        first.record_inference(MODEL, 2.0)
    wait(lambda: first.stats().failing, what="publishing to fail")
    stats = first.stop(drain_timeout_s=1.0)
    assert stats.depth == 22 and stats.published == 0
    assert "unreachable" in stats.last_error and "edgefleet local up" in stats.last_error  # names the fix
    proxy.restore()
    puller = puller_factory(subscription)
    second = TelemetryService(config, spool_path, "dev-g", sink=PubSubSink(config, proxy.host))
    second.start()
    second.record_inference(MODEL, 2.0)
    stats = second.stop(drain_timeout_s=10.0)
    assert stats.depth == 0
    # seq continued across the restart (started=23, inference=24, stopped=25) and nothing was lost.
    wait(lambda: puller.received() == set(range(1, 26)), what="every seq 1..25")


def test_service_with_unusable_spool_path_fails_to_start_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "root"
    blocker.write_text("not a directory")
    service = TelemetryService(TelemetryConfig(), blocker / "spool.sqlite", "dev-h")
    with pytest.raises(TelemetryError) as caught:
        service.start()
    assert str(blocker / "spool.sqlite") in caught.value.message
    assert service.stop(drain_timeout_s=1.0).depth == 0  # stop after a failed start is harmless


class BlockingHealth:
    """A health provider that holds the writer thread until released: a stalled disk, seen from record_*."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> Health:
        self.entered.set()
        self.release.wait(WAIT_S)
        return Health(uptime_s=1.0)


def _timed(call, *args):
    started = time.perf_counter()
    result = call(*args)
    return result, time.perf_counter() - started


def test_record_never_blocks_when_the_writer_is_stuck(tmp_path: Path) -> None:
    health = BlockingHealth()
    config = TelemetryConfig(mode="every", queue_max=5, **FAST)
    service = TelemetryService(config, tmp_path / "spool.sqlite", "dev-i", health_provider=health).start()
    assert health.entered.wait(WAIT_S)  # the writer holds the `started` event and is stuck
    timed = [_timed(service.record_inference, MODEL, 1.0) for _ in range(12)]
    timed.append(_timed(service.record_event, "error", "while stuck"))
    # The inference records beyond queue_max are dropped; the event is not (events have room of their own).
    assert [result for result, _ in timed] == [True] * 5 + [False] * 7 + [True]
    assert service.stats().queue_dropped == 7
    # Timed: a call that waited (on the queue, the lock, the writer) takes about as long as its wait. Each
    # group of calls (queued, dropped) must average well under a second a call: a loaded machine stays far
    # below that, a 1 s wait in every call (or in every queued / every dropped one) does not.
    queued, dropped = [took for _, took in timed[:5] + timed[12:]], [took for _, took in timed[5:12]]
    assert sum(queued) < NEVER_BLOCKS_MAX_MEAN_S * len(queued), queued
    assert sum(dropped) < NEVER_BLOCKS_MAX_MEAN_S * len(dropped), dropped
    health.release.set()
    stats = service.stop(drain_timeout_s=10.0)
    assert stats.last_seq == 8 and stats.depth == 0  # started + the 5 accepted + the event + stopped


def test_spool_failure_is_counted_and_telemetry_goes_on(tmp_path: Path, wait) -> None:
    """A batch that cannot fit the spool's disk bound (a full disk) is lost, counted and reported clearly;
    the service keeps running and later batches are spooled."""
    health = BlockingHealth()
    config = TelemetryConfig(mode="every", spool_max_mb=0.05, append_batch_size=500, **FAST)
    spool_path = tmp_path / "spool.sqlite"
    service = TelemetryService(config, spool_path, "dev-j", health_provider=health).start()
    assert health.entered.wait(WAIT_S)  # the writer holds `started`: the next records queue up
    for _ in range(499):  # they make one append batch: far more than 50 kB
        assert service.record_inference(MODEL, 1.0, [])
    health.release.set()
    # The same TelemetryError the spool raises, kept for the status file.
    wait(lambda: service.stats().spool_errors > 0, what="the oversized batch to fail")
    stats = service.stats()
    assert stats.spool_errors == 1
    assert str(spool_path) in stats.last_error and "spool_max_mb" in stats.last_error
    assert service.record_inference(MODEL, 1.0, [])
    stats = service.stop(drain_timeout_s=10.0)
    assert stats.spool_errors == 1
    messages = [
        TelemetryMessage.from_json_bytes(line)
        for line in (tmp_path / "telemetry.jsonl").read_bytes().splitlines()
    ]
    # `started`, then (the 499 lost, without using seqs) the later inference and `stopped`.
    assert [message.seq for message in messages] == [1, 2, 3]
    assert [message.kind for message in messages] == ["event", "inference", "event"]


def test_missing_cloud_credentials_leave_the_spool_filling_and_the_sink_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wait
) -> None:
    # Issue 22: no credentials used to fail start() (and with it the agent); now the start goes on, the error is
    # in the stats with its fix, and the messages wait in the spool for a sink that opens.
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    config = TelemetryConfig(pubsub_project=PROJECT, pubsub_topic="edgefleet-telemetry", **FAST)
    service = TelemetryService(config, tmp_path / "spool.sqlite", "dev-k").start()
    assert service.record_inference(MODEL, 1.0, [])
    wait(lambda: service.stats().last_error is not None and service.stats().depth >= 2, what="the refusal")
    stats = service.stats()
    assert stats.sink_started is False and stats.failing and stats.published == 0
    assert f"projects/{PROJECT}/topics/edgefleet-telemetry" in stats.last_error
    assert "credentials_file" in stats.last_error  # the fix: the device's one credentials path
    service.stop(drain_timeout_s=1.0)
    with Spool(tmp_path / "spool.sqlite", max_messages=10) as spool:  # nothing lost: it waits for the next start
        assert spool.depth == 3  # started, the inference, stopped


def test_a_sink_that_cannot_open_is_retried_with_backoff_and_then_drains_the_spool(
    tmp_path: Path, wait, build_message
) -> None:
    attempts: list[float] = []
    sink_path = tmp_path / "telemetry.jsonl"

    def open_sink() -> LocalSink:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise TelemetryError("no credentials yet", "install them")
        return LocalSink(sink_path)

    with Spool(tmp_path / "spool.sqlite", max_messages=100) as spool:
        spool.append_many([build_message()] * 5)
        publisher = SpoolPublisher(spool, open_sink, TelemetryConfig(**FAST), destination="pubsub somewhere")
        assert publisher.stats().sink_started is False and publisher.stats().destination == "pubsub somewhere"
        publisher.start()
        wait(lambda: spool.depth == 0, what="the spool to drain once the sink opened")
        stats = publisher.stop(drain_timeout_s=5.0)
    assert len(attempts) == 3 and stats.failed_batches == 2 and stats.published == 5
    assert stats.sink_started and stats.destination == f"file {sink_path}" and stats.consecutive_failures == 0
    # The retries backed off (first pause backoff_initial_s, shortened by at most the jitter).
    assert attempts[1] - attempts[0] >= FAST["backoff_initial_s"] * (1 - TelemetryConfig().backoff_jitter)
    assert [json.loads(line)["seq"] for line in sink_path.read_text().splitlines()] == [1, 2, 3, 4, 5]
