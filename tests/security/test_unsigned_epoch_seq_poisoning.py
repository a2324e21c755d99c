"""Issue 20, item 1: an unsigned message carrying a huge `epoch` attribute (or seq) for a device that signs
made the device's later signed messages "stale" or "duplicates": one unsigned message silenced a device.

Epochs and seqs now advance a device's state only from messages the device signed (when it has a key): an
unsigned or unverifiable message naming a keyed device is refused before it touches any state, and the first
signed message of a device that was only heard unsigned so far (the upgrade from unsigned agents) starts its
seq line afresh, so what unsigned messages claimed while it had no key cannot hold it back. Once a device
signed, it is never again accepted unsigned, not even in transition mode after its key record is gone."""

from __future__ import annotations

from pathlib import Path

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

HUGE = str(2**53 - 1)


def transition(registry: LocalRegistryWriter) -> TelemetryVerifier:
    return TelemetryVerifier(lambda: fleet_keys(registry), require_signed=False, refresh_s=0.0)


def signing_device(tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore, verifier: TelemetryVerifier,
                   name: str) -> Device:
    """Device `name` with its key registered, two of its signed messages taken (at 1.0 s)."""
    cam = Device(tmp_path / name, name, registry)
    process_batch(store, cam.send(2), 1.0, verifier)
    return cam


def poison(name: str, seq: int, **attributes: str) -> FakeMessage:
    return FakeMessage(build(name)(seq).to_json_bytes(), f"poison-{name}-{seq}-{len(attributes)}", attributes)


def test_unsigned_huge_epoch_or_seq_cannot_silence_a_signing_device(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore
) -> None:
    verifier = transition(registry)
    cam = signing_device(tmp_path, registry, store, verifier, "cam-1")
    attack = [poison("cam-1", 2**52, epoch=HUGE), poison("cam-1", 2**52), poison("cam-1", 3, epoch=HUGE)]
    outcomes = process_batch(store, attack, 2.0, verifier)
    assert [o.status for o in outcomes] == [Status.MALFORMED] * 3
    assert all(o.reason.startswith(FORGED_PREFIX) for o in outcomes)
    assert store.connection.execute(
        "SELECT MAX(epoch) FROM device_epochs WHERE device_id = 'cam-1'").fetchone()[0] < int(HUGE)
    later = process_batch(store, cam.send(3), 3.0, verifier)
    assert [o.status for o in later] == [Status.APPLIED] * 3
    assert device_row(store, "cam-1")[:3] == (5, 5, 0)


def test_what_unsigned_messages_claimed_before_the_key_was_registered_does_not_hold_the_device_back(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore
) -> None:
    """Transition: cam-7 has no key yet, so unsigned messages naming it pass; one of them poisons its epoch
    and seq. Then its key is registered: its signed messages are applied, not dropped as stale."""
    verifier = transition(registry)
    assert process_batch(store, [poison("cam-7", 2**52, epoch=HUGE)], 1.0, verifier)[0].status is Status.APPLIED
    cam = Device(tmp_path / "cam-7", "cam-7", registry)  # the key registered; its agent signs from now on
    outcomes = process_batch(store, cam.send(3), 2.0, verifier)
    assert [o.status for o in outcomes] == [Status.APPLIED] * 3
    assert device_row(store, "cam-7")[0] == 3  # the signed seq line, not the poisoned one
    (newest,) = store.connection.execute("SELECT MAX(seq) FROM latency_samples WHERE device_id = 'cam-7'").fetchone()
    assert newest == 3  # the poisoned sample no longer holds the latency window
    again = process_batch(store, cam.send(1), 3.0, verifier)
    assert [o.status for o in again] == [Status.APPLIED]


def test_a_device_that_signed_is_not_accepted_unsigned_again_when_its_key_record_is_gone(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore
) -> None:
    verifier = transition(registry)
    signing_device(tmp_path, registry, store, verifier, "cam-8")
    (registry.root / "fleet" / "devices" / "cam-8.json").unlink()  # removed (stolen) or the record lost
    attack = [poison("cam-8", 2**52, epoch=HUGE, device_id="cam-8")]
    outcome = process_batch(store, attack, 2.0, verifier)[0]
    assert outcome.status is Status.MALFORMED and outcome.reason.startswith(FORGED_PREFIX)
    assert device_row(store, "cam-8")[:2] == (2, 2)


def test_a_signed_message_of_an_older_unknown_epoch_is_a_duplicate_of_its_device(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore
) -> None:
    """The epoch rule itself, for signed messages: an unknown epoch below the device's latest is stale."""
    verifier = TelemetryVerifier(lambda: fleet_keys(registry), refresh_s=0.0)
    cam = signing_device(tmp_path, registry, store, verifier, "cam-9")
    assert cam.spool.epoch > 0
    data = build("cam-9")(1).to_json_bytes()
    stale = FakeMessage(data, "stale", sign_telemetry(cam.key, data, "cam-9", 0))
    outcome = process_batch(store, [stale], 2.0, verifier)[0]
    assert (outcome.status, outcome.device_id) == (Status.DUPLICATE, "cam-9")
    assert stale.acks == 1 and device_row(store, "cam-9")[:2] == (2, 2)
