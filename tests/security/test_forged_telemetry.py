"""Finding 3, forged telemetry: all devices shared one identity and the monitor trusted the `device_id` and
`seq` in the message: one forged message with seq 2^62 froze a device's state and set its version to
anything, and forged healthy telemetry could pass a rollout's health gate. Each device now signs with its
own key (made on the device); the monitor checks the signature against the fleet's device keys.

Also finding 5: a corrupt spool is quarantined and the new one has a new epoch; the monitor dedupes on
(device, epoch, seq), so the restarted seq is applied, not dropped as duplicates.

Messages are written by the real spool (the agent's signing path) and applied by the monitor's real batch
path into a real SQLite fleet state, with keys read from a real registry directory."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgefleet.device.telemetry.spool import Spool
from edgefleet.device.trust.device_identity import load_or_create_device_key, sign_telemetry
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.flows.trust.device_key_records import register_device_key
from edgefleet.kernel.contracts.telemetry import Health, InferenceSummary, ModelRef, TelemetryMessage
from edgefleet.kernel.errors import ConflictError
from edgefleet.kernel.trust.signatures import generate_keypair, key_id
from edgefleet.monitor.batch import process_batch
from edgefleet.monitor.device_key_reader import KeyRecordPolicy, load_fleet_keys
from edgefleet.monitor.ingest import Status
from edgefleet.monitor.store import FleetStore, open_store
from edgefleet.monitor.telemetry_verifier import FORGED_PREFIX, TelemetryVerifier
from tests.security.test_one_message_stops_the_monitor import FakeMessage

T0 = datetime(2026, 11, 30, tzinfo=UTC)
ENROLMENT, _ = generate_keypair()  # the fleet enrolment key: it signs the device key records
POLICY = KeyRecordPolicy({key_id(ENROLMENT.public_key()): ENROLMENT.public_key()})


def fleet_keys(registry: LocalRegistryWriter):
    return load_fleet_keys(registry, POLICY)


def build(device_id: str, version: str = "1.0.0", errors: int = 0):
    def make(seq: int) -> TelemetryMessage:
        return TelemetryMessage(
            device_id=device_id, seq=seq, time=T0 + timedelta(seconds=seq % 10**6), kind="inference",
            model=ModelRef(name="mobilenet", version=version, variant="cpu", backend="cpu"),
            inference=InferenceSummary(count=10, errors=errors, latency_ms_p50=5.0, latency_ms_p95=6.0,
                                       latency_ms_max=7.0, fps=30.0, window_s=10.0),
            health=Health(uptime_s=float(seq % 10**6)),
        )

    return make


class Device:
    """A simulated device: its own agent root, key and spool (the agent's code)."""

    def __init__(self, root: Path, device_id: str, registry: LocalRegistryWriter) -> None:
        self.device_id = device_id
        self.root = root
        self.key = load_or_create_device_key(root)
        register_device_key(registry, device_id, self.key.public_key(), enrolment_key=ENROLMENT, by="test")
        self.spool = self.open_spool()

    def open_spool(self) -> Spool:
        return Spool(self.root / "spool.sqlite", 1000, signer=lambda data, d, e: sign_telemetry(self.key, data, d, e))

    def send(self, count: int, **kw: object) -> list[FakeMessage]:
        self.spool.append_many([build(self.device_id, **kw)] * count)
        entries = self.spool.peek(1000)
        self.spool.ack(entry.seq for entry in entries)
        return [FakeMessage(e.data, f"{self.device_id}-{self.spool.epoch}-{e.seq}", e.attributes) for e in entries]


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistryWriter:
    return LocalRegistryWriter(tmp_path / "registry", create=True)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FleetStore]:
    with open_store(tmp_path / "fleet.sqlite", latency_window=4, count_bucket_s=60.0) as opened:
        yield opened


@pytest.fixture
def verifier(registry: LocalRegistryWriter) -> TelemetryVerifier:
    return TelemetryVerifier(lambda: fleet_keys(registry), refresh_s=0.0)


def device_row(store: FleetStore, device_id: str) -> tuple:
    return tuple(store.connection.execute(
        "SELECT max_seq, messages, lost, model_version FROM devices WHERE device_id = ?", (device_id,)).fetchone())


def forged(device_id: str, seq: int, version: str, attributes: dict[str, str]) -> FakeMessage:
    data = build(device_id, version)(seq).to_json_bytes()
    return FakeMessage(data, f"forged-{seq}-{len(attributes)}",
                       {"device_id": device_id, "model_version": version, **attributes})


def test_forged_message_with_a_huge_seq_is_refused_and_counted(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore, verifier: TelemetryVerifier
) -> None:
    cam = Device(tmp_path / "cam-1", "cam-1", registry)
    process_batch(store, cam.send(3), 1.0, verifier)
    attack = [
        forged("cam-1", 2**52, "6.6.6", {}),  # unsigned, claiming a device with a key
        forged("cam-1", 2**52, "6.6.6", {"epoch": "1", "sig": "A" * 86 + "=="}),  # a made-up signature
    ]
    outcomes = process_batch(store, attack, 2.0, verifier)
    assert [o.status for o in outcomes] == [Status.MALFORMED, Status.MALFORMED]
    assert all(o.reason.startswith(FORGED_PREFIX) for o in outcomes)
    assert all(m.nacks == 1 and m.acks == 0 for m in attack)  # dead-lettered after the max attempts
    assert device_row(store, "cam-1") == (3, 3, 0, "1.0.0")  # not frozen, version unchanged
    (counted,) = store.connection.execute("SELECT COUNT(*) FROM malformed WHERE error LIKE 'unauth%'").fetchone()
    assert counted == 2
    process_batch(store, cam.send(1), 3.0, verifier)
    assert device_row(store, "cam-1")[:2] == (4, 4)


def test_a_stolen_device_can_speak_only_for_itself(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore, verifier: TelemetryVerifier
) -> None:
    cam1 = Device(tmp_path / "cam-1", "cam-1", registry)
    cam2 = Device(tmp_path / "cam-2", "cam-2", registry)
    process_batch(store, cam2.send(2), 1.0, verifier)
    # with cam-1's key: a message naming cam-2 (in the attribute, or only in the body)
    body = build("cam-2", "6.6.6")(99).to_json_bytes()
    as_cam2 = FakeMessage(body, "f1", {"device_id": "cam-2", **sign_telemetry(cam1.key, body, "cam-2", 1)})
    inside = FakeMessage(body, "f2", {"device_id": "cam-1", **sign_telemetry(cam1.key, body, "cam-1", 1)})
    outcomes = process_batch(store, [as_cam2, inside], 2.0, verifier)
    assert [o.status for o in outcomes] == [Status.MALFORMED, Status.MALFORMED]
    assert device_row(store, "cam-2") == (2, 2, 0, "1.0.0")


def test_unknown_devices_are_refused_and_a_signed_seq_jump_counts_as_lost(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore, verifier: TelemetryVerifier
) -> None:
    stranger_key, _ = generate_keypair()
    body = build("intruder")(1).to_json_bytes()
    stranger = FakeMessage(body, "s1", {"device_id": "intruder", **sign_telemetry(stranger_key, body, "intruder", 1)})
    assert process_batch(store, [stranger], 1.0, verifier)[0].status is Status.MALFORMED
    assert store.connection.execute("SELECT 1 FROM devices WHERE device_id = 'intruder'").fetchone() is None

    cam = Device(tmp_path / "cam-3", "cam-3", registry)
    process_batch(store, cam.send(2), 1.0, verifier)
    cam.spool.append_many([build("cam-3")] * 10)  # 10 messages of which only the last arrives
    last = cam.spool.peek(1000)[-1]
    jump = [FakeMessage(last.data, "j", last.attributes)]
    assert process_batch(store, jump, 2.0, verifier)[0].status is Status.APPLIED
    assert device_row(store, "cam-3")[:3] == (12, 3, 9)


def test_unsigned_messages_pass_only_while_signatures_are_not_required(
    registry: LocalRegistryWriter, store: FleetStore
) -> None:
    legacy = forged("old-agent", 1, "1.0.0", {})
    lenient = TelemetryVerifier(lambda: fleet_keys(registry), require_signed=False, refresh_s=0.0)
    assert process_batch(store, [legacy], 1.0, lenient)[0].status is Status.APPLIED
    strict = TelemetryVerifier(lambda: fleet_keys(registry), require_signed=True, refresh_s=0.0)
    assert process_batch(store, [forged("old-agent", 2, "1.0.0", {})], 2.0, strict)[0].status is Status.MALFORMED


def test_a_device_key_is_not_replaced_silently(registry: LocalRegistryWriter) -> None:
    first, _ = generate_keypair()
    second, _ = generate_keypair()
    register_device_key(registry, "cam-9", first.public_key(), enrolment_key=ENROLMENT)
    register_device_key(registry, "cam-9", first.public_key(), enrolment_key=ENROLMENT)  # idempotent
    with pytest.raises(ConflictError, match="compromised"):
        register_device_key(registry, "cam-9", second.public_key(), enrolment_key=ENROLMENT)
    register_device_key(registry, "cam-9", second.public_key(), enrolment_key=ENROLMENT, replace=True)


def test_corrupt_spool_restarts_seq_in_a_new_epoch_and_nothing_is_dropped_as_duplicate(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore, verifier: TelemetryVerifier
) -> None:
    cam = Device(tmp_path / "cam-4", "cam-4", registry)
    process_batch(store, cam.send(5), 1.0, verifier)
    old_epoch = cam.spool.epoch
    cam.spool.close()
    (cam.root / "spool.sqlite").write_bytes(b"\0garbage" * 512)  # the spool is corrupt
    cam.spool = cam.open_spool()  # quarantined, a new spool: seq starts at 1 again, in a new epoch
    assert cam.spool.quarantined is not None and cam.spool.epoch != old_epoch
    fresh = cam.send(3)
    assert [int(m.message_id.rsplit("-", 1)[1]) for m in fresh] == [1, 2, 3]
    outcomes = process_batch(store, fresh, 2.0, verifier)
    assert [o.status for o in outcomes] == [Status.APPLIED] * 3
    assert device_row(store, "cam-4")[:3] == (8, 8, 0)
    again = process_batch(store, fresh, 3.0, verifier)  # redelivered: now they are duplicates
    assert [o.status for o in again] == [Status.DUPLICATE] * 3


def test_a_device_removed_from_the_fleet_is_refused_after_the_next_refresh(
    tmp_path: Path, registry: LocalRegistryWriter, store: FleetStore
) -> None:
    now = [0.0]
    verifier = TelemetryVerifier(lambda: fleet_keys(registry), refresh_s=60.0, clock=lambda: now[0])
    cam = Device(tmp_path / "cam-5", "cam-5", registry)
    assert process_batch(store, cam.send(1), 1.0, verifier)[0].status is Status.APPLIED
    (registry.root / "fleet" / "devices" / "cam-5.json").unlink()  # the device was stolen: revoke it
    now[0] = 61.0
    assert process_batch(store, cam.send(1), 2.0, verifier)[0].status is Status.MALFORMED
