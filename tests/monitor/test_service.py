"""The monitor against the real Pub/Sub emulator: ingest, malformed messages, duplicates, order, restarts."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import pytest
from monitor_helpers import MAX_DELIVERY_ATTEMPTS, T0, RunningMonitor, telemetry, wait_until

from edgefleet.kernel.trust.signatures import generate_keypair, save_public_key
from edgefleet.monitor.config import MonitorConfig
from edgefleet.monitor.errors import FleetStateError, MonitorError
from edgefleet.monitor.health import version_health
from edgefleet.monitor.ingest import Status
from edgefleet.monitor.query import device_history, fleet_status, ingest_counters
from edgefleet.monitor.service import run_monitor
from edgefleet.monitor.store import open_fleet_store


def key_registry(tmp_path) -> dict[str, object]:
    """The monitor's `identity` section: an (empty) registry of device keys, and the fleet enrolment public key
    that would verify their records."""
    (tmp_path / "registry").mkdir(exist_ok=True)
    enrolment = tmp_path / "enrolment.pub"
    if not enrolment.exists():
        save_public_key(generate_keypair()[1], enrolment)
    return {"registry": str(tmp_path / "registry"), "enrolment_keys": [str(enrolment)]}


def read_store(config: MonitorConfig):
    return open_fleet_store(config, create=False)


def counters(config: MonitorConfig):
    """The store's counters, or None while the monitor has not created it yet (or is creating it)."""
    try:
        with read_store(config) as store:
            return ingest_counters(store)
    except FleetStateError:
        return None


def test_messages_from_several_devices_make_the_fleet_state(telemetry_topic, monitor_config):
    running = RunningMonitor(monitor_config)
    try:
        for device in ("cam-1", "cam-2", "cam-3"):
            for seq in range(1, 5):
                telemetry_topic.publish(telemetry(device, seq, latency_ms=float(seq), count=10, errors=seq % 2,
                                                  cpu_temp_c=40.0 + seq))
        telemetry_topic.publish(telemetry("cam-3", 5, event="swap", event_version="1.1.0", detail="1.0.0 -> 1.1.0",
                                          version="1.1.0"))
        wait_until(lambda: len(running.outcomes) == 13, "13 messages committed")
    finally:
        report = running.stop()
    assert report.received == 13 and report.applied + report.late == 13
    assert (report.duplicates, report.malformed) == (0, 0)
    with read_store(monitor_config) as store:
        status = fleet_status(store, 1e9, T0 + timedelta(seconds=10))
        by_id = {device.device_id: device for device in status.devices}
        assert sorted(by_id) == ["cam-1", "cam-2", "cam-3"]
        assert all(by_id[d].messages == 4 and by_id[d].lost == 0 for d in ("cam-1", "cam-2"))
        assert by_id["cam-1"].cpu_temp_c == 44.0  # the snapshot of seq 4, in whatever order they came
        assert (by_id["cam-1"].latency_p50_ms, by_id["cam-1"].latency_p95_ms) == (2.0, 4.0)
        assert by_id["cam-3"].model_version == "1.1.0"
        health = version_health(store, ["cam-1", "cam-2", "cam-3"], "mobilenet", "1.0.0", T0)
        assert (health.inferences, health.errors) == (120, 6)
        assert [e.kind for e in device_history(store, "cam-3", 1e9, T0).events] == ["swap"]


def test_malformed_messages_are_nacked_counted_and_dead_lettered(telemetry_topic, monitor_config):
    running = RunningMonitor(monitor_config)
    payloads = {
        b"\x00\x01 not json": "not a telemetry message",
        json.dumps({"device_id": "cam-bad", "seq": 1}).encode(): "time",
        json.dumps({**json.loads(telemetry("cam-bad", 1).to_json_bytes()), "kind": "selfie"}).encode(): "kind",
    }
    try:
        # signed by cam-bad's own key: refused for what they are, not for who sent them
        ids = {telemetry_topic.publish_raw(data, device_id="cam-bad", **telemetry_topic.keys.sign(data, "cam-bad")):
               data for data in payloads}
        telemetry_topic.publish(telemetry("cam-good", 1))
        dead = []
        wait_until(lambda: dead.extend(telemetry_topic.dead_lettered()) or len(dead) >= len(payloads),
                   "the malformed messages in the dead-letter subscription")
    finally:
        report = running.stop()
    # the dead-letter topic republishes them (new ids), with the body and attributes of the original
    assert sorted(message.data for message in dead) == sorted(payloads)
    assert all(message.attributes["device_id"] == "cam-bad" for message in dead)
    assert report.malformed == len(payloads) * MAX_DELIVERY_ATTEMPTS  # nacked at every delivery
    with read_store(monitor_config) as store:
        rows = store.connection.execute("SELECT message_id, deliveries, error, device_id FROM malformed").fetchall()
        assert {message_id: deliveries for message_id, deliveries, _, _ in rows} == {
            message_id: MAX_DELIVERY_ATTEMPTS for message_id in ids}
        for message_id, _, error, device_id in rows:
            assert payloads[ids[message_id]] in error and device_id == "cam-bad"
        assert [d.device_id for d in fleet_status(store, 1e9, T0).devices] == ["cam-good"]


def test_duplicates_and_redeliveries_are_not_counted_twice(telemetry_topic, monitor_config):
    running = RunningMonitor(monitor_config)
    try:
        first = telemetry("cam-1", 1, count=10)
        second = telemetry("cam-1", 2, count=10)
        for message in (first, second, first, second, first):  # a device re-sending after lost acks
            telemetry_topic.publish(message)
        wait_until(lambda: len(running.outcomes) == 5, "5 deliveries committed")
    finally:
        report = running.stop()
    assert sorted(o.status.value for o in running.outcomes) == ["applied", "applied", "duplicate", "duplicate",
                                                                "duplicate"] or report.late
    assert report.duplicates == 3
    with read_store(monitor_config) as store:
        assert version_health(store, ["cam-1"], "mobilenet", "1.0.0", T0).inferences == 20
        row = ingest_counters(store)
        assert (row.messages, row.duplicates, row.lost) == (2, 3, 0)


def test_out_of_order_arrivals_fill_gaps_and_real_gaps_count_as_lost(telemetry_topic, monitor_config):
    running = RunningMonitor(monitor_config)
    try:
        telemetry_topic.publish(telemetry("cam-1", 1, cpu_temp_c=41.0))
        wait_until(lambda: len(running.outcomes) == 1, "seq 1 committed")
        for seq in (2, 5, 8, 3):  # 4, 6 and 7 missing for now; 3 after 5 and 8
            telemetry_topic.publish(telemetry("cam-1", seq, cpu_temp_c=40.0 + seq))
        wait_until(lambda: len(running.outcomes) == 5, "5 messages committed")
        assert counters(monitor_config).lost == 3
        telemetry_topic.publish(telemetry("cam-1", 4, cpu_temp_c=44.0))  # very late
        wait_until(lambda: len(running.outcomes) == 6, "seq 4 committed")
    finally:
        report = running.stop()
    assert running.outcomes[-1].status is Status.LATE
    assert report.lost == 2
    with read_store(monitor_config) as store:
        device = fleet_status(store, 1e9, T0).devices[0]
        assert (device.messages, device.lost, device.cpu_temp_c) == (6, 2, 48.0)
        gaps = store.connection.execute("SELECT first_seq, last_seq FROM seq_gaps WHERE counted = 1").fetchall()
        assert gaps == [(6, 7)]


def test_a_missing_subscription_is_a_clear_error(pubsub_env, tmp_path, unique_name):
    config = MonitorConfig(project=pubsub_env.project, subscription=f"nope-{unique_name}",
                           store_path=tmp_path / "fleet.sqlite", identity=key_registry(tmp_path))
    with pytest.raises(MonitorError, match=f"subscription projects/.*/subscriptions/nope-{unique_name} does "
                                           "not exist") as error:
        run_monitor(config, threading.Event())
    assert "pulumi up" in error.value.fix


def test_a_stop_request_during_the_back_off_ends_the_run_cleanly(tmp_path, monkeypatch):
    """Pub/Sub unreachable (nothing listens on the port): transient, retried until the stop request."""
    from edgefleet.local.emulators import free_port

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    config = MonitorConfig(project="p", subscription="s", store_path=tmp_path / "fleet.sqlite",
                           ingest={"request_timeout_s": 0.5, "resubscribe_initial_s": 0.1},
                           identity=key_registry(tmp_path))
    stop = threading.Event()
    result = []
    thread = threading.Thread(target=lambda: result.append(run_monitor(config, stop)))
    thread.start()
    wait_until(lambda: result or thread.is_alive(), "the monitor thread")
    threading.Timer(2.0, stop.set).start()
    thread.join(30)
    assert not thread.is_alive()
    assert result and result[0].resubscribes >= 1 and result[0].received == 0


def test_the_device_telemetry_service_publishes_what_the_monitor_counts(telemetry_topic, monitor_config, tmp_path):
    """The agent's own telemetry path (spool -> Pub/Sub publisher) into the monitor."""
    from edgefleet.device.telemetry.config import TelemetryConfig
    from edgefleet.device.telemetry.service import TelemetryService
    from edgefleet.kernel.contracts.telemetry import Health, ModelRef, ResultItem

    topic_id = telemetry_topic.topic.rsplit("/", 1)[-1]
    model = ModelRef(name="mobilenet", version="1.0.0", variant="cpu", backend="cpu")
    config = TelemetryConfig(mode="every", pubsub_project=telemetry_topic.project, pubsub_topic=topic_id)
    services = [TelemetryService(config, tmp_path / f"{device}.sqlite", device,
                                 health_provider=lambda: Health(uptime_s=5.0, cpu_temp_c=47.0),
                                 signer=telemetry_topic.keys.sign).start()
                for device in ("agent-a", "agent-b")]
    for number, service in enumerate(services):
        for frame in range(10 + number):
            service.record_inference(model, 3.0 + frame, [ResultItem(id=0, label="cat", score=0.9)])
        service.record_event("swap", "0.9.0 -> 1.0.0", model_version="1.0.0", model=model)
        service.record_inference(model, 0.0, error="invoke failed")
    stats = [service.stop(drain_timeout_s=30) for service in services]
    assert all(stat.depth == 0 for stat in stats)  # everything left the spools for Pub/Sub
    sent = sum(stat.last_seq for stat in stats)
    running = RunningMonitor(monitor_config)
    try:
        wait_until(lambda: len(running.outcomes) >= sent, f"{sent} agent messages committed")
    finally:
        running.stop()
    with read_store(monitor_config) as store:
        status = {d.device_id: d for d in fleet_status(store, 1e9, datetime.now(UTC)).devices}
        assert sorted(status) == ["agent-a", "agent-b"]
        assert all(device.lost == 0 and device.cpu_temp_c == 47.0 for device in status.values())
        health = version_health(store, ["agent-a", "agent-b"], "mobilenet", "1.0.0",
                                datetime.now(UTC) - timedelta(hours=1))
        assert health.inferences == 23 and health.errors == 2  # count includes the failed ones
        kinds = [e.kind for e in device_history(store, "agent-a", 1e9, datetime.now(UTC)).events]
        assert "swap" in kinds and "started" in kinds and "stopped" in kinds


@pytest.mark.slow
def test_a_restarted_monitor_keeps_its_state_and_counts_nothing_twice(telemetry_topic, monitor_config, tmp_path):
    """First monitor: the `edgefleet monitor` command in its own process, stopped with SIGTERM. Second: the
    same store; the devices re-send some messages (lost acks) and send new ones.

    The second monitor reads a subscription made after the first one stopped. The emulator (0.8.20) never
    notices that the first monitor's stream closed (it fails in its RST_STREAM handler) and keeps giving that
    dead stream a share of the first subscription's messages. It was meant to give them back when their ack
    deadline ends, but in one CI run on a loaded machine a message held by the dead stream did not come back
    in 120 s. Real Pub/Sub closes the stream with the connection. What this test is about (state and
    duplicates across a restart) lives in the store, not in the subscription.
    """
    import os
    import signal
    import subprocess
    import sys

    import yaml

    config_file = tmp_path / "monitor.yaml"
    config_file.write_text(yaml.safe_dump({"monitor": {
        "project": telemetry_topic.project, "subscription": telemetry_topic.subscription_id,
        "store_path": str(monitor_config.store_path), "identity": monitor_config.identity.model_dump(mode="json"),
        "ingest": {"batch_max_wait_s": 0.05, "max_lease_extension_s": 10, "flow_control_max_messages": 1}}}))
    for device in ("cam-1", "cam-2"):
        for seq in (1, 2, 3):
            telemetry_topic.publish(telemetry(device, seq, count=10))
    process = subprocess.Popen([sys.executable, "-m", "edgefleet.cli", "monitor", "--config", str(config_file)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: (c := counters(monitor_config)) is not None and c.messages == 6,
                   lambda: f"6 messages stored (have {counters(monitor_config)}, monitor alive: "
                           f"{process.poll() is None})")
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "6 applied" in out

    subscriber = telemetry_topic.subscriber
    restart_id = f"{telemetry_topic.subscription_id}-restart"
    restart_sub = subscriber.create_subscription(
        name=subscriber.subscription_path(telemetry_topic.project, restart_id), topic=telemetry_topic.topic).name
    for device in ("cam-1", "cam-2"):
        telemetry_topic.publish(telemetry(device, 3, count=10))  # re-sent: its ack was lost
        telemetry_topic.publish(telemetry(device, 4, count=10))
    running = RunningMonitor(monitor_config.model_copy(update={"subscription": restart_id}))
    try:
        wait_until(lambda: counters(monitor_config).messages == 8 and counters(monitor_config).duplicates == 2,
                   lambda: f"2 new messages and 2 duplicates (have {counters(monitor_config)}, outcomes "
                           f"{[(o.device_id, o.seq, o.status.value) for o in running.outcomes]})", timeout_s=120)
    finally:
        running.stop()
        subscriber.delete_subscription(subscription=restart_sub)
    with read_store(monitor_config) as store:
        assert version_health(store, ["cam-1", "cam-2"], "mobilenet", "1.0.0", T0).inferences == 80
        assert ingest_counters(store).lost == 0
        assert sqlite3.connect(monitor_config.store_path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_missing_credentials_are_a_clear_error(tmp_path, monkeypatch, pubsub_env):
    """Cloud Monitoring enabled without credentials (the emulator covers Pub/Sub, nothing covers Monitoring)."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    config = MonitorConfig(project="p", subscription="s", store_path=tmp_path / "fleet.sqlite",
                           cloud_metrics={"enabled": True}, identity=key_registry(tmp_path))
    with pytest.raises(MonitorError, match="no Google Cloud credentials for project p") as error:
        run_monitor(config, threading.Event())
    assert "application-default login" in error.value.fix
    assert not config.store_path.exists()  # nothing half-started
