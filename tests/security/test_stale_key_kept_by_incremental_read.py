"""The monitor keeps what it judged of each device key record and re-reads only the records whose listing
generation changed (issue 23: a full read of 10,000 records every minute stopped ingest). Attacks on what is
kept: a key revoked while its record stays unchanged, a record replaced by a bucket writer, a record removed,
and a record whose read failed once: none may leave a key trusted that a full read would refuse."""

from __future__ import annotations

from edgefleet.flows.trust.device_key_records import revoke_device
from edgefleet.kernel.errors import RegistryError
from edgefleet.kernel.trust.signatures import generate_keypair, key_id
from edgefleet.monitor.device_key_reader import FleetKeyReader, load_fleet_keys
from edgefleet.monitor.telemetry_verifier import key_record_policy
from tests.security.device_keys import Fleet, GenerationListingReader, unsigned_record


def _reader(fleet: Fleet) -> tuple[FleetKeyReader, GenerationListingReader]:
    registry = GenerationListingReader(fleet.registry.root)  # type: ignore[attr-defined] - the local registry's
    return FleetKeyReader(registry, key_record_policy(fleet.config())), registry


def test_an_unchanged_fleet_is_not_read_again(fleet: Fleet) -> None:
    for number in range(3):
        fleet.enrol(f"cam-{number}")
    read, registry = _reader(fleet)
    first = read()
    assert sorted(first.keys) == ["cam-0", "cam-1", "cam-2"] and len(registry.reads) == 3
    registry.reads.clear()
    again = read()
    assert registry.reads == [] and again.keys == first.keys  # listing only: no record read


def test_a_key_revoked_while_its_record_is_unchanged_is_dropped(fleet: Fleet) -> None:
    cam1 = fleet.enrol("cam-1")
    fleet.enrol("cam-2")
    read, registry = _reader(fleet)
    assert "cam-1" in read().keys
    revoke_device(fleet.registry, "cam-1", enrolment_key=fleet.enrolment, reason="stolen")
    registry.reads.clear()
    after = read()
    assert sorted(after.keys) == ["cam-2"] and key_id(cam1.public_key()) in after.revoked
    assert registry.reads == [f"fleet/revoked/{key_id(cam1.public_key())}.json"]  # the record was not re-read
    assert any("revoked" in record.reason for record in after.refused)


def test_a_record_replaced_by_a_bucket_writer_is_judged_again(fleet: Fleet) -> None:
    fleet.enrol("cam-1")
    read, _ = _reader(fleet)
    assert "cam-1" in read().keys
    attacker, _ = generate_keypair()
    fleet.plant("cam-1.json", unsigned_record("cam-1", attacker))
    after = read()
    assert "cam-1" not in after.keys and "unsigned" in after.refused[0].reason
    assert after == load_fleet_keys(fleet.registry, key_record_policy(fleet.config()))  # as a full read says


def test_a_removed_record_drops_its_device(fleet: Fleet) -> None:
    fleet.enrol("cam-1")
    fleet.enrol("cam-2")
    read, _ = _reader(fleet)
    assert sorted(read().keys) == ["cam-1", "cam-2"]
    (fleet.devices_dir / "cam-1.json").unlink()
    assert sorted(read().keys) == ["cam-2"]


class _FailingOnce(GenerationListingReader):
    def __init__(self, *args, failing: str) -> None:
        super().__init__(*args)
        self.failing: str | None = failing

    def _read_bounded(self, key: str, max_bytes: int) -> bytes | None:
        if key == self.failing:
            self.failing = None
            raise RegistryError(f"reading {key}: 503 Service Unavailable", "try again")
        return super()._read_bounded(key, max_bytes)


def test_a_record_whose_read_failed_is_read_again_not_kept_refused(fleet: Fleet) -> None:
    fleet.enrol("cam-1")
    registry = _FailingOnce(fleet.registry.root, failing="fleet/devices/cam-1.json")  # type: ignore[attr-defined]
    read = FleetKeyReader(registry, key_record_policy(fleet.config()))
    first = read()
    assert "cam-1" not in first.keys and "503" in first.refused[0].reason  # refused while unreadable, as before
    assert "cam-1" in read().keys  # a passing failure is not a verdict on the record


def test_on_gcs_the_listing_generations_say_what_changed(tmp_path, gcs_client, gcs_bucket, gcs_registry) -> None:
    """The production path: the GCS listing carries each object's generation; a re-enrolled device (its record
    rewritten) is read again with its new key, the unchanged device is not."""
    fleet = Fleet(tmp_path, gcs_registry)
    fleet.enrol("cam-1")
    fleet.enrol("cam-2")
    read = FleetKeyReader(gcs_registry, key_record_policy(fleet.config()))
    assert sorted(read().keys) == ["cam-1", "cam-2"] and read.records_read == 2
    assert sorted(read().keys) == ["cam-1", "cam-2"] and read.records_read == 2  # nothing read again
    new_key = fleet.enrol("cam-1", replace=True)
    assert key_id(read().keys["cam-1"]) == key_id(new_key.public_key())
    assert read.records_read == 4  # its record and the revocation of its old key (replace revokes it)
