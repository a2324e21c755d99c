"""Finding 3 end to end: the monitor reading the real Pub/Sub emulator, with device keys in a real registry
directory (`identity.registry`), applies a device's signed telemetry and dead-letters a forged message that
claims to be that device."""

from __future__ import annotations

import sys
from pathlib import Path

from edgefleet.device.telemetry.spool import Spool
from edgefleet.device.trust.device_identity import load_or_create_device_key, sign_telemetry
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.trust.device_key_records import register_device_key
from edgefleet.kernel.trust.signatures import generate_keypair, save_public_key
from edgefleet.monitor.store import open_store

sys.path.insert(0, str(Path(__file__).parents[1] / "monitor"))
from monitor_helpers import T0, RunningMonitor, telemetry, wait_until  # noqa: E402


def test_signed_telemetry_is_applied_and_a_forgery_dead_lettered(telemetry_topic, monitor_config, tmp_path):
    registry = LocalRegistryWriter(tmp_path / "registry", create=True)
    key = load_or_create_device_key(tmp_path / "cam-1")
    enrolment, enrolment_public = generate_keypair()  # the fleet enrolment key signs the device's record
    register_device_key(registry, "cam-1", key.public_key(), enrolment_key=enrolment)
    config = monitor_config.model_copy(update={"identity": monitor_config.identity.model_copy(update={
        "registry": str(registry.root),
        "enrolment_keys": (str(save_public_key(enrolment_public, tmp_path / "enrolment.pub")),)})})
    with Spool(tmp_path / "cam-1" / "spool.sqlite", 100,
               signer=lambda data, device, epoch: sign_telemetry(key, data, device, epoch)) as spool:
        spool.append_many([lambda seq: telemetry("cam-1", seq)] * 3)
        entries = spool.peek(10)
    running = RunningMonitor(config)
    try:
        for entry in entries:
            telemetry_topic.publish_raw(entry.data, **entry.attributes)
        forged = telemetry("cam-1", 10**9, version="6.6.6", at=T0)
        telemetry_topic.publish_raw(forged.to_json_bytes(), **forged.attributes())
        dead = []
        wait_until(lambda: dead.extend(telemetry_topic.dead_lettered()) or dead, "the forgery dead-lettered")
        wait_until(lambda: sum(o.status.value == "applied" for o in running.outcomes) == 3, "3 signed applied")
    finally:
        report = running.stop()
    assert [m.data for m in dead] == [forged.to_json_bytes()]
    assert report.unauthenticated >= 1
    with open_store(config.store_path, latency_window=8, count_bucket_s=60.0, create=False) as store:
        row = store.connection.execute("SELECT max_seq, model_version FROM devices WHERE device_id = 'cam-1'")
        assert tuple(row.fetchone()) == (3, "1.0.0")
