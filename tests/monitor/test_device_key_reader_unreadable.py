"""Issue 22, item 5: turning telemetry authentication on dead-lettered all telemetry, because a monitor that could
not read the device keys only logged it and refused every signed message. Now it refuses to start, naming where
the keys are and the IAM grant that lets it read them; a later failed re-read is loud and keeps the keys it has.

The registry is a real bucket path on the GCS emulator that the monitor cannot read (the bucket is not there:
what a monitor without a grant on the prefix, or with a misnamed identity.registry, meets).
"""

from __future__ import annotations

import logging
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.kernel.errors import RegistryError
from edgefleet.monitor.device_key_reader import FleetKeys
from edgefleet.monitor.errors import MonitorError
from edgefleet.monitor.service import run_monitor
from edgefleet.monitor.telemetry_verifier import TelemetryVerifier

WAIT_S = 60.0


def test_a_monitor_that_cannot_read_the_device_keys_refuses_to_start(monitor_config, gcs_env, unique_name):
    bucket = f"no-grant-{unique_name}"
    config = monitor_config.model_copy(update={"identity": monitor_config.identity.model_copy(
        update={"registry": f"gs://{bucket}/edgefleet"})})
    stop, errors = threading.Event(), []

    def target() -> None:
        try:
            run_monitor(config, stop)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            errors.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(WAIT_S)
    stop.set()
    thread.join(WAIT_S)
    assert errors, "the monitor started without being able to read the device keys"
    error = errors[0]
    assert isinstance(error, MonitorError), repr(error)
    assert f"gs://{bucket}/edgefleet/fleet/devices/" in error.message and "dead-lettered" in error.message
    assert "roles/storage.objectViewer" in error.fix
    assert f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/edgefleet/fleet/")' in error.fix


def test_a_failed_re_read_is_loud_keeps_the_keys_it_has_and_clears_when_readable(caplog):
    key = Ed25519PrivateKey.generate().public_key()
    reads: list[object] = [FleetKeys({"cam-1": key}), FleetKeys({"cam-1": key}),
                           RegistryError("403 Forbidden", "grant it"), FleetKeys({"cam-1": key, "cam-2": key})]
    now = [0.0]

    def load() -> FleetKeys:
        outcome = reads.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    verifier = TelemetryVerifier(load, refresh_s=10.0, clock=lambda: now[0], keys_location="gs://b/fleet/devices/",
                                 keys_fix="grant the monitor objectViewer on gs://b/fleet/")
    verifier.load_now()  # the start
    assert verifier._key("cam-1") is key and verifier.key_load_error is None  # the first message: a full read
    now[0] = 11.0
    with caplog.at_level(logging.ERROR, logger="edgefleet.monitor.telemetry_verifier"):
        assert verifier._key("cam-1") is key  # the keys read before still verify
    assert "gs://b/fleet/devices/" in verifier.key_load_error and "403 Forbidden" in verifier.key_load_error
    assert [r.levelno for r in caplog.records] == [logging.ERROR] and "objectViewer" in caplog.records[0].message
    now[0] = 22.0
    assert verifier._key("cam-2") is key and verifier.key_load_error is None
    assert reads == []


def test_keys_that_cannot_be_read_at_start_raise_with_where_and_the_fix():
    def load() -> FleetKeys:
        raise RegistryError("gs://b/fleet/devices/: 403 Forbidden", "check the credentials")

    verifier = TelemetryVerifier(load, keys_location="gs://b/fleet/devices/", keys_fix="grant it on gs://b/fleet/")
    with pytest.raises(MonitorError) as caught:
        verifier.load_now()
    assert "gs://b/fleet/devices/" in caught.value.message and "403 Forbidden" in caught.value.message
    assert caught.value.fix == "grant it on gs://b/fleet/"


def test_devices_enrolled_right_after_the_start_are_all_known_at_the_first_message():
    """The fleet-wide look-up of unknown devices is rate-limited; a read at the start must not leave the devices
    enrolled just after it to that (the demo's second and third devices were refused for seconds)."""
    key = Ed25519PrivateKey.generate().public_key()
    fleet: dict = {}
    verifier = TelemetryVerifier(lambda: FleetKeys(dict(fleet)), clock=lambda: 0.0,
                                 load_device=lambda device_id, revoked: FleetKeys(
                                     {device_id: fleet[device_id]} if device_id in fleet else {}))
    verifier.load_now()  # the start: no device enrolled yet
    fleet.update({"cam-1": key, "cam-2": key})  # deploy-agent enrols them a moment later; messages follow
    assert verifier._key("cam-1") is key and verifier._key("cam-2") is key
