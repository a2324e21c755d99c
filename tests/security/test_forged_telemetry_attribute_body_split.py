"""Issue 20, item 1: the monitor picked the device key by the Pub/Sub `device_id` attribute but applied the
body's `device_id`. An unsigned message with no attribute (or the attribute of a device without a key) and a
body naming `cam-1` was applied as `cam-1`, even though `cam-1` has a key and signs everything.

The body is now the only identity: the key is chosen by the body's `device_id`, the signature covers that
id, and an attribute that names another device is refused (the attribute is a routing hint, never an
identity). Real keys in a real registry directory, the real spool's signing path, the monitor's real batch
path into a real SQLite fleet state."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.device.trust.device_identity import sign_telemetry
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.monitor.batch import process_batch
from edgefleet.monitor.ingest import Status
from edgefleet.monitor.store import FleetStore
from edgefleet.monitor.telemetry_verifier import FORGED_PREFIX, TelemetryVerifier
from tests.security import test_forged_telemetry as _telemetry
from tests.security.test_forged_telemetry import Device, build, device_row, fleet_keys
from tests.security.test_one_message_stops_the_monitor import FakeMessage

registry = _telemetry.registry  # its fixtures: a local key registry and a fleet state, shared, not copied
store = _telemetry.store


@pytest.fixture(params=[False, True], ids=["transition", "strict"])
def verifier(request: pytest.FixtureRequest, registry: LocalRegistryWriter) -> TelemetryVerifier:
    """Both modes: a device that has a key is protected even while unsigned agents are still allowed."""
    return TelemetryVerifier(lambda: fleet_keys(registry), require_signed=request.param, refresh_s=0.0)


def body(device_id: str, seq: int, version: str = "6.6.6") -> bytes:
    return build(device_id, version)(seq).to_json_bytes()


def assert_refused(outcomes: list, messages: list[FakeMessage]) -> None:
    assert [o.status for o in outcomes] == [Status.MALFORMED] * len(messages)
    assert all(o.reason.startswith(FORGED_PREFIX) for o in outcomes), [o.reason for o in outcomes]
    assert all(m.nacks == 1 and m.acks == 0 for m in messages)


def test_unsigned_message_without_attribute_naming_a_keyed_device_is_refused(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore, verifier: TelemetryVerifier
) -> None:
    cam = Device(tmp_path / "cam-1", "cam-1", registry)
    process_batch(store, cam.send(3), 1.0, verifier)
    attack = [FakeMessage(body("cam-1", 4), "no-attribute", {}),
              FakeMessage(body("cam-1", 5), "empty-attribute", {"device_id": "", "model_version": "6.6.6"})]
    assert_refused(process_batch(store, attack, 2.0, verifier), attack)
    assert device_row(store, "cam-1") == (3, 3, 0, "1.0.0")
    assert [o.status for o in process_batch(store, cam.send(1), 3.0, verifier)] == [Status.APPLIED]


def test_unsigned_message_under_a_keyless_attribute_cannot_speak_for_a_keyed_device(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore, verifier: TelemetryVerifier
) -> None:
    cam = Device(tmp_path / "cam-1", "cam-1", registry)
    process_batch(store, cam.send(2), 1.0, verifier)
    attack = [FakeMessage(body("cam-1", 3), "keyless-attribute", {"device_id": "old-agent-9"})]
    assert_refused(process_batch(store, attack, 2.0, verifier), attack)
    assert device_row(store, "cam-1") == (2, 2, 0, "1.0.0")
    assert store.connection.execute("SELECT COUNT(*) FROM devices").fetchone() == (1,)


def test_a_device_signing_under_its_own_attribute_cannot_apply_another_body(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore, verifier: TelemetryVerifier
) -> None:
    cam1 = Device(tmp_path / "cam-1", "cam-1", registry)
    cam2 = Device(tmp_path / "cam-2", "cam-2", registry)
    process_batch(store, cam1.send(2) + cam2.send(2), 1.0, verifier)
    data = body("cam-1", 3)  # cam-2's (stolen) key signs a body naming cam-1, attribute cam-2
    attack = [FakeMessage(data, "cam2-as-cam1", {"device_id": "cam-2", **sign_telemetry(cam2.key, data, "cam-2", 1)}),
              FakeMessage(data, "cam2-no-attr", sign_telemetry(cam2.key, data, "cam-2", 1))]
    assert_refused(process_batch(store, attack, 2.0, verifier), attack)
    assert device_row(store, "cam-1") == (2, 2, 0, "1.0.0")
    assert device_row(store, "cam-2") == (2, 2, 0, "1.0.0")


def test_the_body_alone_identifies_a_signed_message(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore, verifier: TelemetryVerifier
) -> None:
    """The path beside: a genuine signed message whose attribute was stripped (or never set) is still the
    device's: the key is chosen by the body, and the signature covers the body's id."""
    cam = Device(tmp_path / "cam-3", "cam-3", registry)
    messages = cam.send(2)
    stripped = [FakeMessage(m.data, m.message_id, {k: v for k, v in m.attributes.items() if k != "device_id"})
                for m in messages]
    assert [o.status for o in process_batch(store, stripped, 1.0, verifier)] == [Status.APPLIED] * 2
    assert device_row(store, "cam-3")[:2] == (2, 2)


def test_without_a_registry_the_attribute_still_cannot_name_another_device(store: FleetStore) -> None:
    """The path beside, another default: `identity.mode: transition` without a registry checks no signature
    (no verifier), and the ingest still refuses an attribute naming another device than the body."""
    attack = [FakeMessage(body("cam-1", 1), "split", {"device_id": "cam-2"})]
    outcome = process_batch(store, attack, 1.0, None)[0]
    assert outcome.status is Status.MALFORMED and outcome.reason.startswith(FORGED_PREFIX)
    assert store.connection.execute("SELECT COUNT(*) FROM devices").fetchone() == (0,)
    honest = [FakeMessage(body("cam-1", 1), "honest", {"device_id": "cam-1"})]
    assert process_batch(store, honest, 2.0, None)[0].status is Status.APPLIED
